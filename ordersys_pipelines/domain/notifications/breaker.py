"""A circuit breaker per channel, so a receiver that is down costs one attempt, not every one.

A dispatch run counts the channel-wide failures of each channel in a row (connection refused,
timeouts, HTTP 5xx: `TransientError.channel_wide`); any other outcome (sent, or an answer about
one message) resets the count. At `breaker_failures` in a row the breaker opens: the run stops
trying that channel, its claimed but untried notifications go back to `pending` (lease released,
attempts unchanged, due again after `breaker_pause_seconds`) and the channel's unclaimed ones
are not claimed by this run.

The state is kept in `notification_channel_state`, for operators (`ordersys notifications
channels`, the run's metadata) and for the next runs: until `retry_at` they leave the channel
alone (the sensor does not count its notifications as due); after it, a run probes the channel
half-open: the first channel-wide failure opens it again, the first answer closes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Connection, func, select

from ordersys_pipelines.db.dialect import upsert
from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.schema import customers, notification_channel_state, notifications
from ordersys_pipelines.domain.notifications.config import NotifierConfig

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
MAX_REASON_CHARS = 500
state = notification_channel_state.c
n = notifications.c


@dataclass
class Breaker:
    channel: str
    threshold: int
    state: str = CLOSED
    failures: int = 0  # channel-wide failures in a row
    reason: str | None = None
    opened_at: datetime | None = None
    retry_at: datetime | None = None
    deferred: int = 0  # notifications this run handed back untried
    left_pending: int = 0
    changed: bool = False  # to be written to notification_channel_state

    @property
    def is_open(self) -> bool:
        return self.state == OPEN

    def record(self, error: Exception | None, now: datetime, pause_seconds: float) -> None:
        """The outcome of one message tried on this channel (`error` None: sent)."""
        if getattr(error, "channel_wide", False):
            self.failures += 1
            self.reason = str(error)[:MAX_REASON_CHARS]
            if self.failures >= (1 if self.state == HALF_OPEN else self.threshold):
                self.state, self.opened_at, self.changed = OPEN, now, True
                self.retry_at = now + timedelta(seconds=pause_seconds)
            return
        self.failures = 0
        if self.state == HALF_OPEN:  # it answered: closed again
            self.state, self.reason, self.retry_at, self.changed = CLOSED, None, None, True

    def defer(self) -> None:
        self.deferred += 1
        self.changed = True


class Breakers:
    """The breakers of one dispatch run, by channel."""

    def __init__(self, config: NotifierConfig, breakers: Iterable[Breaker] = ()):
        self.config = config
        self._by_channel = {breaker.channel: breaker for breaker in breakers}

    @classmethod
    def load(cls, conn: Connection, config: NotifierConfig) -> Breakers:
        """The breakers left open by earlier runs: still open until their retry_at, half-open after."""
        rows = conn.execute(select(notification_channel_state).where(state.state == OPEN)).all()
        paused = set(channels_paused(conn, config))
        return cls(config, [
            Breaker(row.channel, config.breaker_failures, state=OPEN if row.channel in paused else HALF_OPEN,
                    reason=row.reason, opened_at=row.opened_at, retry_at=row.retry_at)
            for row in rows
        ])

    def __getitem__(self, channel: str) -> Breaker:
        if channel not in self._by_channel:
            self._by_channel[channel] = Breaker(channel, self.config.breaker_failures)
        return self._by_channel[channel]

    def open_channels(self) -> list[str]:
        return sorted(channel for channel, breaker in self._by_channel.items() if breaker.is_open)

    @property
    def changed(self) -> bool:
        return any(breaker.changed for breaker in self._by_channel.values())

    def report(self) -> list[Breaker]:
        """The breakers worth showing: open, probed (half-open), or changed during the run."""
        return [b for _, b in sorted(self._by_channel.items()) if b.state != CLOSED or b.changed or b.deferred]

    def save(self, conn: Connection, run_id: str) -> None:
        """Write the breakers that changed (with the pending count of the open ones)."""
        changed = [breaker for breaker in self._by_channel.values() if breaker.changed]
        if not changed:
            return
        pending = pending_by_channel(conn, self.config, [b.channel for b in changed if b.is_open])
        rows = []
        for breaker in changed:
            breaker.left_pending = pending.get(breaker.channel, 0)
            rows.append({
                "channel": breaker.channel, "state": OPEN if breaker.is_open else CLOSED,
                "reason": breaker.reason, "failures": breaker.failures, "deferred": breaker.deferred,
                "left_pending": breaker.left_pending, "opened_at": breaker.opened_at,
                "retry_at": breaker.retry_at, "run_id": run_id[:64], "updated_at": utcnow(),
            })
            breaker.changed = False
        conn.execute(upsert(conn, notification_channel_state, rows, ["channel"],
                            [name for name in rows[0] if name != "channel"]))


def channel_of(config: NotifierConfig, customer_channel=None) -> ColumnElement[str]:
    """The SQL form of dispatch.resolve_channel: the row's channel, else the customer's
    override, else the setting. `customer_channel` is the joined customers column; by default
    a correlated subquery (for statements on notifications alone, such as the claim)."""
    if customer_channel is None:
        customer_channel = (select(customers.c.notify_channel).where(customers.c.id == n.customer_id)
                            .scalar_subquery())
    return func.coalesce(func.nullif(n.channel, ""), func.nullif(customer_channel, ""), config.channel)


def pending_by_channel(conn: Connection, config: NotifierConfig, channels: list[str]) -> dict[str, int]:
    """How many notifications wait on each of `channels` (pending, due or not)."""
    if not channels:
        return {}
    channel = channel_of(config, customers.c.notify_channel)
    rows = conn.execute(
        select(channel.label("resolved_channel"), func.count())
        .select_from(notifications.outerjoin(customers, customers.c.id == n.customer_id))
        .where(n.status == "pending", channel.in_(channels))
        .group_by(channel)
    )
    return dict(rows.all())


def channels_paused(conn: Connection, config: NotifierConfig) -> list[str]:
    """Channels whose breaker is open and not yet due for a probe. A retry_at further away than
    the pause (a clock that jumped, a row written by hand) is not obeyed: that channel is probed."""
    now = utcnow()
    return sorted(conn.execute(select(state.channel).where(
        state.state == OPEN, state.retry_at > now,
        state.retry_at <= now + timedelta(seconds=config.breaker_pause_seconds),
    )).scalars())


def read_channel_states(conn: Connection) -> list:
    """Every channel's breaker as last written (for `ordersys notifications channels` and status)."""
    return conn.execute(select(notification_channel_state).order_by(state.channel)).all()
