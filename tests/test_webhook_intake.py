"""Hostile callback deliveries: every malformed input is a 4xx with a reason and a bounded record,
the record is pruned to its cap, and the secret can be rotated without refusing a callback.
(The uvicorn-served memory and streaming cases are in test_webhook_server.py.)"""

from __future__ import annotations

import hashlib
import json
from functools import partial

import pytest
from alembic import command
from click.testing import CliRunner
from sqlalchemy import func, select, update
from starlette.testclient import TestClient
from workflow_helpers import add_order, add_products, gateway_config, statuses

from ordersys_pipelines.cli import main
from ordersys_pipelines.db import migrate
from ordersys_pipelines.db.engine import get_engine, utcnow
from ordersys_pipelines.db.schema import payment_callbacks
from ordersys_pipelines.domain.orders.reservation import reserve_batch
from ordersys_pipelines.domain.payments.callbacks import SIGNATURE_HEADER, deliver, receive
from ordersys_pipelines.domain.payments.initiation import initiate_batch
from ordersys_pipelines.domain.payments.settlement import settle_batch
from ordersys_pipelines.domain.payments.signing import sign
from ordersys_pipelines.webhook.app import create_app

RUN = dict(batch_size=1000, claimant="run-1", lease_seconds=60, run_id="run-1")
CALLBACK = "/payments/callback"


def _event(**fields) -> dict:
    return {"event_id": "evt_1", "payment_ref": "pay_1", "status": "approved", "amount_cents": 250,
            "reason": None, **fields}


def _body(**fields) -> bytes:
    return json.dumps(_event(**fields)).encode()


def _signed(body: bytes, secret: str = "test-secret") -> dict:
    return {SIGNATURE_HEADER: sign(body, secret)}


