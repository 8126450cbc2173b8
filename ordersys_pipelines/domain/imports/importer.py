"""Import one order file: stream → validate → stage chunk by chunk → merge.

State lives in `import_files` (one row per content hash): `importing` while chunks are being
staged, `staged` while a merge in steps (SQLite) is under way, then `completed` (or `failed`:
unreadable, every row rejected, or an unexpected error that ended its run, with the cause in
one line in `error`). A run killed while `importing`, or failed by an unexpected error, leaves
its committed chunks behind; the next run resumes after the last line they hold, or, once the
merge's first step committed (`physical_lines` is set), with the merge of the orders still
staged. A `completed` file is never imported twice, whatever its name.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, delete, exists, func, select, union_all, update

from ordersys_pipelines.db.dialect import insert_new, lock_rows
from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.schema import import_files, import_rejects, import_staging
from ordersys_pipelines.domain.imports.csv_format import (
    CsvFormatError,
    parse_column_mapping,
    resolve_order_layout,
)
from ordersys_pipelines.domain.imports.files import content_hash, partition_key
from ordersys_pipelines.domain.imports.load import load_chunk
from ordersys_pipelines.domain.imports.merge import (
    MergeCounts,
    check_orders,
    drop_temp_tables,
    mark_completed,
    merge_file,
    merge_orders,
    order_slices,
    record_counts,
)
from ordersys_pipelines.domain.imports.originals import quote_original_text
from ordersys_pipelines.domain.imports.reader import CsvChunkReader, RawChunk
from ordersys_pipelines.domain.imports.validate import ValidationOptions, validate_chunk

SAMPLE_REJECTS = 10


@dataclass(frozen=True)
class ImportOptions:
    chunk_rows: int = 50_000
    default_stock: int = 0
    timezone: str = "UTC"
    date_format: str | None = None
    columns: str | dict[str, str] | None = None  # "Source=canonical,..." mapping
    encoding: str = "utf-8"


@dataclass
class ChunkProgress:
    chunk_index: int
    rows: int  # rows of this chunk (staged + rejected)
    rejected: int
    bytes_read: int
    total_bytes: int


@dataclass
class ImportResult:
    file_id: int
    content_hash: str
    name: str
    partition_key: str
    status: str  # completed | failed
    already_imported: bool = False
    rows_read: int = 0
    physical_lines: int = 0  # data lines of the file, counted from its bytes
    blank_lines: int = 0
    continued_lines: int = 0  # further lines of rows whose quoted values span several lines
    lines_imported: int = 0
    orders: int = 0
    new_customers: int = 0
    new_products: int = 0
    rejected: int = 0
    chunks: int = 0
    resumed_after_line: int | None = None
    rows_this_run: int = 0
    seconds: float = 0.0
    error: str | None = None
    ignored_columns: list[str] = field(default_factory=list)
    sample_rejects: list[tuple[int, str, str]] = field(default_factory=list)  # line, reason, raw text

    @property
    def lines_balanced(self) -> bool:
        """Nothing vanished: every physical line is part of a row or blank, and every row is
        an imported line or a reject."""
        # Files imported before the line counts were kept have none (0 lines for >0 rows).
        lines_counted = self.physical_lines > 0 or self.rows_read == 0
        lines_add_up = self.physical_lines == self.rows_read + self.blank_lines + self.continued_lines
        return (lines_add_up or not lines_counted) and self.rows_read == self.lines_imported + self.rejected

    @property
    def rows_per_second(self) -> float:
        return self.rows_this_run / self.seconds if self.seconds else 0.0


class ImportSuperseded(RuntimeError):
    """Another run took over this file; this one stops without touching it further."""


ChunkCallback = Callable[[ChunkProgress], None]


def import_order_file(
    engine: Engine,
    path: Path,
    *,
    options: ImportOptions = ImportOptions(),
    name: str | None = None,
    run_id: str | None = None,
    on_chunk: ChunkCallback | None = None,
) -> ImportResult:
    """Import `path`. Raises CsvFormatError (after recording the file as failed) when the file
    as a whole cannot be read; bad rows are rejects, never exceptions."""
    started = time.perf_counter()
    path = Path(path)
    name = name or path.name
    run_id = run_id or uuid.uuid4().hex
    digest = content_hash(path)
    key = partition_key(name, digest)
    file_row = _claim_file(engine, digest, name, key, run_id)
    file_id = file_row.id
    if file_row.status == "completed":
        result = _result_from_row(engine, file_id, already_imported=True)
        result.seconds = time.perf_counter() - started
        return result

    try:
        mapping = parse_column_mapping(options.columns)
        reader = CsvChunkReader(path, chunk_rows=options.chunk_rows, encoding=options.encoding)
        layout = resolve_order_layout(reader.header, mapping)
    except CsvFormatError as exc:
        _fail(engine, file_id, run_id, str(exc))
        raise

    validation = ValidationOptions(
        timezone=options.timezone, date_format=options.date_format, import_date=file_row.started_at
    )
    # The merge's first step committed: every line is staged or rejected already.
    checked = file_row.physical_lines > 0
    resume_line = _last_committed_line(engine, file_id) if file_row.chunks_committed and not checked else None
    total_bytes = path.stat().st_size
    rows_this_run = 0

    def prepared():
        if checked:
            return
        for chunk in reader.chunks():
            if resume_line is not None:
                chunk = _after_line(chunk, resume_line)
                if chunk is None:
                    continue
            yield chunk.index, validate_chunk(chunk, layout, validation)

    try:
        for index, validated in read_ahead(prepared()):
            with engine.begin() as conn:
                _assert_owner(conn, file_id, run_id)
                load_chunk(conn, file_id, validated.rows, validated.rejects)
            rows = validated.rows.num_rows + len(validated.rejects)
            rows_this_run += rows
            if on_chunk is not None:
                on_chunk(ChunkProgress(index, rows, len(validated.rejects), reader.bytes_read, total_bytes))
    except CsvFormatError as exc:
        _fail(engine, file_id, run_id, str(exc))
        raise
    except ImportSuperseded:
        raise
    except Exception as exc:
        _note_error(engine, file_id, run_id, describe_error(exc))
        raise

    merge = _merge_in_steps if engine.dialect.name == "sqlite" else _merge_at_once
    try:
        merge(engine, file_id, run_id, path, reader, options, checked=checked)
    except ImportSuperseded:
        raise
    except Exception as exc:  # the step rolled back; the staged rows wait for the next run
        _note_error(engine, file_id, run_id, describe_error(exc))
        raise

    result = _result_from_row(engine, file_id)
    result.resumed_after_line = resume_line
    result.rows_this_run = rows_this_run
    result.ignored_columns = list(layout.ignored)
    result.seconds = time.perf_counter() - started
    return result


def _merge_at_once(engine: Engine, file_id: int, run_id: str, path: Path, reader: CsvChunkReader,
                   options: ImportOptions, *, checked: bool) -> None:
    """The whole merge in one transaction (PostgreSQL, MariaDB: row locks let others work on)."""
    with engine.begin() as conn:
        _assert_owner(conn, file_id, run_id)
        first_merge_reject = _next_reject_id(conn)
        counts = merge_file(conn, file_id, default_stock=options.default_stock)
        quote_original_text(conn, file_id, first_merge_reject, path, options.encoding)
        _record_lines(conn, file_id, reader, status="importing")
        record_counts(conn, file_id, counts)
        _finish(conn, file_id)


def _merge_in_steps(engine: Engine, file_id: int, run_id: str, path: Path, reader: CsvChunkReader,
                    options: ImportOptions, *, checked: bool) -> None:
    """The merge in bounded transactions (SQLite, where a transaction holds the one write lock
    and every other writer waits): first the whole-order checks, customers and products, then
    the orders slice by slice, about `chunk_rows` lines each, every order whole in one of them.
    Each step removes what it merged from staging, so a killed run goes on with the rest; the
    last one completes the file, which is what makes its orders eligible for the workflow."""
    with engine.begin() as conn:
        _assert_owner(conn, file_id, run_id)
        if not checked:
            first_merge_reject = _next_reject_id(conn)
            counts = check_orders(conn, file_id, default_stock=options.default_stock)
            drop_temp_tables(conn)
            quote_original_text(conn, file_id, first_merge_reject, path, options.encoding)
            _record_lines(conn, file_id, reader, status="staged")
            record_counts(conn, file_id, counts)
        slices = order_slices(conn, file_id, options.chunk_rows)
        if not slices:
            _finish(conn, file_id)
    for number, between in enumerate(slices, start=1):
        with engine.begin() as conn:
            _assert_owner(conn, file_id, run_id)
            first_merge_reject = _next_reject_id(conn)
            counts = MergeCounts()
            merge_orders(conn, file_id, counts, between=between)
            quote_original_text(conn, file_id, first_merge_reject, path, options.encoding)
            record_counts(conn, file_id, counts)
            if number == len(slices):
                _finish(conn, file_id)


def _record_lines(conn, file_id: int, reader: CsvChunkReader, *, status: str) -> None:
    conn.execute(
        update(import_files).where(import_files.c.id == file_id).values(
            status=status, physical_lines=reader.physical_lines, blank_lines=reader.blank_lines,
            continued_lines=reader.continued_lines)
    )


def _finish(conn, file_id: int) -> None:
    """Complete the file, or fail it when not one of its rows could be imported."""
    rows_read, imported = conn.execute(
        select(import_files.c.rows_read, import_files.c.lines_imported).where(import_files.c.id == file_id)
    ).one()
    if rows_read and imported == 0:
        mark_completed(conn, file_id, status="failed", error=f"every one of the {rows_read} rows was rejected")
    else:
        mark_completed(conn, file_id, status="completed", error=None)


def read_ahead(items: Iterator, depth: int = 1) -> Iterator:
    """Produce the next items in a thread while the caller works on the current one: parsing
    and validating chunk k+1 (pyarrow, which releases the GIL) overlaps loading chunk k into the
    database. At most `depth` items wait, so memory stays flat."""
    done = object()
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        handoff.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            handoff.put((done, None))
        except BaseException as exc:  # handed to the consumer, raised there
            handoff.put((done, exc))

    worker = threading.Thread(target=produce, name="import-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item, error = handoff.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                handoff.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)


def _claim_file(engine: Engine, digest: str, name: str, key: str, run_id: str):
    """The file's row, created when new; a failed file starts over, an interrupted one resumes.
    Taking it over (run_id) makes any other run still working on it stop at its next chunk."""
    with engine.begin() as conn:
        conn.execute(
            insert_new(conn, import_files, [import_files.c.content_hash])
            .values(content_hash=digest, original_name=name, partition_key=key, kind="orders", started_at=utcnow())
        )
        query = select(import_files).where(import_files.c.content_hash == digest)
        query = lock_rows(conn, query)
        row = conn.execute(query).one()
        if row.kind != "orders":
            raise CsvFormatError(f"this content was loaded as a catalog file ({row.original_name}), not as orders")
        if row.status == "completed":
            return row
        if row.status == "failed" and not _has_staged_rows(conn, row.id):
            # Failed as a whole (bad header, every row rejected ...): start again from scratch,
            # perhaps with other options this time. A run that failed while staging (staged
            # rows wait) resumes like an interrupted one.
            conn.execute(delete(import_rejects).where(import_rejects.c.file_id == row.id))
            conn.execute(delete(import_staging).where(import_staging.c.file_id == row.id))
            reset = dict(rows_read=0, rejected_rows=0, chunks_committed=0, lines_imported=0, orders_imported=0,
                         new_customers=0, new_products=0, physical_lines=0, blank_lines=0, continued_lines=0,
                         finished_at=None)
        else:
            reset = {}
        status = "staged" if row.physical_lines and not reset else "importing"
        conn.execute(
            update(import_files)
            .where(import_files.c.id == row.id)
            .values(status=status, error=None, run_id=run_id, partition_key=key, **reset)
        )
        return conn.execute(select(import_files).where(import_files.c.id == row.id)).one()


def _assert_owner(conn, file_id: int, run_id: str) -> None:
    query = select(import_files.c.run_id).where(import_files.c.id == file_id)
    query = lock_rows(conn, query)
    owner = conn.execute(query).scalar_one()
    if owner != run_id:
        raise ImportSuperseded(f"run {owner} has taken over this file")


def _last_committed_line(engine: Engine, file_id: int) -> int | None:
    """The last line the committed chunks hold: chunks commit whole and in file order."""
    lines = union_all(
        select(func.max(import_staging.c.line_number).label("line")).where(import_staging.c.file_id == file_id),
        select(func.max(import_rejects.c.line_number).label("line")).where(import_rejects.c.file_id == file_id),
    ).subquery()
    with engine.connect() as conn:
        return conn.execute(select(func.max(lines.c.line))).scalar()


def _after_line(chunk: RawChunk, line: int) -> RawChunk | None:
    """The part of a chunk after `line` (None when it was committed before)."""
    malformed = [r for r in chunk.malformed if r.line_number > line]
    keep = chunk.line_numbers > line
    if not keep.any() and not malformed:
        return None
    if keep.all():
        chunk.malformed = malformed
        return chunk
    kept = chunk.take(keep) if keep.any() else chunk.take(np.zeros(chunk.num_rows, dtype=bool))
    kept.malformed = malformed
    return kept


def _fail(engine: Engine, file_id: int, run_id: str, error: str) -> None:
    """The file cannot be read as a whole: nothing of it is kept to resume from."""
    with engine.begin() as conn:
        owned = conn.execute(
            update(import_files)
            .where(import_files.c.id == file_id, import_files.c.run_id == run_id)
            .values(status="failed", error=error, finished_at=utcnow())
        ).rowcount
        if owned:
            conn.execute(delete(import_staging).where(import_staging.c.file_id == file_id))


def _has_staged_rows(conn, file_id: int) -> bool:
    return conn.execute(select(exists().where(import_staging.c.file_id == file_id))).scalar()


def _next_reject_id(conn) -> int:
    return (conn.execute(select(func.max(import_rejects.c.id))).scalar() or 0) + 1


def describe_error(exc: BaseException) -> str:
    """An error in one line an operator can read: a database error by the driver's own message
    (without the statement and its parameters), anything else by its type and first line."""
    cause = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    text = f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__
    return text if len(text) <= 300 else text[:299] + "…"


def mark_run_failed(engine: Engine, run_id: str, cause: str) -> None:
    """The run importing a file ended with an unexpected error: the file is `failed` with the
    cause (its committed chunks stay, so a rerun resumes after them)."""
    with engine.begin() as conn:
        conn.execute(
            update(import_files)
            .where(import_files.c.run_id == run_id, import_files.c.status.in_(("importing", "staged")))
            .values(status="failed", error=cause[:2000], finished_at=utcnow())
        )


def _note_error(engine: Engine, file_id: int, run_id: str, error: str) -> None:
    """An unexpected error leaves the file `importing` (a kill leaves it so too; the next run
    resumes) but says why; the run that ends with it marks the file failed (mark_run_failed)."""
    with engine.begin() as conn:
        conn.execute(
            update(import_files)
            .where(import_files.c.id == file_id, import_files.c.run_id == run_id)
            .values(error=error[:2000])
        )


def import_summary(engine: Engine, digest: str) -> ImportResult | None:
    """What the database records about the file with this content (None: never seen)."""
    with engine.connect() as conn:
        file_id = conn.execute(select(import_files.c.id).where(import_files.c.content_hash == digest)).scalar()
    return _result_from_row(engine, file_id) if file_id is not None else None


def _result_from_row(engine: Engine, file_id: int, *, already_imported: bool = False) -> ImportResult:
    with engine.connect() as conn:
        row = conn.execute(select(import_files).where(import_files.c.id == file_id)).one()
        sample = conn.execute(
            select(import_rejects.c.line_number, import_rejects.c.reason, import_rejects.c.raw_text)
            .where(import_rejects.c.file_id == file_id)
            .order_by(import_rejects.c.line_number)
            .limit(SAMPLE_REJECTS)
        ).all()
    return ImportResult(
        file_id=row.id,
        content_hash=row.content_hash,
        name=row.original_name,
        partition_key=row.partition_key or "",
        status=row.status,
        already_imported=already_imported,
        rows_read=row.rows_read,
        physical_lines=row.physical_lines,
        blank_lines=row.blank_lines,
        continued_lines=row.continued_lines,
        lines_imported=row.lines_imported,
        orders=row.orders_imported,
        new_customers=row.new_customers,
        new_products=row.new_products,
        rejected=row.rejected_rows,
        chunks=row.chunks_committed,
        error=row.error,
        sample_rejects=[tuple(r) for r in sample],
    )
