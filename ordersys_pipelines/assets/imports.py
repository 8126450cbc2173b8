"""The `orders_csv` asset: one dynamic partition per order file, imported in chunks.

A thin shell around `domain.imports.import_order_file`: it finds the partition's file, runs the
import with the configured options, files the CSV away (`processed/`, or `failed/` with a
`.reason`), and reports counts, throughput and the first rejects as materialization metadata.
"""

# No `from __future__ import annotations`: Dagster reads the config and resource annotations.
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from ordersys_pipelines.assets.stages import IMPORT_POOL, tag_run_with_stage
from ordersys_pipelines.domain.imports.csv_format import CsvFormatError
from ordersys_pipelines.domain.imports.files import FAILED, PROCESSED, find_partition_file, move_aside
from ordersys_pipelines.domain.tables import markdown_table
from ordersys_pipelines.resources.database import DatabaseResource
from ordersys_pipelines.resources.imports import ImportsResource
from ordersys_pipelines.step_retries import retry_transient, transient_cause

if TYPE_CHECKING:  # the importer (pyarrow, numpy) is imported by the step: other runs load none of it
    from ordersys_pipelines.domain.imports.importer import ChunkProgress, ImportResult

order_files = dg.DynamicPartitionsDefinition(name="order_files")

STAGE_TAGS = {"ordersys/stage": "import"}
NO_REJECTS_LOST = "no_rejects_lost"
SAMPLE_ROWS = 10

# In-process callers (the CLI's progress bar, tests injecting a failure) listen to chunk commits.
_chunk_listeners: list[Callable[["ChunkProgress"], None]] = []


@contextmanager
def chunk_listener(callback: Callable[["ChunkProgress"], None]) -> Iterator[None]:
    _chunk_listeners.append(callback)
    try:
        yield
    finally:
        _chunk_listeners.remove(callback)


class OrdersCsvConfig(dg.Config):
    path: str = Field(
        default="", description="The file; empty: looked up from the partition key in the inbox and its processed/ and failed/"
    )
    date_format: str = Field(default="", description="strptime format of order_date (ISO 8601 when empty), e.g. %m/%d/%Y %H:%M")
    columns: str = Field(default="", description="Map other exports: 'Source column=canonical_name,...'")
    encoding: str = Field(default="utf-8", description="Text encoding of the file")


def _locate(config: OrdersCsvConfig, key: str, imports: ImportsResource) -> Path:
    if config.path and Path(config.path).is_file():
        return Path(config.path)
    found = find_partition_file(key, imports.search_folders)
    if found is None:
        folders = ", ".join(str(f) for f in imports.search_folders)
        raise dg.Failure(f"no file for partition {key} (looked for {config.path or 'it'} in {folders})", allow_retries=False)
    return found


def _rejects_table(result: "ImportResult") -> str:
    if not result.sample_rejects:
        return "No rejected rows."
    rows = [(line, reason, raw[:120]) for line, reason, raw in result.sample_rejects[:SAMPLE_ROWS]]
    table = markdown_table(["line", "reason", "row"], rows, numeric=["line"])
    if result.rejected > SAMPLE_ROWS:
        table += f"\n\n{result.rejected - SAMPLE_ROWS} more in `import_rejects` (file_id {result.file_id})."
    return table


def import_metadata(result: "ImportResult", path: Path) -> dict:
    return {
        "dagster/row_count": result.lines_imported,
        "file": str(path),
        "content_hash": result.content_hash,
        "already_imported": result.already_imported,
        "rows_read": result.rows_read,
        "physical_lines": result.physical_lines,
        "blank_lines": result.blank_lines,
        "continued_lines": result.continued_lines,
        "lines_imported": result.lines_imported,
        "orders": result.orders,
        "new_customers": result.new_customers,
        "new_products": result.new_products,
        "rejected": result.rejected,
        "chunks": result.chunks,
        "resumed_after_line": result.resumed_after_line if result.resumed_after_line is not None else 0,
        "ignored_columns": ", ".join(result.ignored_columns) or "none",
        "seconds": round(result.seconds, 3),
        "rows_per_second": round(result.rows_per_second, 1),
        "rejects": dg.MetadataValue.md(_rejects_table(result)),
    }


