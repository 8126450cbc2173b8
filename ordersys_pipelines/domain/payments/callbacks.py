"""The payment callback inbox: every delivery is verified and stored once, bad ones as rejected.

A callback arrives as a raw body (at most 64 KB) plus the `Ordersys-Signature` header
(`t=..,v1=..`). It is stored `pending`, whole, when a signature matches one of the accepted
secrets and its timestamp lies within the tolerance of the delivery time; settlement applies it
later. A second delivery of the same `event_id` only increments `deliveries` (a duplicate).

A delivery that cannot be trusted or read is stored as `rejected` with the reason under a
synthetic event id derived from its bytes — never under the event id it claims, so a forgery
cannot block the genuine event — and as a bounded record only: its size, SHA-256, the sender's
address and its first few hundred bytes, escaped (`payload_kept = 'head'`). Those records are
pruned to the newest `rejected_deliveries_kept`, so junk cannot grow the inbox without bound.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import BigInteger, Connection, Engine, Text, delete, literal, select, true
from sqlalchemy.exc import DBAPIError

from ordersys_pipelines.db.dialect import dialect_insert, is_mysql
from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.rowsets import rowset
from ordersys_pipelines.db.schema import payment_callbacks
from ordersys_pipelines.domain.payments.config import GatewayConfig
from ordersys_pipelines.domain.payments.events import (
    REJECTED_PREFIX,
    CallbackError,
    decode_json,
    is_identifier,
    parse_event,
    printable,
)
from ordersys_pipelines.domain.payments.signing import SignatureError, verify

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Ordersys-Signature"
MAX_BODY_BYTES = 64 * 1024
MAX_HEADER_CHARS = 200
HEAD_BYTES = 400  # of a rejected body, kept for the operator to see what arrived
MAX_REASON_CHARS = 300


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
    payload_kept: str = "whole"  # whole | head
    body_bytes: int | None = None
    body_sha256: str | None = None
    remote_addr: str | None = None


def epoch(moment: datetime) -> int:
    """Epoch seconds of a naive UTC datetime."""
    return int(moment.replace(tzinfo=UTC).timestamp())


def escaped_head(raw: bytes) -> str:
    """The first HEAD_BYTES of a body as text: invalid UTF-8 and control bytes as `\\xNN`."""
    return printable(raw[:HEAD_BYTES].decode("utf-8", errors="backslashreplace"), 4 * HEAD_BYTES)


def store(
    conn: Connection, entries: Sequence[InboxEntry], *, source: str, received_at: datetime, available_at: datetime
) -> dict[str, int]:
    """Insert the entries (one statement); an event id already stored counts one more delivery.
    Returns event id → deliveries after this call."""
    if not entries:
        return {}
    names = ["event_id", "payment_ref", "payload", "signature", "signed_at", "status", "reason", "payload_kept",
             "body_bytes", "body_sha256", "remote_addr"]
    integers = {"signed_at", "body_bytes"}
    rows = rowset(
        conn,
        ((e.event_id, e.payment_ref, e.payload, e.signature, e.signed_at, e.status, e.reason, e.payload_kept,
          e.body_bytes, e.body_sha256, e.remote_addr) for e in entries),
        [(name, BigInteger() if name in integers else Text()) for name in names],
        "inbox",
    )
    source_rows = select(
        *[rows.c[name] for name in names], literal(source), literal(received_at), literal(available_at),
    ).where(true())  # SQLite needs a WHERE before ON CONFLICT in INSERT … SELECT
    statement = dialect_insert(conn, payment_callbacks).from_select(
        [*names, "source", "received_at", "available_at"], source_rows,
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


def _claimed_ref(raw: bytes) -> str | None:
    """The payment reference a rejected delivery claims, when it is a plausible one (for the
    operator looking for what was sent about a payment); never trusted."""
    try:
        event = decode_json(raw)
    except CallbackError:
        return None
    ref = event.get("payment_ref") if isinstance(event, dict) else None
    return ref if is_identifier(ref, 64) else None


def rejected_entry(
    raw: bytes, signature_header: str | None, reason: str, *, size: int | None = None,
    remote_addr: str | None = None, signed_at: int | None = None,
) -> InboxEntry:
    """The bounded record of a rejected delivery. `raw` is what was read of the body; `size`
    how many bytes arrived when reading stopped early (default: len(raw))."""
    header = printable(signature_header, MAX_HEADER_CHARS) if signature_header else None
    digest = hashlib.sha256(raw).hexdigest()
    event_id = REJECTED_PREFIX + hashlib.sha256((header or "").encode() + b"\n" + raw).hexdigest()[:40]
    return InboxEntry(
        event_id, _claimed_ref(raw) if len(raw) <= MAX_BODY_BYTES else None, escaped_head(raw), header, signed_at,
        "rejected", printable(reason, MAX_REASON_CHARS), payload_kept="head",
        body_bytes=len(raw) if size is None else size, body_sha256=digest,
        remote_addr=printable(remote_addr, 64) if remote_addr else None,
    )


def record_rejection(conn: Connection, entry: InboxEntry, source: str, now: datetime | None = None) -> Receipt:
    now = now or utcnow()
    store(conn, [entry], source=source, received_at=now, available_at=now)
    return Receipt("rejected", entry.event_id, entry.reason)


def receive(
    conn: Connection,
    raw_payload: bytes,
    signature_header: str | None,
    source: str,
    config: GatewayConfig,
    now: datetime | None = None,
    *,
    remote_addr: str | None = None,
) -> Receipt:
    """Verify one delivered callback and put it in the inbox (see the module doc). Never raises
    for what the sender controls: every bad delivery becomes a rejected receipt with its reason."""
    now = now or utcnow()
    signed_at = None
    try:
        if len(raw_payload) > MAX_BODY_BYTES:
            raise CallbackError(f"body larger than {MAX_BODY_BYTES} bytes")
        if not signature_header:
            raise CallbackError(f"missing {SIGNATURE_HEADER} header")
        if len(signature_header) > MAX_HEADER_CHARS:
            raise CallbackError(f"{SIGNATURE_HEADER} header longer than {MAX_HEADER_CHARS} characters")
        signed_at = verify(raw_payload, signature_header, config.accepted_secrets,
                           config.callback_tolerance_seconds, epoch(now))
        event = parse_event(raw_payload)
    except (SignatureError, CallbackError) as exc:
        entry = rejected_entry(raw_payload, signature_header, str(exc), remote_addr=remote_addr, signed_at=signed_at)
        return record_rejection(conn, entry, source, now)
    entry = InboxEntry(
        event["event_id"], event["payment_ref"], raw_payload.decode("utf-8"), signature_header, signed_at,
        body_bytes=len(raw_payload), body_sha256=hashlib.sha256(raw_payload).hexdigest(), remote_addr=remote_addr,
    )
    deliveries = store(conn, [entry], source=source, received_at=now, available_at=now)[entry.event_id]
    return Receipt("stored" if deliveries == 1 else "duplicate", entry.event_id)


def prune_rejected(conn: Connection, keep: int) -> int:
    """Delete all but the newest `keep` rejected-delivery records (one statement); returns how
    many went. The cut is found on the (payload_kept, id) index, so it costs `keep` index steps."""
    boundary = conn.execute(
        select(payment_callbacks.c.id).where(payment_callbacks.c.payload_kept == "head")
        .order_by(payment_callbacks.c.id.desc()).limit(1).offset(keep)
    ).scalar()
    if boundary is None:
        return 0
    return conn.execute(
        delete(payment_callbacks).where(payment_callbacks.c.payload_kept == "head", payment_callbacks.c.id <= boundary)
    ).rowcount


def deliver(engine: Engine, receive_delivery, config: GatewayConfig) -> Receipt:
    """Run `receive_delivery(conn) -> Receipt` in a transaction of its own, then keep the
    rejected-delivery record within its cap. Pruning is housekeeping in a second short
    transaction: a lock conflict there only postpones it to the next rejection."""
    with engine.begin() as conn:
        receipt = receive_delivery(conn)
    if receipt.outcome == "rejected":
        try:
            with engine.begin() as conn:
                prune_rejected(conn, config.rejected_deliveries_kept)
        except DBAPIError as exc:
            log.warning("pruning rejected callback deliveries postponed: %s", type(exc.orig).__name__)
    return receipt
