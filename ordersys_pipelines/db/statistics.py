"""Fresh planner statistics during a long backlog, without relying on autovacuum.

A workflow run over a large backlog changes most rows of `orders` (every status moves on), and
left stale, the statistics go on describing the states as they were at the import. Autovacuum
would ANALYZE such a table, but a server may run with it off (or behind), so the stages ask for
it themselves: before a batch is claimed, each of the stage's tables whose changes since its
last ANALYZE exceed 50 rows + a share of the table is analyzed, in a short transaction of its
own. SKIP_LOCKED: a table another run is analyzing right now is left to it. SQLite and MariaDB:
nothing to do (their statistics do not steer these plans).

The share is 20%, but for `orders` the whole table (`ORDERS_SHARE`): the workflow finds its
orders and callbacks through partial indexes of the active states (migrations 0007, 0008), whose
plans hold whatever the statistics say, while an ANALYZE of 150,000 orders reads the whole table
and, at 20% (a workflow cycle writes each order three times), ran before every batch.
`notifications` is refreshed on the same terms before each dispatch batch: never analyzed since
the workflow wrote a backlog of them, the statistics count a few hundred active rows, and the
claim reads its partial index with a bitmap scan and a sort of every active entry (65 ms for a
1,000-row batch at 66,000 due; with statistics that know them, an index scan stopped at the
LIMIT: 1 ms), which also never marks the dead entries of sent notifications.
`payment_callbacks` is not refreshed at all: settlement finds the due ones through the index of
the pending ones.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import Text

THRESHOLD_ROWS = 50
THRESHOLD_SHARE = 0.2
# A workflow cycle writes each order three times: a third of a backlog's states move on between two.
ORDERS_SHARE = 1.0
# Dispatch writes each notification twice (claimed, sent): the backlog's share moves on between two.
NOTIFICATIONS_SHARE = 1.0

_STALE = text(
    "SELECT relname FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname = ANY(:tables) "
    "AND n_mod_since_analyze > :rows + :share * GREATEST(n_live_tup, 0) ORDER BY relname"
).bindparams(bindparam("tables", type_=ARRAY(Text)))


def refresh(engine: Engine, tables: Sequence[str], *, share: float = THRESHOLD_SHARE) -> list[str]:
    """ANALYZE those of `tables` that changed by more than 50 rows + `share` of the table since
    their last ANALYZE; returns them."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        stale = list(conn.execute(_STALE, {"tables": list(tables), "rows": THRESHOLD_ROWS,
                                           "share": share}).scalars())
        for table in stale:
            conn.exec_driver_sql(f'ANALYZE (SKIP_LOCKED) "{table}"')
    return stale
