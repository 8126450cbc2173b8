"""The instance `make up` and `make demo` share: DAGSTER_HOME (default `.dagster_home`) with a
copy of the project's dagster.yaml, written one way for both (`scripts/stack.sh` runs this
module; `ordersys demo` calls `ensure`).

With DAGSTER_PG_URL set the copy is the file as it is (PostgreSQL storage); without it, the
copy leaves the storage block out, so the instance keeps SQLite files in DAGSTER_HOME, and says
so where the file described PostgreSQL.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_HOME = ".dagster_home"
SOURCE = Path(__file__).resolve().parents[2] / "dagster.yaml"  # the project's file (a source checkout)
STORAGE_COMMENT = "# Storage:"
SQLITE_NOTE = (
    "# Storage: SQLite files in this folder (history/, storage/, schedules/); DAGSTER_PG_URL was not\n"
    "# set when this copy was written. With it set, the copy keeps the PostgreSQL storage block.\n"
)


def instance_yaml(source_text: str, *, postgres: bool) -> str:
    """The text of the copy: the source, or the source without its storage block."""
    if postgres:
        return source_text
    lines, skipping = [], False
    for line in source_text.splitlines(keepends=True):
        if line.startswith(STORAGE_COMMENT) or line.startswith("storage:"):
            if not skipping:
                lines.append(SQLITE_NOTE)
            skipping = True
            continue
        if skipping and line.strip() == "":
            skipping = False
        if not skipping:
            lines.append(line)
    return "".join(lines)


def write(home: Path, source: Path = SOURCE) -> Path:
    """DAGSTER_HOME made and its dagster.yaml written from `source` (nothing written when
    there is no source: Dagster's defaults are the same SQLite layout)."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if source.is_file():
        text = instance_yaml(source.read_text(encoding="utf-8"), postgres=bool(os.environ.get("DAGSTER_PG_URL")))
        target.write_text(text, encoding="utf-8")
    return home


def ensure() -> Path:
    """DAGSTER_HOME (default `.dagster_home` here, the one `make up` uses, then set in the
    environment), with a dagster.yaml written the way `make up` writes it when it has none."""
    home = Path(os.environ.get("DAGSTER_HOME") or DEFAULT_HOME).resolve()
    if not (home / "dagster.yaml").is_file():
        write(home)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


if __name__ == "__main__":
    write(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else SOURCE)
