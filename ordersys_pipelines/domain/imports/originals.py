"""The file's own text of the lines rejected at merge time.

Staging keeps parsed values (cents, UTC timestamps), not text; the lines the merge rejects
(their order was rejected whole, or has moved on) are few, so their text is read back from the
file by line number in one streaming pass that stops after the last one wanted.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, bindparam, select, update

from ordersys_pipelines.db.schema import import_rejects
from ordersys_pipelines.domain.imports.load import printable

FIELD_LIMIT = 1 << 28  # as long as the reader's largest record


def quote_original_text(conn: Connection, file_id: int, first_reject_id: int, path: Path, encoding: str) -> None:
    """Replace the raw text of the file's rejects from `first_reject_id` on with the file's lines."""
    r = import_rejects.c
    wanted = dict(conn.execute(
        select(r.line_number, r.id).where(r.file_id == file_id, r.id >= first_reject_id)
    ).all())
    if not wanted:
        return
    texts = record_texts(path, encoding, set(wanted))
    updates = [{"reject_id": wanted[line], "text": printable(text)} for line, text in texts.items()]
    if updates:
        conn.execute(
            update(import_rejects).where(r.id == bindparam("reject_id")).values(raw_text=bindparam("text")),
            updates,
        )


def record_texts(path: Path, encoding: str, lines: set[int]) -> dict[int, str]:
    """{first physical line of a record: the record's text as the file has it} for `lines`."""
    codec = codecs.lookup(encoding).name
    found: dict[int, str] = {}
    last_wanted = max(lines)
    consumed: list[str] = []

    def physical(text) -> Iterator[str]:
        for line in text:
            consumed.append(line)
            yield line

    previous = csv.field_size_limit()
    csv.field_size_limit(max(previous, FIELD_LIMIT))
    try:
        with open(path, encoding="utf-8-sig" if codec == "utf-8" else codec, errors="replace", newline="") as text:
            reader = csv.reader(physical(text))
            header_seen = False
            while True:
                start = reader.line_num + 1
                try:
                    next(reader)
                except (StopIteration, csv.Error):
                    break
                if header_seen and start in lines:
                    found[start] = "".join(consumed).rstrip("\r\n")
                header_seen = True
                consumed.clear()
                if start >= last_wanted:
                    break
    finally:
        csv.field_size_limit(previous)
    return found
