"""The instance `make up` and `make demo` share: DAGSTER_HOME (default `.dagster_home`) with a
copy of the project's dagster.yaml, written one way for both (`scripts/stack.sh` runs this
module; `ordersys demo` calls `ensure`).

With DAGSTER_PG_URL set the copy is the file as it is (PostgreSQL storage); without it, the
copy leaves the storage block out, so the instance keeps SQLite files in DAGSTER_HOME, and says
so where the file described PostgreSQL.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

DEFAULT_HOME = ".dagster_home"
# Dagster's switches for its event writes, read from the environment by every process that
# writes a run's events (webserver, daemon, run workers, the CLI's in-process runs): a ranged
# run (a 365-day KPI backfill) writes its per-partition events in batches, and one planned
# materialization event per asset instead of one per partition. Measured by
# bench/backfill_bench.py: 365 days on the PostgreSQL instance 8.4x one day -> 1.4x.
# A value already in the environment wins (0 / false turn a switch off).
DAGSTER_EVENT_ENV = {"DAGSTER_EVENT_BATCH_SIZE": "1000", "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "true"}
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


def apply_event_env() -> None:
    """DAGSTER_EVENT_ENV in this process's environment, where not set already."""
    for name, value in DAGSTER_EVENT_ENV.items():
        os.environ.setdefault(name, value)


if __name__ == "__main__":
    if sys.argv[1:] == ["--event-env"]:  # for scripts/stack.sh: `export` lines
        print("\n".join(f"export {name}={shlex.quote(os.environ.get(name, value))}"
                        for name, value in DAGSTER_EVENT_ENV.items()))
    else:
        write(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else SOURCE)
