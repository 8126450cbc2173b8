"""The reconciliation where an operator meets it: `ordersys payments reconcile`, the asset check,
and the migration that records the events of callbacks settled before it."""

from __future__ import annotations

import json
from datetime import datetime

import dagster as dg
import pytest
from alembic import command
from click.testing import CliRunner
from payback_support import gateway, settle, to_awaiting_payment
from refunds_support import NO_WAIT
from sqlalchemy import insert, select, text, update

from ordersys_pipelines.assets.reconciliation import payments_reconciled
from ordersys_pipelines.cli import main
from ordersys_pipelines.db import migrate
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.db.schema import payment_callbacks
from ordersys_pipelines.domain.orders.operations import cancel
from ordersys_pipelines.domain.refunds.processing import process_batch
from ordersys_pipelines.resources.database import DatabaseResource


@pytest.fixture
def cli(settings, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args))


def _late_approval(engine):
    """O-1 cancelled while its payment was in flight, O-2 paid; settled: O-1's payback pending."""
    config = gateway(approval_rate=1.0)
    started = to_awaiting_payment(engine, config, ["O-1", "O-2"])
    with engine.begin() as conn:
        cancel(conn, ["O-1"])
    settle(engine, config)
    return config, started.initiated[1]


def _check(url: str) -> dg.AssetCheckEvaluation:
    """Execute the asset check alone, as from the asset's page."""
    defs = dg.Definitions(
        assets=[dg.AssetSpec("customer_leaderboard")],
        asset_checks=[payments_reconciled],
        jobs=[dg.define_asset_job("reconcile", selection=dg.AssetSelection.checks(payments_reconciled))],
        resources={"database": DatabaseResource(url=url)},
    )
    result = defs.resolve_job_def("reconcile").execute_in_process()
    assert result.success
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def test_reconcile_command_lists_discrepancies_and_exits_non_zero(cli, settings):
    engine = get_engine(settings.database_url)
    assert cli("payments", "reconcile").output == "reconciled: 0 approved payment(s), no discrepancies\n"
    config, ref = _late_approval(engine)

    dirty = cli("payments", "reconcile")
    assert dirty.exit_code == 1, dirty.output
    header, _, row = dirty.output.splitlines()[:3]
    assert header.split() == ["order", "payment", "approved", "order", "state", "payback", "payback", "state",
                              "problem"]
    assert row.split()[:6] == ["O-1", ref, "5.00", "cancelled", f"payback:{ref}", "pending"]
    assert "order is cancelled; its payback is pending" in row
    assert "Error: 1 discrepancy among 2 approved payment(s)" in dirty.output

    process_batch(engine, config, limit=10, policy=NO_WAIT)
    clean = cli("payments", "reconcile", "--limit", "5")
    assert clean.exit_code == 0 and "reconciled: 2 approved payment(s), no discrepancies" in clean.output
    assert cli("payments", "reconcile", "--limit", "0").exit_code == 2


def test_the_asset_check_fails_while_money_is_unmatched(engine, db_url):
    config, ref = _late_approval(engine)
    failed = _check(db_url)
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    assert failed.metadata["discrepancies"].value == 1 and failed.metadata["approved_payments"].value == 2
    assert f"payback:{ref}" in failed.metadata["first_discrepancies"].value

    process_batch(engine, config, limit=10, policy=NO_WAIT)
    passed = _check(db_url)
    assert passed.passed and "first_discrepancies" not in passed.metadata


def test_the_check_runs_with_the_leaderboard_in_the_project_definitions():
    from ordersys_pipelines.definitions import build_defs

    job = build_defs().resolve_job_def("analytics_refresh")
    assert dg.AssetCheckKey(dg.AssetKey("customer_leaderboard"), "payments_reconciled") in (
        job.asset_layer.asset_graph.asset_check_keys
    )


