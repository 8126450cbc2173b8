"""The payments reconciliation as an asset check.

It is attached to `customer_leaderboard`, the net revenue after refunds: money the gateway
captured that is neither an order's payment nor paid back is missing from those figures. It runs
whenever the leaderboard is materialized (the analytics refresh, hourly) and from the asset's
page on its own; it does not block the leaderboard (severity ERROR, not blocking).
"""

import dagster as dg

from ordersys_pipelines.db.engine import reading
from ordersys_pipelines.domain.payments.reconciliation import reconcile
from ordersys_pipelines.resources.database import DatabaseResource

_SHOWN = 25


@dg.asset_check(
    asset="customer_leaderboard",
    name="payments_reconciled",
    blocking=False,
    description=(
        "Every payment the gateway approved belongs to a paid order (or one still awaiting payment) or has "
        "been paid back in full; lists any that does not (`ordersys payments reconcile`)."
    ),
)
def payments_reconciled(database: DatabaseResource) -> dg.AssetCheckResult:
    with reading(database.engine) as conn:
        result = reconcile(conn, limit=_SHOWN)
    metadata = {"approved_payments": result.approved_payments, "discrepancies": result.discrepancy_count}
    if not result.clean:
        metadata["first_discrepancies"] = dg.MetadataValue.md(result.table("github"))
    return dg.AssetCheckResult(passed=result.clean, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata)


defs = dg.Definitions(asset_checks=[payments_reconciled])
