"""Processing pending refunds in batches: claim → check → gateway → record.

Three transactions per batch, so the gateway call (an external system) is committed before its
outcome is recorded here:

1. claim due refunds (SKIP LOCKED, with a lease), lock their orders, skip those that would now
   take the refunded total past the order total, mark the rest `processing`;
2. call the gateway with each refund's reference;
3. record: `processed` (order refund state, notification) or, on failure, back to `pending`
   with exponential backoff, or `failed` after the last attempt (notification).

A run killed between 2 and 3 leaves its refunds `processing` under a lease. Once the lease
expires another run claims them again and repeats the gateway call with the same reference;
the gateway answers with the payout it already made, so nothing is paid twice.
Every status change writes a `refund_events` row with the run id.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, and_, bindparam, case, func, insert, select, update

from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.schema import orders, refund_events, refunds
from ordersys_pipelines.domain.claims import claim, claimable
from ordersys_pipelines.domain.isolation import in_savepoint, isolate
from ordersys_pipelines.domain.money import plain
from ordersys_pipelines.domain.notifications.outbox import enqueue_for_refunds
from ordersys_pipelines.domain.payments.config import GatewayConfig
from ordersys_pipelines.domain.readable import look
from ordersys_pipelines.domain.refunds import gateway_refunds
from ordersys_pipelines.domain.refunds.gateway_refunds import RefundCall, RefundOutcome
from ordersys_pipelines.domain.refunds.queries import IN_FLIGHT

MAX_BACKOFF_SECONDS = 3600
STAGE = "refund processing"
PAID_UNRECORDED = "the gateway has paid this refund out: reconcile it before refunding again"
RESUMED = "resumed: the run that held this refund stopped before recording the gateway's answer"


@dataclass(frozen=True)
class RefundPolicy:
    max_attempts: int = 5  # gateway attempts before a refund is `failed`
    backoff_seconds: int = 30  # wait after the first failure; doubles with each further one
    lease_seconds: int = 300  # how long a claim holds before another run may take over

    def backoff(self, attempts: int) -> timedelta:
        return timedelta(seconds=min(self.backoff_seconds * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS))


@dataclass
class BatchReport:
    claimed: int = 0
    resumed: int = 0  # taken over from a run whose lease expired
    processed: int = 0
    retried: int = 0  # failed at the gateway, pending again
    failed: int = 0  # failed for good
    skipped: int = 0
    lost: int = 0  # claim expired mid-batch and another run took over; that run records them
    replayed: int = 0  # processed from a payout the gateway had already made
    amount_refunded_cents: int = 0
    seconds: float = 0.0
    processed_ids: list[int] = field(default_factory=list)
    isolated: dict[int, str] = field(default_factory=dict)  # refund id → why it failed alone
    to_fail: dict[int, str] = field(default_factory=dict)  # isolated, not yet marked failed

    def merge(self, other: BatchReport) -> None:
        """Add the counts of a part of the batch (domain.isolation runs a batch in parts)."""
        for name in ("claimed", "resumed", "processed", "retried", "failed", "skipped", "lost", "replayed",
                     "amount_refunded_cents"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.processed_ids += other.processed_ids

    def as_metadata(self) -> dict:
        return {
            "claimed": self.claimed,
            "processed": self.processed,
            "failed": self.failed,
            "skipped": self.skipped,
            "retried": self.retried,
            "resumed": self.resumed,
            "replayed_payouts": self.replayed,
            "lost_claims": self.lost,
            "amount_refunded_cents": self.amount_refunded_cents,
            "amount_refunded": plain(self.amount_refunded_cents),
            "seconds": round(self.seconds, 4),
            "refunds_per_second": round(self.claimed / self.seconds, 1) if self.seconds else 0.0,
        }


@dataclass(frozen=True)
class _Item:
    id: int
    order_id: int
    reference: str
    payment_ref: str
    amount_cents: int
    attempts: int


def due_clause(now: datetime):
    return and_(refunds.c.status.in_(IN_FLIGHT), refunds.c.next_attempt_at <= now)


def process_batch(
    engine: Engine,
    gateway: GatewayConfig,
    *,
    limit: int,
    policy: RefundPolicy,
    run_id: str | None = None,
) -> BatchReport:
    """Process up to `limit` due refunds. `run_id` (the Dagster run) is the claimant and goes
    into every refund event."""
    started = time.perf_counter()
    claimant = run_id or f"refunds-{uuid.uuid4().hex}"
    report = BatchReport()
    with engine.begin() as conn:
        items = start(conn, limit=limit, claimant=claimant, run_id=run_id, policy=policy, report=report)
    if items:
        outcomes = call_gateway(engine, gateway, items, report=report)
        items = [i for i in items if i.reference in outcomes]
    if items:
        with engine.begin() as conn:
            isolated(conn, items, lambda c, some, part: record(
                c, some, outcomes, claimant=claimant, run_id=run_id, policy=policy, report=part),
                report=report, key=lambda i: i.id)
        # A refund whose payout could not be recorded says so: the money has left.
        paid = {i.id for i in items if outcomes[i.reference].succeeded}
        report.to_fail.update({refund_id: f"{why}; {PAID_UNRECORDED}" for refund_id, why in report.to_fail.items()
                               if refund_id in paid})
    if report.to_fail:
        # In a transaction of its own: PostgreSQL checks a row's foreign keys again on any update
        # once this transaction has changed the row (the claim), so a dangling reference could
        # not even be marked failed in the batch's transaction.
        with engine.begin() as conn:
            fail_refunds(conn, report.to_fail, run_id=run_id, report=report)
    report.seconds = time.perf_counter() - started
    return report


def call_gateway(engine: Engine, gateway: GatewayConfig, items: list[_Item],
                 report: BatchReport | None = None) -> dict[str, RefundOutcome]:
    """The gateway's answers by reference, each part of the batch committed on its own. A
    refund the gateway refuses outright (its reference was sent for another payment or amount)
    has no answer here and is left in `report.to_fail`."""

    def send(some: list[_Item]) -> dict[str, RefundOutcome]:
        with engine.begin() as conn:
            return gateway_refunds.refund_batch(
                conn, gateway, [RefundCall(i.reference, i.payment_ref, i.amount_cents) for i in some]
            )

    def fail(errors: dict[_Item, str]) -> None:
        if report is not None:
            report.to_fail.update({i.id: error for i, error in errors.items()})

    batch = isolate(items, send, fail=fail, stage=STAGE)
    return {reference: outcome for part in batch.results for reference, outcome in part.items()}


def isolated(conn: Connection, items: list, work, *, report: BatchReport, key=lambda i: i) -> list:
    """Run `work(conn, some_items, part_report)` over `items` with domain.isolation: a part
    that fails with a data error is rolled back (savepoint) and split; a refund that fails
    alone is left in `report.to_fail`. Returns what the parts returned, in order."""

    def attempt(c: Connection, some: list) -> tuple[object, BatchReport]:
        part = BatchReport()
        return work(c, some, part), part

    batch = isolate(items, in_savepoint(conn, attempt), stage=STAGE, fail=lambda errors: report.to_fail.update(
        {key(i): error for i, error in errors.items()}))
    for _, part in batch.results:
        report.merge(part)
    return [value for value, _ in batch.results]


def fail_refunds(conn: Connection, errors: dict[int, str], *, run_id: str | None,
                 report: BatchReport | None = None) -> None:
    """End isolated refunds `failed` with the reason in `last_error` and a refund event. No
    customer notification: it would be rendered from the data that is broken."""
    now = utcnow()
    current = dict(conn.execute(
        select(refunds.c.id, refunds.c.status).where(refunds.c.id.in_(list(errors)), refunds.c.status.in_(IN_FLIGHT))
    ).all())
    if not current:
        return
    reasons = {refund_id: f"bad data in {STAGE}: {errors[refund_id]}" for refund_id in current}
    conn.execute(
        update(refunds)
        .where(refunds.c.id == bindparam("refund_id"))
        .values(status="failed", last_error=bindparam("why"), claimed_by=None, claim_expires_at=None),
        [{"refund_id": refund_id, "why": why} for refund_id, why in reasons.items()],
    )
    _write_events(conn, [_event(refund_id, current[refund_id], "failed", why, run_id, now)
                         for refund_id, why in reasons.items()])
    if report is not None:
        report.failed += len(reasons)
        report.isolated.update(reasons)


def start(
    conn: Connection, *, limit: int, claimant: str, run_id: str | None, policy: RefundPolicy, report: BatchReport
) -> list[_Item]:
    """Claim due refunds and decide, under their orders' locks, which go to the gateway."""
    now = utcnow()
    ids = claim(
        conn, refunds, where=due_clause(now), order_by=[refunds.c.next_attempt_at, refunds.c.id],
        limit=limit, claimant=claimant, lease_seconds=policy.lease_seconds,
    )
    if not ids:
        return []
    claimed_before = report.claimed
    parts = isolated(conn, ids, lambda c, some, part: _start_claimed(c, some, run_id=run_id, report=part, now=now),
                     report=report)
    report.claimed = claimed_before + len(ids)  # the refunds that failed alone were claimed too
    return [item for part in parts for item in part]


