"""Fresh planner statistics during a long backlog, without relying on autovacuum.

A workflow run over a large backlog changes most rows of `orders` (every status moves on),
and the plans of its queries follow the statistics: left stale, PostgreSQL goes on estimating
the active states as they were at the import and picks worse plans as the backlog drains.
(`payment_callbacks` needs none: settlement finds the due callbacks through a partial index of
the pending ones, migration 0008, which a settled callback leaves.) Autovacuum would ANALYZE such a table, but a server may run with
it off (or behind), so the stages ask for it themselves: before a batch is claimed, each of the
stage's tables whose changes since its last ANALYZE exceed 50 rows + 20% of the table is
analyzed, in a short transaction of its own. (Autovacuum's default share is 10%; a workflow
cycle changes each order three times, so 20% still refreshes a long backlog every other batch
and spends half as many full reads of the table.) SKIP_LOCKED: a
table another run is analyzing right now is left to it. SQLite and MariaDB: nothing to do (their
statistics do not steer these plans).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import Text

THRESHOLD_ROWS = 50
THRESHOLD_SHARE = 0.2

_STALE = text(
    "SELECT relname FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname = ANY(:tables) "
    "AND n_mod_since_analyze > :rows + :share * GREATEST(n_live_tup, 0) ORDER BY relname"
).bindparams(bindparam("tables", type_=ARRAY(Text)))


def refresh(engine: Engine, tables: Sequence[str]) -> list[str]:
    """ANALYZE those of `tables` that changed a lot since their last ANALYZE; returns them."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        stale = list(conn.execute(_STALE, {"tables": list(tables), "rows": THRESHOLD_ROWS,
                                           "share": THRESHOLD_SHARE}).scalars())
        for table in stale:
            conn.exec_driver_sql(f'ANALYZE (SKIP_LOCKED) "{table}"')
    return stale