@dg.asset(
    partitions_def=order_files,
    group_name="imports",
    owners=["team:imports"],
    kinds={"csv", "pyarrow", "sql"},
    tags=STAGE_TAGS,
    pool=IMPORT_POOL,
    description=(
        "Order lines of one CSV file (one partition per file, keyed by name and content hash): "
        "streamed in chunks, validated, staged and merged into customers, products, orders and "
        "order_lines. Bad rows go to import_rejects with their line number and reason."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            NO_REJECTS_LOST,
            asset="orders_csv",
            blocking=True,
            description=(
                "Nothing vanished: the file's physical data lines = rows + blank lines + lines continuing a "
                "quoted value, and rows = lines imported + rejected."
            ),
        )
    ],
)
@retry_transient
def orders_csv(
    context: dg.AssetExecutionContext, config: OrdersCsvConfig, database: DatabaseResource, imports: ImportsResource
) -> dg.MaterializeResult:
    from ordersys_pipelines.domain.imports.importer import (
        ChunkProgress,
        ImportSuperseded,
        describe_error,
        import_order_file,
        mark_run_failed,
    )

    tag_run_with_stage(context, "import")
    path = _locate(config, context.partition_key, imports)
    options = imports.options(date_format=config.date_format, columns=config.columns, encoding=config.encoding)

    def on_chunk(progress: ChunkProgress) -> None:
        context.log.info(
            f"chunk {progress.chunk_index}: {progress.rows} rows, {progress.rejected} rejected "
            f"({progress.bytes_read * 100 // max(progress.total_bytes, 1)}% of the file)"
        )
        for listener in list(_chunk_listeners):
            listener(progress)

    try:
        result = import_order_file(database.engine, path, options=options, run_id=context.run.run_id, on_chunk=on_chunk)
    except (CsvFormatError, OSError) as exc:
        moved = move_aside(path, imports.inbox_path, FAILED, reason=f"{path.name}: {exc}")
        raise dg.Failure(
            description=f"{path.name}: {exc}",
            metadata={"file": str(moved or path)},
            allow_retries=False,
        ) from exc
    except ImportSuperseded:
        raise
    except Exception as exc:  # the file must not stay `importing` once this run has ended
        if transient_cause(exc) is not None:
            raise  # tried again (retry_transient); the committed chunks stay, the next attempt resumes
        cause = describe_error(exc)
        mark_run_failed(database.engine, context.run.run_id, cause)
        raise dg.Failure(description=f"{path.name}: {cause}", metadata={"file": str(path), "cause": cause}) from exc

    metadata = import_metadata(result, path)
    if result.status == "failed":
        reason = f"{path.name}: {result.error}\n\n{_rejects_table(result)}"
        moved = move_aside(path, imports.inbox_path, FAILED, reason=reason)
        raise dg.Failure(description=f"{path.name}: {result.error}", metadata={**metadata, "file": str(moved or path)},
                         allow_retries=False)
    moved = move_aside(path, imports.inbox_path, PROCESSED)
    if moved:
        metadata["file"] = str(moved)
    if result.already_imported:
        context.log.info(f"{path.name}: this content was already imported as {result.name}; nothing changed")
    balanced = result.lines_balanced
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            dg.AssetCheckResult(
                check_name=NO_REJECTS_LOST,
                passed=balanced,
                metadata={"physical_lines": result.physical_lines, "blank_lines": result.blank_lines,
                          "continued_lines": result.continued_lines, "rows_read": result.rows_read,
                          "lines_imported": result.lines_imported, "rejected": result.rejected},
            )
        ],
    )


# The order tables in the database: filled by the import, moved on by the workflow, settlement
# and refund jobs, read by the analytics. Declared (not materialized by Dagster) so the lineage
# graph shows orders_csv -> orders -> daily_kpis / customer_leaderboard.
ORDERS = dg.AssetKey("orders")
order_tables = dg.AssetSpec(
    ORDERS,
    deps=[orders_csv],
    description="Customers, products, orders and order lines in the database (db/schema.py); the "
    "state every job reads and moves on.",
    group_name="imports",
    kinds={"sql"},
)

orders_import_job = dg.define_asset_job(
    "orders_import",
    selection=[orders_csv],
    tags=STAGE_TAGS,
    description="Import one order file (a partition of orders_csv).",
)


def file_tags(name: str) -> dict[str, str]:
    """Run tags to find a file's runs in the UI (tag values are kept short)."""
    return {**STAGE_TAGS, "ordersys/file": name[:63]}
