"""Per-chunk bulk load: a chunk's valid rows into `import_staging`, its rejects into
`import_rejects`, and the file's progress counters — all in ONE transaction, so a run killed at
any point resumes after the last chunk that committed.

PostgreSQL gets COPY FROM STDIN (through the driver connection under SQLAlchemy's); other
databases a driver-level executemany.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from sqlalchemy import Connection, Table, update

from ordersys_pipelines.db.schema import import_files, import_rejects, import_staging
from ordersys_pipelines.domain.imports.reader import Reject
from ordersys_pipelines.domain.imports.validate import STAGING_SCHEMA

STAGING_COLUMNS = ["file_id", *STAGING_SCHEMA.names]


def copy_rows(conn: Connection, table: Table, rows: pa.Table) -> None:
    """Bulk-insert an Arrow table whose column names match `table`'s columns."""
    if rows.num_rows == 0:
        return
    if conn.dialect.name == "postgresql":
        buffer = io.BytesIO()
        # Every non-null value quoted: an empty string stays '' and only a true null is NULL.
        pa_csv.write_csv(rows, buffer, pa_csv.WriteOptions(include_header=False, quoting_style="all_valid"))
        buffer.seek(0)
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
    placeholders = ", ".join("?" for _ in columns)
    names = ", ".join(f'"{name}"' for name in rows.column_names)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.executemany(f"INSERT INTO {table.name} ({names}) VALUES ({placeholders})", zip(*columns, strict=True))
    finally:
        cursor.close()


def rejects_table(file_id: int, rejects: list[Reject]) -> pa.Table:
    return pa.table(
        {
            "file_id": pa.array([file_id] * len(rejects), pa.int64()),
            "line_number": pa.array([r.line_number for r in rejects], pa.int64()),
            "raw_text": pa.array([r.raw_text for r in rejects], pa.string()),
            "reason": pa.array([r.reason for r in rejects], pa.string()),
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
