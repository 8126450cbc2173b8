"""Sending due notifications: claim, render, commit, send, mark.

1. In one transaction: lock a batch of due, claimable notifications (claims.lock_claimable: FOR
   UPDATE SKIP LOCKED on PostgreSQL and MariaDB, SQLite's single writer), load what they are
   about with two queries, render the ones not rendered yet, and in one statement store
   subject/body/payload/channel, mark them `sending` and stamp the claim (claimant and lease).
   COMMIT. The row locks hold the batch until the stamp is committed with `sending`: a run
   killed before the COMMIT leaves the rows pending and unclaimed, one killed after it leaves
   them claimed until the lease lapses; each row is written once here, not twice.
2. Send outside any transaction (the workflow's transactions are long gone; ours is committed).
3. Mark the outcome in groups: `sent` (sent_at; one statement per group), back to `pending`
   with exponential backoff (attempts + 1, next_attempt_at), or `failed` with the last error
   once the attempts reach ORDERSYS_NOTIFY_MAX_ATTEMPTS or the receiving server refused for
   good. Once a third of the lease has passed, the next group also renews the lease on the rest
   of the batch (one statement, not one per group: that rewrote every unsent row each time),
   and from then on only rows still claimed by this run are sent.

An attempt is counted only for a notification that was tried. A channel that is down (failures
in a row, see breaker.py) is not tried again by this run: its claimed notifications go back to
`pending` untried (attempts unchanged), and later batches of the run do not claim its others.

Overlapping runs never send the same notification: a row is claimed by one run at a time, and a
claim is only taken over once its lease has lapsed (which a renewal every third of it prevents). The at-least-once edge: a run that dies
after sending but before its group of marks commits leaves those rows `sending`; when the lease
expires another run takes them and sends them again. At most one unmarked group (FLUSH_EVERY
messages or FLUSH_SECONDS of sending) is affected; webhook receivers get an `Idempotency-Key`
and e-mails an `X-Ordersys-Event` header to recognise such a repeat.

The channels (an SMTP session, a webhook's keep-alive connection, the log file) stay open for all
the batches of a run.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Engine,
    Text,
    and_,
    bindparam,
    func,
    or_,
    select,
    true,
    update,
)

from ordersys_pipelines.db import statistics
from ordersys_pipelines.db.dialect import update_returning
from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.rowsets import in_ids, rowset
from ordersys_pipelines.db.schema import notifications
from ordersys_pipelines.domain.claims import claimable, lock_claimable
from ordersys_pipelines.domain.isolation import describe, in_savepoint, is_data_error, isolate
from ordersys_pipelines.domain.notifications.breaker import Breaker, Breakers, channel_of, channels_paused
from ordersys_pipelines.domain.notifications.channels import (
    Channels,
    Message,
    PermanentError,
    TransientError,
)
from ordersys_pipelines.domain.notifications.config import NotifierConfig
from ordersys_pipelines.domain.notifications.context import (
    NotificationRow,
    attach_lines,
    load_rows,
    payload,
    template_context,
)
from ordersys_pipelines.domain.notifications.templates import TemplateRenderError, render
from ordersys_pipelines.domain.readable import READABLE_WINDOW, look
from ordersys_pipelines.domain.tables import markdown_table

OUTCOMES = ("sent", "retried", "failed")
STAGE = "notification dispatch"
FLUSH_EVERY = 500
FLUSH_SECONDS = 1.0
RENEW_AFTER = 1 / 3  # of the lease: then the next group of marks renews the lease on the rest
MAX_ERROR_CHARS = 2000
n = notifications.c
log = logging.getLogger("ordersys.notifications.dispatch")


@dataclass
class DispatchResult:
    """What one or more batches did: counts per (type, channel, outcome)."""

    counts: Counter = field(default_factory=Counter)
    claimed: int = 0
    batches: int = 0
    lost: int = 0  # claims that lapsed and went to another run before they were sent
    deferred: Counter = field(default_factory=Counter)  # by channel: handed back untried (breaker open)
    breakers: list[Breaker] = field(default_factory=list)  # open, probed or changed during the run
    seconds: float = 0.0
    errors: list[tuple[int, str, str]] = field(default_factory=list)  # (id, outcome, error), a sample

    def count(self, outcome: str) -> int:
        return sum(v for (_, _, o), v in self.counts.items() if o == outcome)

    @property
    def sent(self) -> int:
        return self.count("sent")

    @property
    def retried(self) -> int:
        return self.count("retried")

    @property
    def failed(self) -> int:
        return self.count("failed")

    def record(self, notification_type: str, channel: str, outcome: str, nid: int, error: str | None) -> None:
        self.counts[(notification_type, channel, outcome)] += 1
        if error and len(self.errors) < 20:
            self.errors.append((nid, outcome, error))

    def merge(self, other: DispatchResult) -> None:
        self.counts.update(other.counts)
        self.claimed += other.claimed
        self.batches += other.batches
        self.lost += other.lost
        self.deferred.update(other.deferred)
        self.breakers = other.breakers or self.breakers
        self.errors.extend(other.errors[: max(0, 20 - len(self.errors))])

    def rows(self) -> list[tuple[str, str, int, int, int]]:
        """(type, channel, sent, retried, failed), sorted."""
        keys = sorted({(t, c) for t, c, _ in self.counts})
        return [(t, c, *(self.counts[(t, c, o)] for o in OUTCOMES)) for t, c in keys]

    def markdown(self) -> str:
        rows = [*self.rows(), ("**total**", "", self.sent, self.retried, self.failed)]
        return markdown_table(["type", "channel", "sent", "retried", "failed"], rows,
                              numeric=["sent", "retried", "failed"])

    def breakers_markdown(self) -> str:
        return markdown_table(
            ["channel", "state", "why", "failures in a row", "handed back untried", "left pending", "retry at"],
            [[b.channel, b.state, b.reason or "-", b.failures, b.deferred, b.left_pending, b.retry_at or "-"]
             for b in self.breakers],
            numeric=["failures in a row", "handed back untried", "left pending"])


@dataclass
class _Mark:
    nid: int
    new_status: str
    new_attempts: int
    error: str | None
    next_at: datetime
    sent: datetime | None


@dataclass
class _Ready:
    row: NotificationRow
    channel: str
    message: Message


def due_clause(now: datetime) -> ColumnElement[bool]:
    """Pending and due, or left `sending` by a run (claimable only once its lease lapsed)."""
    return or_(and_(n.status == "pending", n.next_attempt_at <= now), n.status == "sending")


def due_summary(conn: Connection, now: datetime | None = None, config: NotifierConfig | None = None,
                ) -> tuple[int, int | None, datetime | None]:
    """(count, highest id, latest next_attempt_at) of the notifications a dispatch would take now
    (with `config`: leaving out the channels whose breaker is open and not yet due for a probe)."""
    now = now or utcnow()
    due = [due_clause(now), claimable(notifications)]
    paused = channels_paused(conn, config) if config is not None else []
    if paused:
        due.append(channel_of(config).not_in(paused))
    count, max_id = conn.execute(select(func.count(), func.max(n.id)).where(*due)).one()
    # A due row whose next_attempt_at cannot be read still counts (dispatch isolates it).
    [latest] = look(conn, select(func.max(n.next_attempt_at)).where(*due), n.next_attempt_at)
    if latest is None and count:
        latest = READABLE_WINDOW[0]
    return count, max_id, latest


def dispatch_batch(engine: Engine, config: NotifierConfig, *, claimant: str, limit: int | None = None,
                   breakers: Breakers | None = None, channels: Channels | None = None) -> DispatchResult:
    """Claim, render, send and mark one batch (up to `limit`, default config.batch_size).
    `claimant` names this run (unique per concurrent run, at most 64 characters); `breakers`
    are the run's circuit breakers (default: as earlier runs left them); `channels` the run's
    open channels (default: opened for this batch and closed after it)."""
    if channels is None:
        with Channels(config) as own:
            return dispatch_batch(engine, config, claimant=claimant, limit=limit, breakers=breakers, channels=own)
    started = time.monotonic()
    result = DispatchResult()
    statistics.refresh(engine, [notifications.name], share=statistics.NOTIFICATIONS_SHARE)
    with engine.begin() as conn:
        breakers = breakers or Breakers.load(conn, config)
        due = due_clause(utcnow())
        if breakers.open_channels():  # this run has given up on them
            due = and_(due, channel_of(config).not_in(breakers.open_channels()))
        # Locked, not yet stamped: the stamp is written with the texts below, so each row is
        # written once here. Until the COMMIT the row locks keep other runs off these rows, and
        # a run killed before it leaves them as they were.
        ids = lock_claimable(conn, notifications, where=due, order_by=[n.next_attempt_at, n.id],
                             limit=limit or config.batch_size)
        if not ids:
            result.breakers = breakers.report()
            return result
        ready, broken = _prepare_isolated(conn, ids, config)
        if ready:  # one statement for the batch, the rendered texts as one parameter
            texts = rowset(conn, ((r.row.id, r.channel, r.message.subject, r.message.body, r.message.payload)
                                  for r in ready),
                           [("id", BigInteger()), ("channel", Text()), ("subject", Text()), ("body", Text()),
                            ("payload", Text())], "rendered")
            conn.execute(
                update(notifications)
                .where(n.id == texts.c.id)
                .values(status="sending", channel=texts.c.channel, subject=texts.c.subject,
                        body=texts.c.body, payload=texts.c.payload, claimed_by=claimant,
                        claim_expires_at=utcnow() + timedelta(seconds=config.lease_seconds))
            )
        marks = []
        for row, channel, error in broken:
            marks.append(_outcome(row, PermanentError(error), config, utcnow()))
            result.record(row.type, channel, "failed", row.id, error)
        _write_marks(conn, marks, held=true())  # locked in this transaction, never stamped
    result.claimed, result.batches = len(ids), 1
    _send(engine, config, claimant, ready, result, breakers, channels, claimed_at=started)
    if breakers.changed:
        with engine.begin() as conn:
            breakers.save(conn, claimant)
    result.breakers = breakers.report()
    result.seconds = time.monotonic() - started
    log.info("dispatched %d notifications: %d sent, %d retried, %d failed, %d handed back untried",
             result.claimed, result.sent, result.retried, result.failed, sum(result.deferred.values()))
    return result


def dispatch_pending(
    engine: Engine, config: NotifierConfig, *, claimant: str, max_batches: int | None = None,
    limit: int | None = None,
) -> DispatchResult:
    """Dispatch batch after batch until nothing is due (or `max_batches` were done)."""
    started = time.monotonic()
    total = DispatchResult()
    with engine.connect() as conn:
        breakers = Breakers.load(conn, config)
    with Channels(config) as channels:
        while max_batches is None or total.batches < max_batches:
            result = dispatch_batch(engine, config, claimant=claimant, limit=limit, breakers=breakers,
                                    channels=channels)
            total.merge(result)
            if not result.claimed:
                break
    total.seconds = time.monotonic() - started
    return total


def resolve_channel(row: NotificationRow, config: NotifierConfig) -> str:
    """The row's channel once chosen; else the customer's override; else the setting."""
    return row.channel or row.customer_channel or config.channel


def _prepare(conn: Connection, ids: list[int], config: NotifierConfig):
    rows = load_rows(conn, ids)
    attach_lines(conn, [row for row in rows if not row.rendered])
    ready: list[_Ready] = []
    broken: list[tuple[NotificationRow, str, str]] = []
    for row in rows:
        channel = resolve_channel(row, config)
        if not row.rendered:
            context = template_context(row, config.currency)
            try:
                rendered = render(row.type, context, config.templates_dir)
            except TemplateRenderError as exc:
                log.error("notification %d: %s", row.id, exc)
                broken.append((row, channel, str(exc)))
                continue
            row.subject, row.body = rendered.subject, rendered.body
            row.payload = payload(row, context, rendered)
        message = Message(
            notification_id=row.id, event_id=row.dedup_key, type=row.type, recipient=row.recipient,
            recipient_name=row.customer_name, subject=row.subject, body=row.body, payload=row.payload,
        )
        ready.append(_Ready(row, channel, message))
    return ready, broken


def _prepare_isolated(conn: Connection, ids: list[int], config: NotifierConfig):
    """`_prepare` through domain.isolation: a notification whose order, customer or refund
    cannot be read or rendered from is `broken` alone (failed, with the reason), the rest go on."""
    batch = isolate(ids, in_savepoint(conn, lambda c, some: _prepare(c, some, config)), stage=STAGE)
    ready = [item for part_ready, _ in batch.results for item in part_ready]
    broken = [item for _, part_broken in batch.results for item in part_broken]
    if batch.failed:
        rows = conn.execute(select(n.id, n.type, n.attempts, n.channel).where(n.id.in_(list(batch.failed))))
        unknown = dict.fromkeys(name for name in NotificationRow.__dataclass_fields__ if name != "lines")
        for row in rows:
            bare = NotificationRow(**{**unknown, **row._mapping})
            broken.append((bare, row.channel or config.channel, f"bad data in {STAGE}: {batch.failed[row.id]}"))
    return ready, broken


def _send(engine: Engine, config: NotifierConfig, claimant: str, ready: list[_Ready], result: DispatchResult,
          breakers: Breakers, channels: Channels, claimed_at: float) -> None:
    marks: list[_Mark] = []
    ours: set[int] | None = None  # None: the whole batch, as claimed (the lease holds)
    last_flush = renewed_at = claimed_at
    for item in sorted(ready, key=lambda r: (r.channel, r.row.id)):  # channel by channel
        if marks and (len(marks) >= FLUSH_EVERY or time.monotonic() - last_flush >= FLUSH_SECONDS):
            renew = time.monotonic() - renewed_at >= config.lease_seconds * RENEW_AFTER
            still_ours = _flush(engine, marks, claimant, config, renew=renew)
            marks, last_flush = [], time.monotonic()
            if renew:
                ours, renewed_at = still_ours, last_flush
        if ours is not None and item.row.id not in ours:
            result.lost += 1
            continue
        breaker = breakers[item.channel]
        if breaker.is_open:  # not tried: back to pending as it was, after the breaker's pause
            breaker.defer()
            result.deferred[item.channel] += 1
            marks.append(_Mark(item.row.id, "deferred", item.row.attempts, None, breaker.retry_at, None))
            continue
        try:
            channels.send(item.channel, item.message)
            error = None
        except (TransientError, PermanentError) as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - a value the channel cannot take fails this one alone
            if not is_data_error(exc):
                raise
            error = PermanentError(f"bad data in {STAGE}: {describe(exc)}")
        breaker.record(error, utcnow(), config.breaker_pause_seconds)
        mark = _outcome(item.row, error, config, utcnow())
        outcome = "sent" if mark.new_status == "sent" else (
            "retried" if mark.new_status == "pending" else "failed")
        result.record(item.row.type, item.channel, outcome, item.row.id, mark.error)
        marks.append(mark)
    if marks:
        _flush(engine, marks, claimant, config, renew=False)


def _outcome(row: NotificationRow, error: Exception | None, config: NotifierConfig, now: datetime) -> _Mark:
    attempts = row.attempts + 1
    if error is None:
        return _Mark(row.id, "sent", attempts, None, now, now)
    message = str(error)[:MAX_ERROR_CHARS]
    if isinstance(error, TransientError) and attempts < config.max_attempts:
        return _Mark(row.id, "pending", attempts, message, now + timedelta(seconds=config.backoff(attempts)), None)
    if isinstance(error, TransientError):
        message = f"gave up after {attempts} attempts: {message}"
    return _Mark(row.id, "failed", attempts, message, now, None)


def _flush(engine: Engine, marks: list[_Mark], claimant: str, config: NotifierConfig, *,
           renew: bool) -> set[int] | None:
    """Write `marks`; with `renew`, also renew the lease on the rest of the batch and return the
    ids still ours (None without: the lease has not lapsed since the last renewal)."""
    with engine.begin() as conn:
        _write_marks(conn, marks, held=n.claimed_by == claimant)
        if not renew:
            return None
        renewed = update_returning(
            conn,
            update(notifications)
            .where(n.claimed_by == claimant, n.status == "sending")
            .values(claim_expires_at=utcnow() + timedelta(seconds=config.lease_seconds)),
            notifications,
            n.id,
        )
        return {row.id for row in renewed}


def _write_marks(conn: Connection, marks: list[_Mark], *, held: ColumnElement[bool]) -> None:
    # Only while this run still holds the row (`held`: its claim, or a lock of this transaction):
    # a lapsed claim belongs to whoever took it.
    sent = [mark for mark in marks if mark.new_status == "sent"]
    if sent:  # the common case, one statement; sent_at is the group's last send (within a second)
        conn.execute(
            update(notifications)
            .where(in_ids(conn, n.id, [mark.nid for mark in sent]), held)
            .values(status="sent", attempts=n.attempts + 1, sent_at=max(mark.sent for mark in sent),
                    claimed_by=None, claim_expires_at=None)
        )
    deferred = [{"nid": mark.nid, "next_at": mark.next_at} for mark in marks if mark.new_status == "deferred"]
    if deferred:  # untried: attempts and last error stay as they were
        conn.execute(
            update(notifications)
            .where(n.id == bindparam("nid"), held)
            .values(status="pending", next_attempt_at=bindparam("next_at"), claimed_by=None, claim_expires_at=None),
            deferred,
        )
    others = [mark.__dict__ for mark in marks if mark.new_status not in ("sent", "deferred")]
    if others:  # retried or failed: each with its own error and next attempt time
        conn.execute(
            update(notifications)
            .where(n.id == bindparam("nid"), held)
            .values(status=bindparam("new_status"), attempts=bindparam("new_attempts"),
                    last_error=bindparam("error"), next_attempt_at=bindparam("next_at"),
                    claimed_by=None, claim_expires_at=None),
            others,
        )