def test_the_migration_records_the_events_of_callbacks_settled_before_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate.upgrade(url, "0001")
    engine = get_engine(url)

    def callback(event_id, stored_as, reason=None, **event):
        payload = event.pop("payload", None) or json.dumps({"event_id": event_id, **event})
        return {"event_id": event_id, "payment_ref": event.get("payment_ref"), "payload": payload, "status": stored_as,
                "reason": reason, "received_at": datetime(2024, 3, 1), "available_at": datetime(2024, 3, 1)}

    with engine.begin() as conn:
        conn.execute(text("INSERT INTO payment_callbacks (event_id, payment_ref, payload, status, reason, "
                          "received_at, available_at) VALUES (:event_id, :payment_ref, :payload, :status, :reason, "
                          ":received_at, :available_at)"), [
            callback("e-paid", "applied", payment_ref="p1", status="approved", amount_cents=500),
            callback("e-late", "rejected", "not awaiting payment: order O-2 is cancelled", payment_ref="p2",
                     status="approved", amount_cents=700),
            callback("e-no", "applied", payment_ref="p3", status="declined", amount_cents=300),
            callback("e-forged", "rejected", "bad signature: signature does not match the payload",
                     payment_ref="p4", status="approved", amount_cents=900),
            callback("rejected-abc", "rejected", "payload is not valid JSON", payload="{not json"),
            callback("e-huge", "applied", payment_ref="p5", status="approved", amount_cents=10**30),
            callback("e-pending", "pending", payment_ref="p6", status="approved", amount_cents=100),
        ])
    migrate.upgrade(url)
    with engine.connect() as conn:
        facts = {row.event_id: (row.event_status, row.amount_cents)
                 for row in conn.execute(select(payment_callbacks))}
    assert facts == {
        "e-paid": ("approved", 500), "e-late": ("approved", 700), "e-no": ("declined", 300),
        "e-forged": (None, None), "rejected-abc": (None, None), "e-huge": ("approved", None),
        "e-pending": (None, None),  # settlement records it when it reads it
    }
    with engine.begin() as conn:  # the new columns are usable straight away
        conn.execute(update(payment_callbacks).where(payment_callbacks.c.event_id == "e-pending")
                     .values(event_status="approved", amount_cents=100))
        conn.execute(insert(payment_callbacks).values(event_id="e-new", payload="{}", event_status="declined",
                                                      amount_cents=1))
    command.downgrade(migrate.alembic_config(url), "0001")  # and the downgrade takes them away again
    with engine.connect() as conn:
        assert "event_status" not in conn.execute(select(text("*")).select_from(text("payment_callbacks"))).keys()


def test_pay_back_starts_the_paybacks_of_approvals_settled_before_them(cli, settings):
    engine = get_engine(settings.database_url)
    config = gateway(approval_rate=1.0)
    refs = to_awaiting_payment(engine, config, ["O-1", "O-2", "O-3"]).initiated
    with engine.begin() as conn:
        cancel(conn, ["O-1", "O-2"])
        # As a late approval was settled before paybacks (and recorded by migration 0004): rejected.
        conn.execute(update(payment_callbacks).where(payment_callbacks.c.payment_ref.in_([refs[1], refs[3]]))
                     .values(status="rejected", reason="not awaiting payment: order O-1 is cancelled",
                             event_status="approved", amount_cents=500))
        conn.execute(update(payment_callbacks).where(payment_callbacks.c.payment_ref == refs[2])
                     .values(status="rejected", event_status="approved", amount_cents=499))  # not the total
    before = cli("payments", "reconcile")
    assert before.exit_code == 1 and "order is cancelled and the payment was not paid back" in before.output

    started = cli("payments", "reconcile", "--pay-back")
    assert started.exit_code == 1 and "paybacks started: 1" in started.output
    assert "its payback is pending" in started.output and "approved 4.99, the order totals 5.00" in started.output
    assert "paybacks started: 0" in cli("payments", "reconcile", "--pay-back").output
    process_batch(engine, config, limit=10, policy=NO_WAIT)
    after = cli("payments", "reconcile")
    assert after.exit_code == 1 and "1 discrepancy among 3 approved payment(s)" in after.output  # O-2's 4.99 stays
    assert "O-1" not in after.output and "O-3" not in after.output
