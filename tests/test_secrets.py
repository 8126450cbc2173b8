"""Credentials reach the resources as `dg.EnvVar`: the repository snapshot the webserver serves
holds none of their values, while runs, `ordersys process` and the CLI still use them."""

from __future__ import annotations

import json
import uuid

import dagster as dg
import pytest
from click.testing import CliRunner
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value
from sqlalchemy import select
from workflow_helpers import add_one_unit_orders, add_products, status_counts

from ordersys_pipelines.cli import main
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.db.schema import payment_callbacks
from ordersys_pipelines.definitions import build_defs
from ordersys_pipelines.domain.payments.signing import SignatureError, sign, verify

SECRET_VARIABLES = (
    "ORDERSYS_GATEWAY_SECRET",
    "ORDERSYS_SMTP_USERNAME",
    "ORDERSYS_SMTP_PASSWORD",
    "ORDERSYS_NOTIFY_WEBHOOK_SECRET",
)


@pytest.fixture
def secrets(settings, monkeypatch) -> dict[str, str]:
    """Distinctive values (with characters JSON escapes) for every credential."""
    values = {name: f"{name.lower()}-{uuid.uuid4().hex}-ü\"/" for name in SECRET_VARIABLES}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ORDERSYS_NOTIFY_CHANNEL", "webhook")
    monkeypatch.setenv("ORDERSYS_NOTIFY_WEBHOOK_URL", "http://127.0.0.1:9/notify")
    monkeypatch.setenv("ORDERSYS_GATEWAY_APPROVAL_RATE", "1")
    monkeypatch.setenv("ORDERSYS_GATEWAY_DUPLICATE_RATE", "0")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return values


# Dagster's own snapshot code reads a deprecated schedule property; nothing of ours.
@pytest.mark.filterwarnings("ignore:Property `ScheduleDefinition.environment_vars` is deprecated:DeprecationWarning")
def test_the_repository_snapshot_holds_no_secret_value(secrets):
    snapshot = serialize_value(RepositorySnap.from_def(build_defs().get_repository_def()))
    for name, value in secrets.items():
        for form in (value, json.dumps(value)[1:-1], value.split("-")[1]):
            assert form not in snapshot, name
        assert name in snapshot  # the resource names the variable instead


def test_a_run_signs_and_verifies_with_the_secret_from_the_environment(secrets, settings):
    secret = secrets["ORDERSYS_GATEWAY_SECRET"]
    engine = get_engine(settings.database_url)
    with engine.begin() as conn:
        add_products(conn, {"A": 10})
        add_one_unit_orders(conn, 2, "A")
    defs = build_defs()
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("order_workflow").execute_in_process(instance=instance).success
    with engine.connect() as conn:
        signed = conn.execute(select(payment_callbacks.c.payload, payment_callbacks.c.signature)).all()
    assert len(signed) == 2
    for payload, signature in signed:  # the simulated gateway signed with the value, not the name
        verify(payload.encode(), signature, secret, 300)
        with pytest.raises(SignatureError):
            verify(payload.encode(), signature, "ORDERSYS_GATEWAY_SECRET", 300)
    assert defs.resolve_job_def("payment_settlement").execute_in_process(instance=instance).success
    with engine.connect() as conn:
        assert status_counts(conn) == {"finalized": 2}


def test_the_cli_accepts_a_callback_signed_with_the_secret_from_the_environment(secrets, settings, tmp_path):
    event = tmp_path / "event.json"
    event.write_bytes(json.dumps({"event_id": "evt-env", "payment_ref": "pay_1", "status": "approved",
                                  "amount_cents": 100, "reason": None}).encode())
    runner = CliRunner()
    header = sign(event.read_bytes(), secrets["ORDERSYS_GATEWAY_SECRET"])
    accepted = runner.invoke(main, ["payments", "callback", "--file", str(event), "--signature", header])
    assert accepted.exit_code == 0 and accepted.output.strip() == "stored: evt-env"
    by_name = sign(event.read_bytes(), "ORDERSYS_GATEWAY_SECRET")
    refused = runner.invoke(main, ["payments", "callback", "--file", str(event), "--signature", by_name])
    assert refused.exit_code == 1 and "signature does not match the payload" in refused.output


def test_ordersys_process_runs_with_the_secret_from_the_environment(secrets, settings):
    engine = get_engine(settings.database_url)
    with engine.begin() as conn:
        add_products(conn, {"A": 10})
        add_one_unit_orders(conn, 3, "A")
    result = CliRunner().invoke(main, ["process", "--quiet", "--max-wait", "5"])
    assert result.exit_code == 0, result.output
    with engine.connect() as conn:
        assert status_counts(conn) == {"finalized": 3}
        assert conn.execute(select(payment_callbacks.c.status)).scalars().all() == ["applied"] * 3
