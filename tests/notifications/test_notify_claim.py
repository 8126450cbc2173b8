"""The claim of a dispatch batch: the rows are locked, then stamped in the same statement that
marks them `sending`. A run killed (SIGKILL, a real process) before that commit leaves them
pending and unclaimed; killed after it, they wait for the lease; a concurrent run skips rows
another run has locked and not yet stamped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

from notify_support import Shop, log_lines
from sqlalchemy import event, update

from ordersys_pipelines.db.engine import get_engine, utcnow
from ordersys_pipelines.db.schema import notifications
from ordersys_pipelines.domain.notifications.dispatch import dispatch_batch, dispatch_pending

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 60

# Runs one dispatch batch and stops dead (a marker file says where) before the first UPDATE of
# notifications whose text contains `stop_at`.
_DYING_RUN = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from sqlalchemy import event
    from ordersys_pipelines.db.engine import get_engine
    from ordersys_pipelines.domain.notifications.config import NotifierConfig
    from ordersys_pipelines.domain.notifications import dispatch
    from ordersys_pipelines.domain.notifications.dispatch import dispatch_batch

    dispatch.FLUSH_SECONDS = 3600.0  # marks flushed by count only: the stop comes after every send
    url, log_file, stop_at, marker = sys.argv[1:5]
    engine = get_engine(url)

    @event.listens_for(engine, "before_cursor_execute")
    def wait_to_be_killed(conn, cursor, statement, *args):
        if statement.startswith("UPDATE notifications") and stop_at in statement:
            Path(marker).write_text("stopped")
            time.sleep(600)

    dispatch_batch(engine, NotifierConfig(log_file=log_file), claimant="dead-run")
""")


def _kill_run_at(url: str, log_file: Path, stop_at: str, tmp_path: Path) -> None:
    marker = tmp_path / "stopped"
    process = subprocess.Popen([sys.executable, "-c", _DYING_RUN, url, str(log_file), stop_at, str(marker)],
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + TIMEOUT
        while not marker.exists():
            assert process.poll() is None, "the run ended before it reached the statement"
            assert time.monotonic() < deadline, "the run did not reach the statement"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(TIMEOUT)


def test_a_run_killed_before_its_claim_commits_leaves_the_batch_to_the_next_run(
        shop, engine, db_url, log_file, config, tmp_path):
    shop.enqueue("order_confirmed", shop.orders(5))

    _kill_run_at(db_url, log_file, "claim_expires_at", tmp_path)  # the statement that claims

    rows = shop.notifications()
    assert [(row.status, row.claimed_by, row.attempts, row.subject) for row in rows] == [
        ("pending", None, 0, None)] * 5
    assert not log_file.exists() or log_lines(log_file) == []
    result = dispatch_pending(engine, config(), claimant="next-run")  # no lease to wait for
    assert (result.claimed, result.sent) == (5, 5)
    assert sorted(line["notification_id"] for line in log_lines(log_file)) == [row.id for row in rows]


def test_a_run_killed_after_sending_before_marking_is_repeated_once_its_lease_lapsed(
        shop, engine, db_url, log_file, config, tmp_path):
    shop.enqueue("order_confirmed", shop.orders(5))

    _kill_run_at(db_url, log_file, "sent_at", tmp_path)  # sent, the marks not written

    rows = shop.notifications()
    assert {(row.status, row.claimed_by) for row in rows} == {("sending", "dead-run")}
    assert all(row.subject and row.claim_expires_at > utcnow() for row in rows)
    assert dispatch_pending(engine, config(), claimant="too-early").claimed == 0  # the lease holds
    with engine.begin() as conn:  # the dead run's lease lapses
        conn.execute(update(notifications).values(claim_expires_at=utcnow() - timedelta(seconds=1)))

    result = dispatch_pending(engine, config(), claimant="next-run")

    assert result.sent == 5 and {row.status for row in shop.notifications()} == {"sent"}
    # At least once: the dead run's lines, then the repeat of each under the same event id.
    sent = Counter((line["notification_id"], line["event_id"]) for line in log_lines(log_file))
    assert sent == Counter({(row.id, row.dedup_key): 2 for row in rows})


def test_a_batch_is_claimed_and_marked_sending_with_one_write_per_row(shop, engine, config):
    shop.enqueue("order_shipped", shop.orders(6))
    updates: list[str] = []

    def record(conn, cursor, statement, *args):
        if statement.startswith("UPDATE notifications"):
            updates.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        assert dispatch_batch(engine, config(), claimant="run", limit=10).sent == 6
    finally:
        event.remove(engine, "before_cursor_execute", record)
    claim_and_texts, marks = updates  # nothing else writes the rows
    assert "claimed_by" in claim_and_texts and "subject" in claim_and_texts and "sent_at" in marks


def test_rows_another_run_has_locked_and_not_yet_stamped_are_skipped(pg_url, log_file, config):
    """Run A has locked its batch and stops before the statement that stamps it; run B meanwhile
    takes only the other rows. Then A goes on: every notification is sent once. (PostgreSQL:
    MariaDB reads a table of a few rows whole for an UPDATE by id, so there B waits for A's
    locks; its SKIP LOCKED claim is the one of test_two_dispatch_runs_at_once_...)"""
    shop = Shop(get_engine(pg_url))
    shop.enqueue("order_confirmed", shop.orders(10))
    engine = shop.engine
    a_locked, a_may_go = threading.Event(), threading.Event()
    results = {}

    def hold_run_a(conn, cursor, statement, *args):
        if threading.current_thread().name == "run-a" and statement.startswith("UPDATE notifications") \
                and "claim_expires_at" in statement and not a_locked.is_set():
            a_locked.set()
            a_may_go.wait(TIMEOUT)

    def run_a() -> None:
        results["run-a"] = dispatch_batch(engine, config(), claimant="run-a", limit=4)

    event.listen(engine, "before_cursor_execute", hold_run_a)
    thread = threading.Thread(target=run_a, name="run-a")
    try:
        thread.start()
        assert a_locked.wait(TIMEOUT)
        results["run-b"] = dispatch_pending(engine, config(), claimant="run-b")
    finally:
        a_may_go.set()
        thread.join(TIMEOUT)
        event.remove(engine, "before_cursor_execute", hold_run_a)

    assert (results["run-a"].sent, results["run-b"].sent) == (4, 6)
    rows = shop.notifications()
    assert {row.status for row in rows} == {"sent"}
    assert sorted(line["notification_id"] for line in log_lines(log_file)) == [row.id for row in rows]

