"""Orders whose payments are in flight, for the late-approval tests."""

from __future__ import annotations

from datetime import timedelta

from workflow_helpers import BASE_DATE, add_order, add_products, gateway_config

from ordersys_pipelines.domain.orders.reservation import reserve_batch
from ordersys_pipelines.domain.payments.initiation import initiate_batch
from ordersys_pipelines.domain.payments.settlement import settle_batch

RUN = dict(batch_size=1000, claimant="run-1", lease_seconds=60, run_id="run-1")


def gateway(**overrides):
    """The test gateway; refunds always succeed unless asked otherwise."""
    return gateway_config(**{"refund_failure_rate": 0.0, **overrides})


def to_awaiting_payment(engine, config, refs: list[str], units: int = 2):
    """Orders `refs` of `units` units of A each, reserved and sent to the gateway."""
    with engine.begin() as conn:
        add_products(conn, {"A": 100})
        for i, ref in enumerate(refs):
            add_order(conn, ref, [("A", units)], date=BASE_DATE + timedelta(minutes=i))
    reserve_batch(engine, **RUN)
    return initiate_batch(engine, config=config, **RUN)


def settle(engine, config, **overrides):
    return settle_batch(engine, config=config, **{**RUN, **overrides})
