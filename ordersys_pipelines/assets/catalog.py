"""`product_catalog`: the products and stock a catalog file (sku,name,price,stock) sets.

Materialized by the `inventory_load` job when such a file lands in the inbox (or from the
Launchpad with a path). An asset job rather than an op job: a sensor that targets several jobs,
one of them an op job needing resources, makes Dagster 1.13 emit a BetaWarning about sensor
owners at load time.
"""

# No `from __future__ import annotations`: Dagster reads the config and resource annotations.
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from ordersys_pipelines.assets.stages import IMPORT_POOL, tag_run_with_stage
from ordersys_pipelines.domain.imports.csv_format import CsvFormatError
from ordersys_pipelines.domain.imports.files import FAILED, PROCESSED, move_aside
from ordersys_pipelines.domain.tables import markdown_table
from ordersys_pipelines.resources.database import DatabaseResource
from ordersys_pipelines.resources.imports import ImportsResource
from ordersys_pipelines.step_retries import retry_transient

if TYPE_CHECKING:  # the loader (pyarrow, numpy) is imported by the step: other runs load none of it
    from ordersys_pipelines.domain.imports.catalog import CatalogResult

STAGE_TAGS = {"ordersys/stage": "import"}


class CatalogConfig(dg.Config):
    path: str = Field(description="The catalog file (looked for in processed/ and failed/ too once moved)")
    encoding: str = Field(default="utf-8", description="Text encoding of the file")


def _locate(path: str, imports: ImportsResource) -> Path:
    for candidate in [Path(path)] + [folder / Path(path).name for folder in imports.search_folders]:
        if candidate.is_file():
            return candidate
    raise dg.Failure(f"catalog file {path} not found", allow_retries=False)


def catalog_metadata(result: "CatalogResult", path: Path) -> dict:
    rejects = [(r.line_number, r.reason) for r in result.rejects]
    return {
        "file": str(path),
        "already_loaded": result.already_loaded,
        "rows_read": result.rows_read,
        "products_created": result.products_created,
        "products_updated": result.products_updated,
        "rejected": result.rejected,
        "seconds": round(result.seconds, 3),
        "rows_per_second": round(result.rows_read / result.seconds, 1) if result.seconds else 0.0,
        "rejects": dg.MetadataValue.md(
            markdown_table(["line", "reason"], rejects, numeric=["line"]) if rejects else "No rejected rows."
        ),
    }


@dg.asset(
    group_name="imports",
    owners=["team:imports"],
    kinds={"csv", "sql"},
    tags=STAGE_TAGS,
    pool=IMPORT_POOL,
    description="Products and their stock as set by catalog files (stock is never set below what is reserved).",
)
@retry_transient
def product_catalog(
    context: dg.AssetExecutionContext, config: CatalogConfig, database: DatabaseResource, imports: ImportsResource
) -> dg.MaterializeResult:
    from ordersys_pipelines.domain.imports.catalog import load_catalog

    tag_run_with_stage(context, "import")
    path = _locate(config.path, imports)
    try:
        result = load_catalog(database.engine, path, chunk_rows=imports.chunk_rows, encoding=config.encoding)
    except (CsvFormatError, OSError) as exc:
        move_aside(path, imports.inbox_path, FAILED, reason=f"{path.name}: {exc}")
        raise dg.Failure(description=f"{path.name}: {exc}", allow_retries=False) from exc
    moved = move_aside(path, imports.inbox_path, PROCESSED)
    context.log.info(
        f"{path.name}: {result.products_created} products created, {result.products_updated} updated, "
        f"{result.rejected} rows rejected"
    )
    return dg.MaterializeResult(metadata=catalog_metadata(result, moved or path))


inventory_load = dg.define_asset_job(
    "inventory_load",
    selection=[product_catalog],
    tags=STAGE_TAGS,
    description="Load a catalog file: create or update products and set their stock.",
)