def _start_claimed(conn: Connection, ids: list[int], *, run_id: str | None, report: BatchReport,
                   now) -> list[_Item]:
    claimed = conn.execute(
        select(refunds.c.id, refunds.c.order_id, refunds.c.reference, refunds.c.amount_cents,
               refunds.c.status, refunds.c.attempts)
        .where(refunds.c.id.in_(ids))
        .order_by(refunds.c.id)
    ).all()
    order_ids = sorted({r.order_id for r in claimed})
    # Lock the orders in id order (requests lock one at a time, so no cycle) and read what has
    # been paid out on each so far.
    order_rows = {
        row.id: row
        for row in conn.execute(
            select(orders.c.id, orders.c.order_ref, orders.c.total_cents, orders.c.payment_ref)
            .where(orders.c.id.in_(order_ids))
            .order_by(orders.c.id)
            .with_for_update(key_share=True)
        )
    }
    refunded: defaultdict[int, int] = defaultdict(int)
    for order_id, amount in conn.execute(
        select(refunds.c.order_id, func.sum(refunds.c.amount_cents))
        .where(refunds.c.order_id.in_(order_ids), refunds.c.status == "processed")
        .group_by(refunds.c.order_id)
    ):
        refunded[order_id] = int(amount)  # PostgreSQL sums BIGINT as NUMERIC

    items: list[_Item] = []
    skipped: list[dict] = []
    events: list[dict] = []
    for r in claimed:
        order = order_rows[r.order_id]
        if order.payment_ref is None:
            why = f"order {order.order_ref} has no payment to refund"
        elif refunded[r.order_id] + r.amount_cents > order.total_cents:
            why = (
                f"{plain(r.amount_cents)} would bring the refunded total of order {order.order_ref} to "
                f"{plain(refunded[r.order_id] + r.amount_cents)}, over its total {plain(order.total_cents)}"
            )
        else:
            why = None
        if why:
            skipped.append({"refund_id": r.id, "why": why})
            events.append(_event(r.id, r.status, "skipped", why, run_id, now))
            continue
        refunded[r.order_id] += r.amount_cents  # a later refund of this batch must fit beside it
        items.append(_Item(r.id, r.order_id, r.reference, order.payment_ref, r.amount_cents, r.attempts))
        resumed = r.status == "processing"
        report.resumed += resumed
        events.append(_event(r.id, r.status, "processing", RESUMED if resumed else None, run_id, now))

    if skipped:
        conn.execute(
            update(refunds)
            .where(refunds.c.id == bindparam("refund_id"))
            .values(status="skipped", last_error=bindparam("why"), claimed_by=None, claim_expires_at=None),
            skipped,
        )
    if items:
        conn.execute(update(refunds).where(refunds.c.id.in_([i.id for i in items])).values(status="processing"))
    _write_events(conn, events)
    report.claimed += len(claimed)
    report.skipped += len(skipped)
    return items


