"""What the database knows about imported files: the latest ones with their counts, one file
found by name, content hash (or its prefix) or id, and its rejects a page at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, or_, select

from ordersys_pipelines.db.schema import import_files, import_rejects

# Shorter prefixes of a content hash would match too many files to mean one.
MIN_HASH_PREFIX = 6


@dataclass(frozen=True)
class FileRecord:
    id: int
    name: str
    content_hash: str
    partition_key: str
    kind: str
    status: str
    rows_read: int
    lines_imported: int
    orders: int
    rejected: int
    error: str | None
    run_id: str | None
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class Reject:
    line_number: int
    reason: str
    raw_text: str


class FileNotFound(LookupError):
    """No file, or more than one, answers to what was asked for."""


def _as_datetime(value) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _record(row) -> FileRecord:
    return FileRecord(
        id=row.id, name=row.original_name, content_hash=row.content_hash, partition_key=row.partition_key or "",
        kind=row.kind, status=row.status, rows_read=row.rows_read, lines_imported=row.lines_imported,
        orders=row.orders_imported, rejected=row.rejected_rows, error=row.error, run_id=row.run_id,
        started_at=_as_datetime(row.started_at), finished_at=_as_datetime(row.finished_at),
    )


def recent_files(conn: Connection, limit: int = 10) -> list[FileRecord]:
    """The latest files (by start of their import), newest first."""
    rows = conn.execute(select(import_files).order_by(import_files.c.started_at.desc(), import_files.c.id.desc())
                        .limit(limit))
    return [_record(row) for row in rows]


def find_file(conn: Connection, wanted: str) -> FileRecord:
    """The one file whose id, name, partition key or content hash (prefix) is `wanted`; the
    newest of several files of that name. FileNotFound says what was tried."""
    wanted = wanted.strip()
    if not wanted:
        raise FileNotFound("no file named")
    matches = [import_files.c.original_name == wanted, import_files.c.partition_key == wanted]
    if wanted.isdigit():
        matches.append(import_files.c.id == int(wanted))
    lowered = wanted.lower()
    if len(lowered) >= MIN_HASH_PREFIX and all(c in "0123456789abcdef" for c in lowered):
        matches.append(import_files.c.content_hash.startswith(lowered, autoescape=True))
    rows = conn.execute(
        select(import_files).where(or_(*matches)).order_by(import_files.c.started_at.desc(), import_files.c.id.desc())
        .limit(20)
    ).all()
    if not rows:
        raise FileNotFound(f"no imported file has the id, name or content hash {wanted!r}")
    hashes = {row.content_hash for row in rows if row.content_hash.startswith(lowered)}
    if len(hashes) > 1 and all(row.original_name != wanted for row in rows):
        raise FileNotFound(f"{wanted!r} is the start of {len(hashes)} content hashes; give more of it")
    return _record(rows[0])


def file_rejects(conn: Connection, file_id: int, *, limit: int, after_line: int = 0) -> list[Reject]:
    """The file's rejects in line order, `limit` of them after line `after_line` (a page)."""
    rows = conn.execute(
        select(import_rejects.c.line_number, import_rejects.c.reason, import_rejects.c.raw_text)
        .where(import_rejects.c.file_id == file_id, import_rejects.c.line_number > after_line)
        .order_by(import_rejects.c.line_number, import_rejects.c.id)
        .limit(limit)
    )
    return [Reject(int(line), reason, raw) for line, reason, raw in rows]


def reject_count(conn: Connection, file_id: int) -> int:
    return int(conn.execute(select(func.count()).where(import_rejects.c.file_id == file_id)).scalar_one())
