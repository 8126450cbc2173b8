"""The one Markdown table renderer of the metadata the UI shows (and of the CLI's reports).

One escaping rule for every cell: `|` is escaped, line breaks become spaces, and a cell is cut
at `max_cell` characters, so no value (a raw CSV row, an SMTP error) can break the table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

MAX_CELL = 200


def cell(value: object, max_cell: int = MAX_CELL) -> str:
    text = "" if value is None else str(value)
    text = text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")[:max_cell]
    return text.replace("|", "\\|")


def markdown_table(
    header: Sequence[str], rows: Iterable[Sequence[object]], *, numeric: Sequence[str] = (),
    max_cell: int = MAX_CELL,
) -> str:
    """A GitHub-flavoured table; the `numeric` columns are right-aligned."""
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if name in numeric else "---" for name in header) + " |"]
    lines += ["| " + " | ".join(cell(value, max_cell) for value in row) + " |" for row in rows]
    return "\n".join(lines)