def record(
    conn: Connection,
    items: list[_Item],
    outcomes: dict[str, RefundOutcome],
    *,
    claimant: str,
    run_id: str | None,
    policy: RefundPolicy,
    report: BatchReport,
) -> None:
    """Record the gateway's answers for the refunds this run still holds."""
    now = utcnow()
    # The orders first: two runs recording refunds of one order queue here, so the second
    # computes the order's refund state with the first one's refunds committed.
    conn.execute(
        select(orders.c.id)
        .where(orders.c.id.in_(sorted({i.order_id for i in items})))
        .order_by(orders.c.id)
        .with_for_update(key_share=True)
    ).all()
    held = set(conn.execute(
        select(refunds.c.id)
        .where(refunds.c.id.in_([i.id for i in items]), refunds.c.claimed_by == claimant,
               refunds.c.status == "processing")
        .with_for_update()
    ).scalars())
    report.lost += len(items) - len(held)
    mine = [i for i in items if i.id in held]
    paid = [i for i in mine if outcomes[i.reference].succeeded]
    unpaid = [i for i in mine if not outcomes[i.reference].succeeded]
    events: list[dict] = []

    if paid:
        paid_ids = [i.id for i in paid]
        conn.execute(
            update(refunds)
            .where(refunds.c.id.in_(paid_ids))
            .values(status="processed", processed_at=now, attempts=refunds.c.attempts + 1, last_error=None,
                    claimed_by=None, claim_expires_at=None)
        )
        for i in paid:
            replayed = outcomes[i.reference].replayed
            report.replayed += replayed
            why = "the gateway had already paid this reference out; recorded that payout" if replayed else None
            events.append(_event(i.id, "processing", "processed", why, run_id, now))
        _update_refund_state(conn, sorted({i.order_id for i in paid}))
        enqueue_for_refunds(conn, "refund_processed", paid_ids)
        report.processed += len(paid)
        report.processed_ids += paid_ids
        report.amount_refunded_cents += sum(i.amount_cents for i in paid)

    retries, final = [], []
    for i in unpaid:
        attempts = i.attempts + 1
        error = outcomes[i.reference].reason or "refund failed at the gateway"
        if attempts >= policy.max_attempts:
            final.append({"refund_id": i.id, "error": error, "tries": attempts})
            events.append(_event(i.id, "processing", "failed",
                                 f"{error} (attempt {attempts} of {policy.max_attempts}; giving up)", run_id, now))
        else:
            due = now + policy.backoff(attempts)
            retries.append({"refund_id": i.id, "error": error, "tries": attempts, "due": due})
            events.append(_event(i.id, "processing", "pending",
                                 f"{error} (attempt {attempts} of {policy.max_attempts}; "
                                 f"next at {due:%Y-%m-%d %H:%M:%S} UTC)", run_id, now))
    if retries:
        conn.execute(
            update(refunds)
            .where(refunds.c.id == bindparam("refund_id"))
            .values(status="pending", last_error=bindparam("error"), attempts=bindparam("tries"),
                    next_attempt_at=bindparam("due"), claimed_by=None, claim_expires_at=None),
            retries,
        )
    if final:
        conn.execute(
            update(refunds)
            .where(refunds.c.id == bindparam("refund_id"))
            .values(status="failed", last_error=bindparam("error"), attempts=bindparam("tries"),
                    claimed_by=None, claim_expires_at=None),
            final,
        )
        enqueue_for_refunds(conn, "refund_failed", [f["refund_id"] for f in final])
    _write_events(conn, events)
    report.retried += len(retries)
    report.failed += len(final)


