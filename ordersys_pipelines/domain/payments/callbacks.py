"""The payment callback inbox: every delivery is verified and stored once, bad ones as rejected.

A callback arrives as a raw body plus the `Ordersys-Signature` header (`t=..,v1=..`). It is
stored `pending` when the signature matches and its timestamp lies within the tolerance of the
delivery time; settlement applies it later. A second delivery of the same `event_id` only
increments `deliveries` (a duplicate). A callback that cannot be trusted or read is stored as
`rejected` with the reason under a synthetic event id derived from its bytes — never under the
event id it claims, so a forgery cannot block the genuine event.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Connection, Text, literal, select, true

from ordersys_pipelines.db.dialect import dialect_insert, is_mysql
from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.rowsets import rowset
from ordersys_pipelines.db.schema import payment_callbacks
from ordersys_pipelines.domain.payments.config import GatewayConfig
from ordersys_pipelines.domain.payments.signing import SignatureError, verify

SIGNATURE_HEADER = "Ordersys-Signature"
STATUSES = ("approved", "declined")


class CallbackError(ValueError):
    """A callback payload that cannot be used; the message is the rejection reason."""


@dataclass(frozen=True)
class Receipt:
    outcome: str  # stored | duplicate | rejected
    event_id: str
    reason: str | None = None


@dataclass(frozen=True)
class InboxEntry:
    event_id: str
    payment_ref: str | None
    payload: str
    signature: str | None
    signed_at: int | None
    status: str = "pending"  # pending | rejected
    reason: str | None = None


def epoch(moment: datetime) -> int:
    """Epoch seconds of a naive UTC datetime."""
    return int(moment.replace(tzinfo=UTC).timestamp())


def parse_event(raw: bytes | str) -> dict[str, Any]:
    """The callback's fields, checked; CallbackError names what is wrong."""
    try:
        event = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise CallbackError("payload is not valid JSON") from None
    if not isinstance(event, dict):
        raise CallbackError("payload is not a JSON object")
    for name, limit in (("event_id", 100), ("payment_ref", 64)):
        value = event.get(name)
        if not isinstance(value, str) or not value or len(value) > limit:
            raise CallbackError(f"{name} missing or not a string of at most {limit} characters")
    if event.get("status") not in STATUSES:
        raise CallbackError(f"status {event.get('status')!r} is not one of {', '.join(STATUSES)}")
    amount = event.get("amount_cents")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
        raise CallbackError(f"amount_cents {amount!r} is not a non-negative integer (cents)")
    if event.get("reason") is not None and not isinstance(event["reason"], str):
        raise CallbackError("reason is not a string")
    return event


def store(
    conn: Connection, entries: Sequence[InboxEntry], *, source: str, received_at: datetime, available_at: datetime
) -> dict[str, int]:
    """Insert the entries (one statement); an event id already stored counts one more delivery.
    Returns event id → deliveries after this call."""
    if not entries:
        return {}
    rows = rowset(
        conn,
        ((e.event_id, e.payment_ref, e.payload, e.signature, e.signed_at, e.status, e.reason) for e in entries),
        [("event_id", Text()), ("payment_ref", Text()), ("payload", Text()), ("signature", Text()),
         ("signed_at", BigInteger()), ("status", Text()), ("reason", Text())],
        "inbox",
    )
    source_rows = select(
        rows.c.event_id, rows.c.payment_ref, rows.c.payload, rows.c.signature, rows.c.signed_at, rows.c.status,
        rows.c.reason, literal(source), literal(received_at), literal(available_at),
    ).where(true())  # SQLite needs a WHERE before ON CONFLICT in INSERT … SELECT
    statement = dialect_insert(conn, payment_callbacks).from_select(
        ["event_id", "payment_ref", "payload", "signature", "signed_at", "status", "reason", "source",
         "received_at", "available_at"],
        source_rows,
    )
    more = {"deliveries": payment_callbacks.c.deliveries + 1}
    if is_mysql(conn):
        # event_id is the table's only unique key besides the id, so ON DUPLICATE KEY means the same
        # as the conflict target elsewhere; the counts are read back from the rows just written.
        conn.execute(statement.on_duplicate_key_update(more))
        written = select(payment_callbacks.c.event_id, payment_callbacks.c.deliveries).where(
            payment_callbacks.c.event_id.in_([e.event_id for e in entries])
        )
        return dict(conn.execute(written).all())
    statement = statement.on_conflict_do_update(index_elements=["event_id"], set_=more)
    return dict(conn.execute(statement.returning(payment_callbacks.c.event_id, payment_callbacks.c.deliveries)).all())


def _rejected_id(raw: bytes, header: str | None) -> str:
    return "rejected-" + hashlib.sha256((header or "").encode() + b"\n" + raw).hexdigest()[:40]


def receive(
    conn: Connection,
    raw_payload: bytes,
    signature_header: str | None,
    source: str,
    config: GatewayConfig,
    now: datetime | None = None,
) -> Receipt:
    """Verify one delivered callback and put it in the inbox (see the module doc)."""
    now = now or utcnow()
    text = raw_payload.decode("utf-8", errors="replace")
    signed_at = None
    try:
        if not signature_header:
            raise CallbackError(f"missing {SIGNATURE_HEADER} header")
        if len(signature_header) > 200:
            raise CallbackError(f"{SIGNATURE_HEADER} header longer than 200 characters")
        signed_at = verify(raw_payload, signature_header, config.secret, config.callback_tolerance_seconds, epoch(now))
        event = parse_event(raw_payload)
    except (SignatureError, CallbackError) as exc:
        reason = str(exc)
        event_id = _rejected_id(raw_payload, signature_header)
        try:
            claimed_ref = json.loads(raw_payload).get("payment_ref")
        except (ValueError, AttributeError, UnicodeDecodeError):
            claimed_ref = None
        entry = InboxEntry(event_id, claimed_ref if isinstance(claimed_ref, str) else None, text,
                           (signature_header or "")[:200] or None, signed_at, "rejected", reason)
        store(conn, [entry], source=source, received_at=now, available_at=now)
        return Receipt("rejected", event_id, reason)
    entry = InboxEntry(event["event_id"], event["payment_ref"], text, signature_header, signed_at)
    deliveries = store(conn, [entry], source=source, received_at=now, available_at=now)[entry.event_id]
    return Receipt("stored" if deliveries == 1 else "duplicate", entry.event_id)
