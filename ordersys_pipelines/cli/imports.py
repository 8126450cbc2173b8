"""`ordersys import`, `ordersys generate-orders` and `ordersys catalog ...`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import dagster as dg
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ordersys_pipelines.assets.imports import (
    chunk_listener,
    file_tags,
    order_files,
    orders_csv,
    orders_import_job,
)
from ordersys_pipelines.cli import runtime
from ordersys_pipelines.cli.console import console, plain_text
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.domain.imports import report
from ordersys_pipelines.domain.imports.catalog import CatalogResult, load_catalog
from ordersys_pipelines.domain.imports.csv_format import CsvFormatError
from ordersys_pipelines.domain.imports.files import content_hash, partition_key
from ordersys_pipelines.domain.imports.generate import generate_orders, write_catalog
from ordersys_pipelines.domain.imports.importer import ChunkProgress, ImportResult, import_summary
from ordersys_pipelines.settings import Settings

# The run's own log lines stay in the instance; the command prints its summary or one error line.
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass
class ImportOutcome:
    result: ImportResult
    seconds: float
    rows_per_second: float
    already_imported: bool


def readable_file(path: Path) -> Path:
    """The path, or a one-line ClickException saying why it cannot be imported."""
    if not path.exists():
        raise click.ClickException(f"{path}: no such file")
    if not path.is_file():
        raise click.ClickException(f"{path}: not a file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot be read ({exc.strerror})") from None
    return path


def import_file(
    settings: Settings,
    path: Path,
    *,
    date_format: str | None = None,
    columns: str | None = None,
    encoding: str = "utf-8",
    progress: bool = True,
) -> ImportOutcome:
    """Materialize the file's `orders_csv` partition in this process (recorded in the instance,
    so the UI shows the run when DAGSTER_HOME is set)."""
    path = readable_file(path)
    digest = content_hash(path)
    key = partition_key(path.name, digest)
    instance = runtime.instance()
    instance.add_dynamic_partitions(order_files.name, [key])
    run_config = {
        "ops": {"orders_csv": {"config": {"path": str(path.resolve()), "date_format": date_format or "",
                                          "columns": columns or "", "encoding": encoding}}},
        **QUIET_LOGS,
    }
    size = path.stat().st_size
    with Progress(
        TextColumn("[bold]importing[/] {task.description}"), BarColumn(), DownloadColumn(),
        TextColumn("{task.fields[rows]:,} rows"), TimeElapsedColumn(),
        console=console(), disable=not progress, transient=False,
    ) as bar:
        task = bar.add_task(path.name, total=size, rows=0)

        def on_chunk(chunk: ChunkProgress) -> None:
            done = bar.tasks[task].fields["rows"] + chunk.rows
            bar.update(task, completed=min(chunk.bytes_read, size), rows=done)

        with chunk_listener(on_chunk):
            # As the `orders_import` job (not dg.materialize's ephemeral job, which no code
            # location has): the run is found, filtered and re-executed like the sensor's.
            job = dg.Definitions(assets=[orders_csv], jobs=[orders_import_job],
                                 resources=runtime.resources(settings)).resolve_job_def(orders_import_job.name)
            result = job.execute_in_process(
                partition_key=key,
                instance=instance,
                run_config=run_config,
                tags=file_tags(path.name),
                raise_on_error=False,
            )
        bar.update(task, completed=size)
    if not result.success:
        raise click.ClickException(_failure_message(result) or f"{path}: the import failed")
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("orders_csv")[0].metadata.items()}
    summary = import_summary(get_engine(settings.database_url), digest)
    return ImportOutcome(
        result=summary,
        seconds=float(metadata["seconds"]),
        rows_per_second=float(metadata["rows_per_second"]),
        already_imported=bool(metadata["already_imported"]),
    )


def _failure_message(result: dg.ExecuteInProcessResult) -> str | None:
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            if data.user_failure_data is not None and data.user_failure_data.description:
                return data.user_failure_data.description
            return data.error.message.strip().splitlines()[-1] if data.error else None
    return None


def print_import_summary(outcome: ImportOutcome) -> None:
    result = outcome.result
    if outcome.already_imported:
        console().print(f"[yellow]{result.name}: this content was already imported; nothing changed.[/]")
    table = Table(title=f"Import of {result.name}", show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    for label, value in (
        ("data lines in the file", f"{result.physical_lines:,}"),
        ("blank lines skipped", f"{result.blank_lines:,}"),
        ("lines inside quoted values", f"{result.continued_lines:,}"),
        ("rows read", f"{result.rows_read:,}"),
        ("lines imported", f"{result.lines_imported:,}"),
        ("orders", f"{result.orders:,}"),
        ("new customers", f"{result.new_customers:,}"),
        ("new products", f"{result.new_products:,}"),
        ("rejected rows", f"{result.rejected:,}"),
        ("chunks", f"{result.chunks:,}"),
        ("seconds", f"{outcome.seconds:.2f}"),
        ("rows/s", f"{outcome.rows_per_second:,.0f}"),
    ):
        table.add_row(label, value)
    console().print(table)
    if result.sample_rejects:
        rejects = Table(title=f"First rejected rows (of {result.rejected:,}; all in import_rejects, file_id {result.file_id})")
        rejects.add_column("line", justify="right")
        rejects.add_column("reason", min_width=30)
        rejects.add_column("row", overflow="ellipsis", no_wrap=True, max_width=36)
        for line, reason, raw in result.sample_rejects:
            rejects.add_row(str(line), reason, raw)
        console().print(rejects)


@click.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--date-format", help="strptime format of order_date, e.g. '%m/%d/%Y %H:%M' (default ISO 8601).")
@click.option("--columns", help="Map another export's columns: 'Order ID=order_ref,Email=customer_email,...'.")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the file.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def import_command(file: Path, date_format: str | None, columns: str | None, encoding: str, no_progress: bool) -> None:
    """Import an order CSV file (materializes its orders_csv partition in-process)."""
    readable_file(file)
    settings = runtime.load_settings()
    outcome = import_file(settings, file, date_format=date_format, columns=columns, encoding=encoding,
                          progress=not no_progress)
    print_import_summary(outcome)


@click.command("generate-orders")
@click.option("--rows", type=click.IntRange(min=0), required=True, help="Order lines to write.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The CSV file to write.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--bad-rows", type=click.IntRange(min=0), default=0, show_default=True,
              help="Deliberately bad rows (each is rejected on import).")
@click.option("--products", type=click.IntRange(min=1), default=2000, show_default=True)
def generate_orders_command(rows: int, out: Path, seed: int, bad_rows: int, products: int) -> None:
    """Write a realistic order file (several lines per order, repeat customers, a year of dates)."""
    if bad_rows > rows:
        raise click.ClickException("--bad-rows cannot exceed --rows")
    generated = generate_orders(out, rows=rows, seed=seed, bad_rows=bad_rows, products=products)
    console().print(
        f"wrote {generated.rows:,} lines ({generated.orders:,} orders, {generated.customers:,} customers in the pool, "
        f"{generated.bad_rows:,} bad rows) to {out}"
    )


@click.group()
def catalog() -> None:
    """Products and stock (catalog files: sku,name,price,stock)."""


@catalog.command("load")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--encoding", default="utf-8", show_default=True)
def catalog_load(file: Path, encoding: str) -> None:
    """Create or update products and set their stock."""
    readable_file(file)
    settings = runtime.load_settings()
    try:
        result = load_catalog(get_engine(settings.database_url), file, chunk_rows=settings.chunk_rows, encoding=encoding)
    except CsvFormatError as exc:
        raise click.ClickException(f"{file}: {exc}") from None
    print_catalog_summary(result)


def print_catalog_summary(result: CatalogResult) -> None:
    if result.already_loaded:
        console().print(f"[yellow]{result.name}: this content was already loaded; nothing changed.[/]")
        return
    console().print(
        f"{result.name}: {result.rows_read:,} rows, {result.products_created:,} products created, "
        f"{result.products_updated:,} updated, {result.rejected:,} rejected"
    )
    for reject in result.rejects:
        console().print(f"  line {reject.line_number}: {reject.reason}")


@catalog.command("generate")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--products", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--stock", type=click.IntRange(min=0), default=1000, show_default=True, help="Stock of every product.")
def catalog_generate(out: Path, products: int, stock: int) -> None:
    """Write the catalog that generated order files use."""
    write_catalog(out, products=products, stock=stock)
    console().print(f"wrote {products:,} products with stock {stock:,} each to {out}")


@click.group()
def imports() -> None:
    """Imported files: what the database recorded about them."""


@imports.command("show")
@click.argument("file")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1), help="Rejects shown.")
@click.option("--after-line", default=0, show_default=True, type=click.IntRange(min=0),
              help="Show the rejects after this line (the next page).")
@click.option("--width", default=500, show_default=True, type=click.IntRange(min=20),
              help="Characters of a rejected row's text shown (longer ones are cut).")
def imports_show(file: str, limit: int, after_line: int, width: int) -> None:
    """A file's status, counts, error and rejects; FILE is its name, content hash (or the start
    of it) or id."""
    settings = runtime.load_settings(upgrade_schema=False)
    with get_engine(settings.database_url).connect() as conn:
        try:
            record = report.find_file(conn, file)
        except report.FileNotFound as missing:
            raise click.ClickException(str(missing)) from None
        rejects = report.file_rejects(conn, record.id, limit=limit + 1, after_line=after_line)
    out = console()
    summary = Table(title=Text(f"{record.name} (file id {record.id})"), show_header=False, title_justify="left")
    summary.add_column("", style="bold")
    summary.add_column("", overflow="fold")
    for label, value in (
        ("status", record.status), ("kind", record.kind), ("content hash", record.content_hash),
        ("partition", record.partition_key or "-"), ("rows read", f"{record.rows_read:,}"),
        ("lines imported", f"{record.lines_imported:,}"), ("orders", f"{record.orders:,}"),
        ("rejected rows", f"{record.rejected:,}"), ("error", record.error or "-"), ("run", record.run_id or "-"),
        ("started (UTC)", f"{record.started_at:%Y-%m-%d %H:%M:%S}" if record.started_at else "-"),
        ("finished (UTC)", f"{record.finished_at:%Y-%m-%d %H:%M:%S}" if record.finished_at else "-"),
    ):
        summary.add_row(label, plain_text(value))
    out.print(summary)
    if not rejects:
        out.print("No rejected rows." if after_line == 0 else f"No rejected rows after line {after_line}.")
        return
    page = Table(title=f"Rejected rows after line {after_line:,}" if after_line else "Rejected rows",
                 title_justify="left")
    page.add_column("line", justify="right", no_wrap=True)
    page.add_column("reason", overflow="fold", ratio=1)
    page.add_column("row", overflow="fold", ratio=1)
    for reject in rejects[:limit]:
        page.add_row(str(reject.line_number), plain_text(reject.reason), plain_text(reject.raw_text, width))
    out.print(page)
    if len(rejects) > limit:
        last = rejects[limit - 1].line_number
        out.print(f"more: ordersys imports show {record.id} --after-line {last} --limit {limit}")
