"""Failing the orders a workflow stage isolated as unprocessable (domain.isolation).

The order moves to `failed` with the stage and the database's or driver's words as its
`status_reason`, recorded in `order_events` like every transition. No customer notification
is queued: what such a message would be rendered from is the data that is broken, and the
operator has to repair the row first (`ordersys status` lists failed orders with the reason).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import Connection

from ordersys_pipelines.domain import inventory
from ordersys_pipelines.domain.isolation import describe, is_data_error
from ordersys_pipelines.domain.orders.states import FAILED, HOLDS_STOCK, transition

REASON = "bad data in {stage}: {error}"


def reason(stage: str, error: str) -> str:
    return REASON.format(stage=stage, error=error)


def fail_orders(
    conn: Connection,
    errors: Mapping[int, str],
    *,
    stage: str,
    expected_from: str,
    run_id: str | None,
    now: datetime | None = None,
) -> None:
    """Fail the isolated orders `errors` (order id → what went wrong), in `expected_from`.
    Orders that hold stock give it back, unless releasing it is what fails (then the reason
    says the reservation was kept, for the operator to correct)."""
    with conn.begin_nested():  # all or nothing (domain.isolation tries again order by order)
        _fail(conn, errors, stage=stage, expected_from=expected_from, run_id=run_id, now=now)


def _fail(conn: Connection, errors: Mapping[int, str], *, stage: str, expected_from: str, run_id: str | None,
          now: datetime | None) -> None:
    reasons = {order_id: reason(stage, error) for order_id, error in errors.items()}
    if expected_from in HOLDS_STOCK:
        try:
            with conn.begin_nested():
                inventory.lock_products_of_orders(conn, reasons)
                inventory.release_reserved(conn, list(reasons), now)
        except Exception as error:  # noqa: BLE001 - only data errors are kept from the caller
            if not is_data_error(error):
                raise
            kept = f"; reserved stock not released ({describe(error)})"
            reasons = {order_id: text + kept for order_id, text in reasons.items()}
    transition(conn, reasons, FAILED, reasons, run_id, expected_from=expected_from, now=now)
