"""What is waiting at every stage, what was done in the last hour, and how long the oldest item
has waited: the per-stage figures of `ordersys status`.

A few aggregate queries per stage (counts and minima, no rows fetched), so the answer stays
quick on a large database. "Waiting" means work the stage itself still has to do: an order
awaiting the gateway's answer is not settlement's backlog until its callback has arrived.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, and_, func, or_, select

from ordersys_pipelines.db.schema import (
    import_files,
    notifications,
    order_events,
    orders,
    payment_callbacks,
    refund_events,
    refunds,
)
from ordersys_pipelines.domain.imports.files import inbox_files
from ordersys_pipelines.domain.orders.states import AWAITING_PAYMENT, CREATED, FAILED, RESERVED
from ordersys_pipelines.domain.refunds.queries import IN_FLIGHT

STAGES = ("import", "workflow", "settlement", "refunds", "notifications", "analytics")
IN_PROGRESS_IMPORTS = ("importing", "staged")
REFUND_OUTCOMES = ("processed", "failed", "skipped")


@dataclass(frozen=True)
class StageFigures:
    stage: str
    unit: str  # what is counted: files, orders, callbacks ...
    backlog: int | None  # None: not known from the database (analytics: see the instance)
    done_last_hour: int | None
    oldest_waiting_since: datetime | None  # naive UTC
    note: str = ""

    def oldest_waiting_seconds(self, now: datetime) -> float | None:
        if self.oldest_waiting_since is None:
            return None
        return max((now - self.oldest_waiting_since).total_seconds(), 0.0)


def _as_datetime(value) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _count_min(conn: Connection, column, *where) -> tuple[int, datetime | None]:
    count, oldest = conn.execute(select(func.count(), func.min(column)).where(*where)).one()
    return int(count), _as_datetime(oldest)


def _count(conn: Connection, *where, table) -> int:
    return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def _earliest(*moments: datetime | None) -> datetime | None:
    known = [m for m in moments if m is not None]
    return min(known) if known else None


def import_figures(conn: Connection, now: datetime, inbox: Path | None) -> StageFigures:
    waiting = inbox_files(inbox) if inbox is not None else []
    mtimes = []
    for path in waiting:
        try:
            mtimes.append(datetime.fromtimestamp(path.stat().st_mtime, UTC).replace(tzinfo=None))
        except OSError:  # taken by an import between the listing and the stat
            continue
    importing, started = _count_min(conn, import_files.c.started_at, import_files.c.status.in_(IN_PROGRESS_IMPORTS))
    done = _count(conn, import_files.c.status == "completed", import_files.c.finished_at >= now - timedelta(hours=1),
                  table=import_files)
    return StageFigures(
        "import", "files", len(mtimes) + importing, done, _earliest(started, *mtimes),
        note=f"{len(mtimes)} in the inbox, {importing} importing",
    )


def workflow_figures(conn: Connection, now: datetime) -> StageFigures:
    # Created orders of a file still importing are not eligible yet; they count once it completes.
    eligible = or_(
        orders.c.status == RESERVED,
        and_(
            orders.c.status == CREATED,
            or_(orders.c.import_file_id.is_(None), orders.c.import_file_id.in_(
                select(import_files.c.id).where(import_files.c.status == "completed"))),
        ),
    )
    waiting, oldest = _count_min(conn, orders.c.status_changed_at, eligible)
    # Each order leaves the workflow once: to awaiting_payment, or failed before payment.
    done = _count(
        conn,
        order_events.c.created_at >= now - timedelta(hours=1),
        or_(order_events.c.to_status == AWAITING_PAYMENT,
            and_(order_events.c.to_status == FAILED, order_events.c.from_status.in_((CREATED, RESERVED)))),
        table=order_events,
    )
    return StageFigures("workflow", "orders", waiting, done, oldest)


def settlement_figures(conn: Connection, now: datetime) -> StageFigures:
    due = and_(payment_callbacks.c.status == "pending", payment_callbacks.c.available_at <= now)
    waiting, oldest = _count_min(conn, payment_callbacks.c.available_at, due)
    done = _count(conn, payment_callbacks.c.processed_at >= now - timedelta(hours=1), table=payment_callbacks)
    awaiting = _count(conn, orders.c.status == AWAITING_PAYMENT, table=orders)
    return StageFigures("settlement", "callbacks", waiting, done, oldest, note=f"{awaiting} orders awaiting payment")


def refund_figures(conn: Connection, now: datetime) -> StageFigures:
    waiting, oldest = _count_min(conn, refunds.c.requested_at, refunds.c.status.in_(IN_FLIGHT))
    due = _count(conn, refunds.c.status.in_(IN_FLIGHT), refunds.c.next_attempt_at <= now, table=refunds)
    done = _count(conn, refund_events.c.created_at >= now - timedelta(hours=1),
                  refund_events.c.to_status.in_(REFUND_OUTCOMES), table=refund_events)
    return StageFigures("refunds", "refunds", waiting, done, oldest, note=f"{due} due now")


def notification_figures(conn: Connection, now: datetime) -> StageFigures:
    waiting, oldest = _count_min(conn, notifications.c.created_at, notifications.c.status.in_(("pending", "sending")))
    due = _count(conn, notifications.c.status == "pending", notifications.c.next_attempt_at <= now,
                 table=notifications)
    hour_ago = now - timedelta(hours=1)
    sent = _count(conn, notifications.c.status == "sent", notifications.c.sent_at >= hour_ago, table=notifications)
    # A notification that failed for good was last tried at its next_attempt_at.
    failed = _count(conn, notifications.c.status == "failed", notifications.c.next_attempt_at >= hour_ago,
                    table=notifications)
    return StageFigures("notifications", "notifications", waiting, sent + failed, oldest, note=f"{due} due now")


def read_stage_figures(conn: Connection, now: datetime, inbox: Path | None = None) -> list[StageFigures]:
    """The database's figures of every stage but analytics (whose work is known to the runs)."""
    return [
        import_figures(conn, now, inbox),
        workflow_figures(conn, now),
        settlement_figures(conn, now),
        refund_figures(conn, now),
        notification_figures(conn, now),
    ]
