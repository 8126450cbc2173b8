"""Per-chunk bulk load: a chunk's valid rows into `import_staging`, its rejects into
`import_rejects`, and the file's progress counters — all in ONE transaction, so a run killed at
any point resumes after the last chunk that committed.

PostgreSQL gets COPY FROM STDIN (through the driver connection under SQLAlchemy's); MySQL and
MariaDB LOAD DATA LOCAL INFILE of the same CSV text; other databases (and a MySQL server that
refuses local files) a driver-level executemany.
"""

from __future__ import annotations

import io
import os
import tempfile
import weakref

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from sqlalchemy import Connection, Engine, Table, update

from ordersys_pipelines.db.schema import import_files, import_rejects, import_staging
from ordersys_pipelines.domain.imports.reader import CONTROL_CHARACTER, Reject
from ordersys_pipelines.domain.imports.validate import STAGING_SCHEMA

STAGING_COLUMNS = ["file_id", *STAGING_SCHEMA.names]


def _csv(rows: pa.Table) -> io.BytesIO:
    buffer = io.BytesIO()
    # Every non-null value quoted: an empty string stays '' and only a true null is NULL.
    pa_csv.write_csv(rows, buffer, pa_csv.WriteOptions(include_header=False, quoting_style="all_valid"))
    buffer.seek(0)
    return buffer


# The server or the client has local_infile off (MySQL 8 servers by default; 4166 is MariaDB's code).
_LOCAL_INFILE_REFUSED = {1148, 3948, 4166}
# Engines whose server or client refused: every later chunk goes straight to the batched INSERT.
_local_infile_refused: weakref.WeakSet[Engine] = weakref.WeakSet()


def copy_rows(conn: Connection, table: Table, rows: pa.Table) -> None:
    """Bulk-insert an Arrow table whose column names match `table`'s columns."""
    if rows.num_rows == 0:
        return
    if conn.dialect.name in ("mysql", "mariadb") and conn.engine not in _local_infile_refused:
        try:
            _load_data_local(conn, table, rows)
            return
        except conn.dialect.loaded_dbapi.OperationalError as error:  # raised by the driver's cursor
            if error.args[0] not in _LOCAL_INFILE_REFUSED:
                raise
            _local_infile_refused.add(conn.engine)
    if conn.dialect.name == "postgresql":
        buffer = _csv(rows)
        columns = ", ".join(f'"{name}"' for name in rows.column_names)
        sql = f"COPY {table.name} ({columns}) FROM STDIN WITH (FORMAT csv)"
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            if hasattr(cursor, "copy"):  # psycopg 3 (what SQLAlchemy 2.1 uses for postgresql://)
                with cursor.copy(sql) as copy:
                    copy.write(buffer.getbuffer())
            else:  # psycopg2 (postgresql+psycopg2://)
                cursor.copy_expert(sql, buffer)
        finally:
            cursor.close()
        return
    columns = []
    for name in rows.column_names:
        column = rows.column(name)
        if pa.types.is_timestamp(column.type):
            # The text form SQLAlchemy's SQLite DateTime stores, so comparisons stay textual.
            column = pc.strftime(column, format="%Y-%m-%d %H:%M:%S.000000")
        columns.append(column.to_pylist())
    # PyMySQL turns an executemany of INSERT … VALUES into multi-row INSERTs (up to its packet size).
    placeholders = ", ".join(("?" if conn.dialect.paramstyle == "qmark" else "%s") for _ in columns)
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(name) for name in rows.column_names)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.executemany(f"INSERT INTO {quote(table.name)} ({names}) VALUES ({placeholders})",
                           list(zip(*columns, strict=True)))
    finally:
        cursor.close()


def _load_data_local(conn: Connection, table: Table, rows: pa.Table) -> None:
    """LOAD DATA LOCAL INFILE of the chunk as CSV. PyMySQL sends the file named in the statement,
    so the CSV goes to a temporary file first. LOAD DATA reads an empty unquoted field as '',
    not NULL: nullable columns go through a variable and NULLIF (validation never stages an
    empty string in them: a required text that is empty is a reject)."""
    quote = conn.dialect.identifier_preparer.quote
    targets, assignments = [], []
    for index, name in enumerate(rows.column_names):
        if table.c[name].nullable:
            targets.append(f"@v{index}")
            assignments.append(f"{quote(name)} = NULLIF(@v{index}, '')")
        else:
            targets.append(quote(name))
    handle, path = tempfile.mkstemp(prefix="ordersys_load_", suffix=".csv")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(_csv(rows).getbuffer())
        sql = (
            f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE {quote(table.name)} CHARACTER SET utf8mb4 "
            "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' LINES TERMINATED BY '\\n' "
            f"({', '.join(targets)})" + (f" SET {', '.join(assignments)}" if assignments else "")
        )
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            cursor.execute(sql)
        finally:
            cursor.close()
    finally:
        os.unlink(path)


# What a reject keeps of a line's text: MariaDB's TEXT holds 64 KB, and a reason is for reading.
MAX_RAW_TEXT = 10_000


def printable(text: str, limit: int = MAX_RAW_TEXT) -> str:
    """Text as a reject stores it: control characters (NUL, which PostgreSQL cannot store in
    text, and the others) written as \\xNN, and cut to `limit` characters with a note."""
    text = CONTROL_CHARACTER.sub(lambda found: f"\\x{ord(found.group()):02x}", text)
    if len(text) > limit:
        text = f"{text[:limit]}… ({len(text) - limit:,} more characters)"
    return text


def rejects_table(file_id: int, rejects: list[Reject]) -> pa.Table:
    return pa.table(
        {
            "file_id": pa.array([file_id] * len(rejects), pa.int64()),
            "line_number": pa.array([r.line_number for r in rejects], pa.int64()),
            "order_ref": pa.array([r.order_ref for r in rejects], pa.string()),
            "raw_text": pa.array([printable(r.raw_text) for r in rejects], pa.string()),
            "reason": pa.array([printable(r.reason) for r in rejects], pa.string()),
        }
    )


def load_chunk(conn: Connection, file_id: int, rows: pa.Table, rejects: list[Reject]) -> None:
    """Stage one chunk and record it; the caller's transaction makes it all-or-nothing."""
    staged = rows.add_column(0, "file_id", pa.array([file_id] * rows.num_rows, pa.int64()))
    copy_rows(conn, import_staging, staged.select(STAGING_COLUMNS))
    copy_rows(conn, import_rejects, rejects_table(file_id, rejects))
    conn.execute(
        update(import_files)
        .where(import_files.c.id == file_id)
        .values(
            chunks_committed=import_files.c.chunks_committed + 1,
            rows_read=import_files.c.rows_read + rows.num_rows + len(rejects),
            rejected_rows=import_files.c.rejected_rows + len(rejects),
        )
    )
