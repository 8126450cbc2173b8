"""The simulated payment gateway. Its state lives in the database (`gateway_calls` and the
`payment_callbacks` inbox), so it behaves the same across processes and runs.

`initiate` answers a batch of payment requests at once: each order gets a unique payment
reference, the call is recorded, and the gateway's answer is delivered later as a signed
callback event in the inbox (visible after the callback delay; some events twice). Outcomes
derive from a hash of the seed and the payment reference, so a seeded run is reproducible.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, Connection, Text, insert, literal, select

from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.rowsets import rowset
from ordersys_pipelines.db.schema import gateway_calls
from ordersys_pipelines.domain.payments.callbacks import InboxEntry, epoch, store
from ordersys_pipelines.domain.payments.config import GatewayConfig
from ordersys_pipelines.domain.payments.signing import sign


@dataclass(frozen=True)
class PaymentRequest:
    order_id: int
    order_ref: str
    amount_cents: int


@dataclass(frozen=True)
class Decision:
    approved: bool
    reason: str | None
    delivered_twice: bool


def _digest(config: GatewayConfig, *parts: str) -> bytes:
    return hashlib.sha256(":".join([str(config.seed), *parts]).encode()).digest()


def _unit(data: bytes) -> float:
    """8 bytes of a hash as a number in [0, 1)."""
    return int.from_bytes(data[:8], "big") / 2**64


def new_payment_ref(config: GatewayConfig, order_ref: str) -> str:
    if config.seed is None:
        return "pay_" + secrets.token_hex(12)
    return "pay_" + _digest(config, "payment", order_ref).hex()[:24]


def new_event_id(config: GatewayConfig, payment_ref: str) -> str:
    if config.seed is None:
        return "evt_" + secrets.token_hex(12)
    return "evt_" + _digest(config, "event", payment_ref).hex()[:24]


def decide(config: GatewayConfig, payment_ref: str) -> Decision:
    """The gateway's answer for a payment: a pure function of the seed and the reference."""
    digest = _digest(config, "decision", payment_ref)
    approved = _unit(digest[0:8]) < config.approval_rate
    reason = None if approved else config.decline_reasons[digest[8] % len(config.decline_reasons)]
    return Decision(approved, reason, _unit(digest[9:17]) < config.duplicate_rate)


def callback_payload(
    event_id: str, payment_ref: str, approved: bool, amount_cents: int, reason: str | None, created_at: datetime
) -> bytes:
    event = {
        "event_id": event_id,
        "payment_ref": payment_ref,
        "status": "approved" if approved else "declined",
        "amount_cents": amount_cents,
        "reason": reason,
        "created_at": created_at.isoformat(timespec="seconds") + "Z",
    }
    return json.dumps(event, separators=(",", ":"), sort_keys=True).encode()


def initiate(
    conn: Connection, requests: Sequence[PaymentRequest], config: GatewayConfig, now: datetime | None = None
) -> dict[int, str]:
    """Start a payment per request; returns order id → payment reference. The callbacks land
    in the inbox with `available_at = now + callback delay`."""
    if not requests:
        return {}
    now = now or utcnow()
    delivered_at = now + timedelta(seconds=config.callback_delay_seconds)
    signed_at = epoch(delivered_at)
    refs: dict[int, str] = {}
    calls, entries, twice = [], [], []
    for request in requests:
        ref = new_payment_ref(config, request.order_ref)
        refs[request.order_id] = ref
        decision = decide(config, ref)
        calls.append((ref, request.amount_cents, "approved" if decision.approved else "declined", decision.reason))
        event_id = new_event_id(config, ref)
        payload = callback_payload(event_id, ref, decision.approved, request.amount_cents, decision.reason, delivered_at)
        entry = InboxEntry(event_id, ref, payload.decode(), sign(payload, config.secret, signed_at), signed_at)
        entries.append(entry)
        if decision.delivered_twice:
            twice.append(entry)

    rows = rowset(
        conn, calls,
        [("payment_ref", Text()), ("amount_cents", BigInteger()), ("outcome", Text()), ("reason", Text())],
        "calls",
    )
    conn.execute(
        insert(gateway_calls).from_select(
            ["kind", "reference", "payment_ref", "amount_cents", "outcome", "reason", "created_at"],
            select(literal("payment"), rows.c.payment_ref, rows.c.payment_ref, rows.c.amount_cents,
                   rows.c.outcome, rows.c.reason, literal(now)),
        )
    )
    store(conn, entries, source="gateway", received_at=now, available_at=delivered_at)
    # At-least-once delivery: the second copy goes through the same duplicate handling.
    store(conn, twice, source="gateway", received_at=now, available_at=delivered_at)
    return refs