def _update_refund_state(conn: Connection, order_ids: list[int]) -> None:
    refunded = (
        select(func.coalesce(func.sum(refunds.c.amount_cents), 0))
        .where(refunds.c.order_id == orders.c.id, refunds.c.status == "processed")
        .scalar_subquery()
    )
    conn.execute(
        update(orders)
        .where(orders.c.id.in_(order_ids))
        .values(
            refund_state=case((refunded >= orders.c.total_cents, "refunded"), else_="partially_refunded"),
            updated_at=utcnow(),
        )
    )


def _event(refund_id: int, from_status: str | None, to_status: str, reason: str | None,
           run_id: str | None, now: datetime) -> dict:
    return {"refund_id": refund_id, "from_status": from_status, "to_status": to_status, "reason": reason,
            "run_id": run_id, "created_at": now}


def _write_events(conn: Connection, events: list[dict]) -> None:
    if events:
        conn.execute(insert(refund_events), events)


@dataclass(frozen=True)
class Backlog:
    due: int  # refunds a run could claim now
    waiting: int  # pending refunds waiting for their next attempt (backoff) or a held claim
    watermark: int  # the newest refund event among the due refunds: changes whenever the due work does
    next_due_at: datetime | None  # when the earliest waiting refund becomes due


def backlog(conn: Connection) -> Backlog:
    """What there is to process (for sensors and the CLI): a look, no claim."""
    now = utcnow()
    latest_event = (
        select(func.max(refund_events.c.id)).where(refund_events.c.refund_id == refunds.c.id).scalar_subquery()
    )
    due, watermark = conn.execute(
        select(func.count(), func.max(latest_event)).select_from(refunds).where(due_clause(now), claimable(refunds))
    ).one()
    # A held claim is due again when it lapses; an unclaimed refund at its next attempt.
    becomes_due = case((claimable(refunds), refunds.c.next_attempt_at), else_=refunds.c.claim_expires_at)
    waiting_clause = [refunds.c.status.in_(IN_FLIGHT), ~and_(due_clause(now), claimable(refunds))]
    waiting = conn.execute(select(func.count()).select_from(refunds).where(*waiting_clause)).scalar_one()
    [next_due_at] = look(conn, select(func.min(becomes_due)).select_from(refunds).where(*waiting_clause),
                         refunds.c.next_attempt_at)
    return Backlog(due=due, waiting=waiting, watermark=watermark or 0, next_due_at=next_due_at)
