"""The `ordersys` commands of the workflow area, and the payment webhook."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from starlette.testclient import TestClient
from workflow_helpers import add_order, add_products, gateway_config, status_counts, statuses, stock

from ordersys_pipelines.cli import main
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.db.schema import order_events, payment_callbacks
from ordersys_pipelines.domain.payments.signing import sign
from ordersys_pipelines.webhook.app import create_app


@pytest.fixture
def cli(settings, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def engine_(settings):
    return get_engine(settings.database_url)


def test_process_runs_every_stage_until_nothing_is_left(cli, engine_, monkeypatch):
    monkeypatch.setenv("ORDERSYS_GATEWAY_DUPLICATE_RATE", "0.3")
    monkeypatch.setenv("ORDERSYS_GATEWAY_CALLBACK_DELAY", "5")
    monkeypatch.setenv("ORDERSYS_BATCH_SIZE", "4")
    with engine_.begin() as conn:
        add_products(conn, {"A": 6, "B": 100})
        for i in range(10):
            add_order(conn, f"O-{i}", [("A", 1), ("B", 2)])
    result = cli("process")
    assert result.exit_code == 0, result.output
    assert "workflow" in result.output and "settlement" in result.output and "waiting" in result.output
    with engine_.connect() as conn:
        counts = status_counts(conn)
        assert set(counts) <= {"finalized", "failed"} and counts["failed"] >= 4
        assert stock(conn) == {"A": (6 - counts["finalized"], 0), "B": (100 - 2 * counts["finalized"], 0)}
        runs = set(conn.execute(select(order_events.c.run_id)).scalars())
    assert None not in runs and len(runs) >= 4  # every event carries the run that made it
    assert "done:" in result.output and "finalized" in result.output
    # Nothing left: a second call starts no run.
    assert "done: 0 run(s)" in cli("process").output


def test_process_settles_callbacks_already_due_in_the_workflow_run(cli, engine_, monkeypatch):
    """As the Definitions do by default: reserve → pay → settle in one run when the gateway
    answers at once, so no payment_settlement run is needed; with the switch off, one is."""
    monkeypatch.setenv("ORDERSYS_GATEWAY_CALLBACK_DELAY", "0")
    monkeypatch.setenv("ORDERSYS_GATEWAY_APPROVAL_RATE", "1")
    with engine_.begin() as conn:
        add_products(conn, {"A": 100})
        for i in range(6):
            add_order(conn, f"S-{i}", [("A", 1)])
    settling = cli("process", "--no-analytics")
    assert settling.exit_code == 0, settling.output
    assert " workflow " in settling.output and " settlement " not in settling.output
    with engine_.connect() as conn:
        assert status_counts(conn) == {"finalized": 6}

    monkeypatch.setenv("ORDERSYS_SETTLE_IN_WORKFLOW", "false")
    with engine_.begin() as conn:
        add_order(conn, "S-late", [("A", 1)])
    separate = cli("process", "--no-analytics")
    assert separate.exit_code == 0, separate.output
    assert " workflow " in separate.output and " settlement " in separate.output
    with engine_.connect() as conn:
        assert status_counts(conn) == {"finalized": 7}


def test_orders_show_cancel_ship_deliver(cli, engine_, tmp_path):
    with engine_.begin() as conn:
        add_products(conn, {"A": 10})
        add_order(conn, "O-1", [("A", 2)])
        add_order(conn, "O-2", [("A", 1)], status="finalized")
        add_order(conn, "O-3", [("A", 1)], status="finalized")
    cancelled = cli("orders", "cancel", "O-1", "O-2", "O-404")
    assert cancelled.exit_code == 1
    assert "cancelled: 1 (O-1)" in cancelled.output
    assert "order O-2: cannot go from finalized to cancelled" in cancelled.output
    assert "unknown: order O-404 does not exist" in cancelled.output
    refs = tmp_path / "refs.txt"
    refs.write_text("# shipped today\nO-2\nO-3\n")
    assert cli("orders", "ship", "--file", str(refs)).output.startswith("shipped: 2")
    assert cli("orders", "deliver", "O-2").exit_code == 0
    shown = cli("orders", "show", "O-1")
    assert shown.exit_code == 0
    for text in ("Order O-1", "cancelled — cancelled by operator", "Audit trail", "created", "Lines", "5.00 EUR"):
        assert text in shown.output, text
    assert cli("orders", "show", "O-nope").exit_code == 1
    with engine_.connect() as conn:
        assert statuses(conn) == {"O-1": "cancelled", "O-2": "delivered", "O-3": "shipped"}


def test_payments_callback_from_a_file(cli, engine_, settings, tmp_path):
    event = tmp_path / "event.json"
    event.write_bytes(json.dumps({"event_id": "evt-1", "payment_ref": "pay_1", "status": "approved",
                                  "amount_cents": 100, "reason": None}).encode())
    assert cli("payments", "callback", "--file", str(event), "--sign").output.strip() == "stored: evt-1"
    header = sign(event.read_bytes(), settings.gateway_secret)
    assert cli("payments", "callback", "--file", str(event), "--signature", header).output.strip() == "duplicate: evt-1"
    forged = cli("payments", "callback", "--file", str(event), "--signature", sign(event.read_bytes(), "guess"))
    assert forged.exit_code == 1 and "signature does not match the payload" in forged.output
    assert cli("payments", "callback", "--file", str(event)).exit_code == 1  # neither --signature nor --sign
    with engine_.connect() as conn:
        rows = conn.execute(select(payment_callbacks.c.source, payment_callbacks.c.status,
                                   payment_callbacks.c.deliveries).order_by(payment_callbacks.c.id)).all()
    assert rows == [("cli", "pending", 2), ("cli", "rejected", 1)]


def test_webhook_verifies_before_storing(engine):
    config = gateway_config()
    client = TestClient(create_app(engine, config))
    body = json.dumps({"event_id": "evt-9", "payment_ref": "pay_9", "status": "declined", "amount_cents": 5,
                       "reason": "card_expired"}).encode()
    ok = client.post("/payments/callback", content=body, headers={"Ordersys-Signature": sign(body, config.secret)})
    assert ok.status_code == 200 and ok.json() == {"status": "stored", "event_id": "evt-9"}
    again = client.post("/payments/callback", content=body, headers={"Ordersys-Signature": sign(body, config.secret)})
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    forged = client.post("/payments/callback", content=body, headers={"Ordersys-Signature": sign(body, "nope")})
    assert forged.status_code == 400 and forged.json() == {"status": "rejected",
                                                           "reason": "signature does not match the payload"}
    stale = client.post("/payments/callback", content=body,
                        headers={"Ordersys-Signature": sign(body, config.secret, timestamp=1_600_000_000)})
    assert stale.status_code == 400 and "tolerance 300 s" in stale.json()["reason"]
    unsigned = client.post("/payments/callback", content=body)
    assert unsigned.status_code == 400 and "missing Ordersys-Signature" in unsigned.json()["reason"]
    with engine.connect() as conn:
        rows = conn.execute(select(payment_callbacks.c.status, payment_callbacks.c.deliveries)
                            .order_by(payment_callbacks.c.id)).all()
    assert rows == [("pending", 2), ("rejected", 1), ("rejected", 1), ("rejected", 1)]