def _rejections(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(
            select(payment_callbacks).where(payment_callbacks.c.payload_kept == "head").order_by(payment_callbacks.c.id)
        ).all()


DEEP = b"[" * 30_000 + b"]" * 30_000  # within 64 KB; deeper than Python's recursion limit
NESTED = json.dumps(_event(extra=[[[[[[[[[[1]]]]]]]]]])).encode()

# (name, body, headers or None for "signed with the current secret", status, reason fragment)
MALFORMED = [
    ("nul-byte", b'{"event_id":"evt_1\x00","payment_ref":"pay_1"}', None, 400, "NUL byte"),
    ("nul-unsigned", b"\x00" * 1000, {}, 400, "missing Ordersys-Signature header"),
    ("escaped-nul-in-event-id", _body(event_id="evt\\u0000x").replace(b"\\\\", b"\\"), None, 400,
     "event_id 'evt\\x00x' has characters other than printable ASCII"),
    ("non-ascii-signature", _body(), {SIGNATURE_HEADER: "t=1,v1=éé".encode()}, 400, "malformed signature header"),
    ("signature-with-plus", _body(), {SIGNATURE_HEADER: "t=+1,v1=" + "0" * 64}, 400, "malformed signature header"),
    ("invalid-utf8", b'{"event_id":"\xff\xfe","payment_ref":"pay_1"}', None, 400, "not valid UTF-8 (byte 13)"),
    ("utf16", _body().decode().encode("utf-16"), None, 400, "NUL byte"),
    ("not-an-object", b"[1, 2, 3]", None, 400, "not a JSON object"),
    ("not-json", b"event_id=evt_1", None, 400, "payload is not valid JSON"),
    ("deeply-nested", DEEP, None, 400, "nests deeper than 8 levels"),
    ("nested-value", NESTED, None, 400, "nests deeper than 8 levels"),
    ("huge-amount", _body(amount_cents=10**30), None, 400, "of at most 2^63-1"),
    ("five-thousand-digits", _body().replace(b"250", b"9" * 5000), None, 400, "payload is not valid JSON"),
    ("infinite-amount", _body().replace(b"250", b"1e400"), None, 400, "amount_cents inf is not"),
    ("nan-amount", _body().replace(b"250", b"NaN"), None, 400, "NaN is not a number"),
    ("duplicate-keys", _body()[:-1] + b', "status": "declined"}', None, 400, "duplicate key 'status'"),
    ("reserved-event-id", _body(event_id="rejected-0123"), None, 400, "reserved for rejected deliveries"),
    ("lone-surrogate-reason", _body(reason="\ud800"), None, 400, "reason is not a printable string"),
    ("control-in-reason", _body(reason="card\nexpired"), None, 400, "reason is not a printable string"),
    ("wrong-content-type", _body(), {"content-type": "text/plain"}, 415, "is not application/json"),
    ("latin1-charset", _body(), {"content-type": "application/json; charset=latin-1"}, 415, "not application/json"),
    ("too-large", b" " * (64 * 1024 + 1), None, 413, "exceeds the 65536-byte limit"),
]


@pytest.mark.parametrize(("body", "headers", "status", "reason"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_every_malformed_delivery_is_a_4xx_with_its_reason_and_a_bounded_record(engine, body, headers, status, reason):
    config = gateway_config()
    client = TestClient(create_app(engine, config))
    sent_at = utcnow()
    response = client.post(CALLBACK, content=body, headers=_signed(body) if headers is None else headers)
    assert response.status_code == status
    assert response.json()["status"] == "rejected" and reason in response.json()["reason"]
    [record] = _rejections(engine)
    assert (record.status, record.source, record.remote_addr) == ("rejected", "webhook", "testclient")
    assert reason in record.reason and record.event_id.startswith("rejected-")
    assert sent_at <= record.received_at <= utcnow()
    assert "\x00" not in record.payload and len(record.payload) <= 1600
    if status != 413:  # a refused Content-Length is not read at all
        assert (record.body_bytes, record.body_sha256) == (len(body), hashlib.sha256(body).hexdigest())
    assert record.payment_ref in (None, "pay_1")


def test_a_valid_callback_is_stored_whole_with_its_size_hash_and_sender(engine):
    config = gateway_config()
    client = TestClient(create_app(engine, config))
    body = _body(note="ü" * 1000)
    response = client.post(CALLBACK, content=body, headers={**_signed(body), "content-type": "application/json"})
    assert response.json() == {"status": "stored", "event_id": "evt_1"}
    with engine.connect() as conn:
        row = conn.execute(select(payment_callbacks)).one()
    assert (row.payload.encode(), row.payload_kept, row.body_bytes) == (body, "whole", len(body))
    assert (row.body_sha256, row.remote_addr) == (hashlib.sha256(body).hexdigest(), "testclient")


def test_the_rejected_record_keeps_only_the_newest_to_its_cap_and_spares_real_events(engine):
    config = gateway_config(rejected_deliveries_kept=5)
    with engine.begin() as conn:
        receive(conn, _body(), sign(_body(), config.secret), "gateway", config)
        settled_badly = receive(conn, _body(event_id="evt_2"), sign(_body(event_id="evt_2"), config.secret),
                                "gateway", config)
        conn.execute(update(payment_callbacks).where(payment_callbacks.c.event_id == settled_badly.event_id)
                     .values(status="rejected", reason="unknown payment reference: pay_1"))
    junk = [b"junk %d " % i + b"x" * 60_000 for i in range(12)]
    receipts = [deliver(engine, partial(receive, raw_payload=body, signature_header=None, source="webhook",
                                        config=config), config) for body in junk]
    # The same junk again is the same record, one more delivery.
    again = deliver(engine, partial(receive, raw_payload=junk[-1], signature_header=None, source="webhook",
                                    config=config), config)
    assert again.event_id == receipts[-1].event_id
    kept = _rejections(engine)
    assert [r.event_id for r in kept] == [r.event_id for r in receipts[-5:]]
    assert kept[-1].deliveries == 2 and all(r.body_bytes > 60_000 and len(r.payload) <= 1600 for r in kept)
    with engine.connect() as conn:
        whole = dict(conn.execute(select(payment_callbacks.c.event_id, payment_callbacks.c.status)
                                  .where(payment_callbacks.c.payload_kept == "whole")).all())
    assert whole == {"evt_1": "pending", "evt_2": "rejected"}


def _awaiting_payment(engine, config, count: int) -> dict[int, str]:
    with engine.begin() as conn:
        add_products(conn, {"A": 10})
        for i in range(count):
            add_order(conn, f"O-{i}", [("A", 1)])
    reserve_batch(engine, **RUN)
    return initiate_batch(engine, config=config, **RUN).initiated


def test_callbacks_signed_with_the_previous_secret_are_accepted_during_a_rotation(engine):
    before = gateway_config(secret="old-secret")
    refs = _awaiting_payment(engine, before, 3)  # the gateway signed these with the old secret
    after = gateway_config(secret="new-secret", previous_secrets=("old-secret",))
    client = TestClient(create_app(engine, after))
    with engine.begin() as conn:
        conn.execute(update(payment_callbacks).values(status="applied"))
        genuine = {ref: json.loads(p) for ref, p in conn.execute(select(payment_callbacks.c.payment_ref,
                                                                        payment_callbacks.c.payload))}
    bodies = {ref: json.dumps({**genuine[ref], "event_id": f"evt_{n}"}).encode() for n, ref in refs.items()}
    old = client.post(CALLBACK, content=bodies[refs[1]], headers=_signed(bodies[refs[1]], "old-secret"))
    new = client.post(CALLBACK, content=bodies[refs[2]], headers=_signed(bodies[refs[2]], "new-secret"))
    # Several v1 values in one header: any one that matches an accepted secret will do.
    body3 = bodies[refs[3]]
    t, v1 = sign(body3, "new-secret").split(",")
    both = client.post(CALLBACK, content=body3, headers={SIGNATURE_HEADER: f"{t},v1={'0' * 64},{v1},v0=legacy"})
    assert [r.json()["status"] for r in (old, new, both)] == ["stored", "stored", "stored"]
    retired = client.post(CALLBACK, content=bodies[refs[1]], headers=_signed(bodies[refs[1]], "retired-secret"))
    assert retired.status_code == 400 and retired.json()["reason"] == "signature does not match the payload"
    # A replay of an accepted callback is still one event, applied once.
    replay = client.post(CALLBACK, content=bodies[refs[1]], headers=_signed(bodies[refs[1]], "old-secret"))
    assert replay.json() == {"status": "duplicate", "event_id": "evt_1"}
    # Settlement re-verifies against the same accepted secrets.
    result = settle_batch(engine, config=after, **RUN)
    assert sorted(result.finalized) == [1, 2, 3] and result.duplicates == 1 and not result.rejected
    with engine.connect() as conn:
        assert set(statuses(conn).values()) == {"finalized"}
        assert conn.execute(select(func.count()).where(payment_callbacks.c.status == "pending")).scalar() == 0


def test_after_the_rotation_ends_the_retired_secret_is_refused(engine):
    config = gateway_config(secret="new-secret")
    body = _body()
    response = TestClient(create_app(engine, config)).post(CALLBACK, content=body, headers=_signed(body, "old-secret"))
    assert response.status_code == 400 and "does not match" in response.json()["reason"]


def test_secrets_never_show_in_the_config_or_settings_display(monkeypatch):
    from ordersys_pipelines.settings import Settings

    monkeypatch.setenv("ORDERSYS_GATEWAY_PREVIOUS_SECRETS", " old-one , older-one ,")
    settings = Settings.from_env()
    assert settings.gateway_previous_secrets == ("old-one", "older-one")
    config = gateway_config(secret="current", previous_secrets=settings.gateway_previous_secrets)
    assert config.accepted_secrets == ("current", "old-one", "older-one")
    shown = repr(config) + repr(settings) + str(settings.as_table())
    assert "old-one" not in shown and "current" not in repr(config)


@pytest.fixture
def cli(settings, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"event_id":"evt_1\x00"}', "payload contains a NUL byte"),
        (b'{"event_id":"\xc3\x28"}', "not valid UTF-8"),
        (_body(event_id="evt\\u0000x").replace(b"\\\\", b"\\"), "has characters other than printable ASCII"),
        (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
        (b"7" * (64 * 1024 + 10), "body larger than 65536 bytes"),
    ],
    ids=["nul", "invalid-utf8", "escaped-nul", "duplicate-keys", "too-large"],
)
def test_the_callback_command_refuses_malformed_files_with_the_reason(cli, engine, tmp_path, content, reason):
    event = tmp_path / "event.json"
    event.write_bytes(content)
    result = cli("payments", "callback", "--file", str(event), "--sign")
    assert result.exit_code == 1 and reason in result.output
    [record] = _rejections(engine)
    assert record.source == "cli" and reason in record.reason and len(record.payload) <= 1600
    assert record.body_bytes == min(len(content), 64 * 1024 + 1)


def test_the_migration_shrinks_junk_stored_whole_before_it(db_url):
    config = migrate.alembic_config(db_url)
    command.downgrade(config, "0005-1")  # the schema as it was, whatever revision precedes 0005
    engine = get_engine(db_url)
    engine.dispose()
    junk = "é" + "j" * 60_000
    with engine.begin() as conn:  # only columns the older schema has
        conn.execute(payment_callbacks.insert(), [
            {"event_id": "rejected-" + "0" * 40, "payload": junk, "status": "rejected", "reason": "junk"},
            {"event_id": "evt_1", "payload": _body().decode(), "status": "rejected", "reason": "unknown ref"},
        ])
    migrate.upgrade(db_url)
    engine.dispose()
    with engine.connect() as conn:
        rows = conn.execute(select(payment_callbacks.c.event_id, payment_callbacks.c.payload_kept,
                                   payment_callbacks.c.body_bytes, payment_callbacks.c.payload)
                            .order_by(payment_callbacks.c.id)).all()
    assert rows == [("rejected-" + "0" * 40, "head", 60_002, junk[:400]), ("evt_1", "whole", None, _body().decode())]
