"""`ordersys process` with more than one workflow batch waiting: the notifications are sent by
a second process alongside the workflow, each exactly once, and that process never outlives
the command or hides a failure."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from process_support import child_pids
from sqlalchemy import func, select, update
from workflow_helpers import add_order, add_products, status_counts

from ordersys_pipelines.cli import main
from ordersys_pipelines.cli import process as process_cli
from ordersys_pipelines.db.engine import get_engine, utcnow
from ordersys_pipelines.db.schema import notifications, orders
from ordersys_pipelines.run_launcher import process_start_ticks

ORDERS = 10
RUN_LINE = re.compile(r"^\[(?:\s*\d+|\+\s*\d+|end)\] (\w+)\s+run [0-9a-f]{8} ")
# The tests' backlogs are small: the second process is started for them too.
LAUNCH = ("import sys; from ordersys_pipelines.cli import main, process; process.ALONGSIDE_MIN_ORDERS = 0; "
          "sys.argv[0] = 'ordersys'; main()")


@pytest.fixture
def backlog(settings, monkeypatch):
    """Ten one-line orders in batches of four: three workflow rounds."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setattr(process_cli, "ALONGSIDE_MIN_ORDERS", 0)
    monkeypatch.setenv("ORDERSYS_BATCH_SIZE", "4")
    monkeypatch.setenv("ORDERSYS_GATEWAY_CALLBACK_DELAY", "0")
    monkeypatch.setenv("ORDERSYS_GATEWAY_APPROVAL_RATE", "1")
    engine = get_engine(settings.database_url)
    with engine.begin() as conn:
        add_products(conn, {"A": 100})
        for i in range(ORDERS):
            add_order(conn, f"P-{i}", [("A", 1)])
    return engine


def _process(*args: str):
    return CliRunner().invoke(main, ["process", "--no-analytics", *args], catch_exceptions=False)


def _run_lines(output: str) -> list[tuple[str, str]]:
    """(label, stage) of each run line the command printed."""
    return [(line.split("]")[0] + "]", match.group(1)) for line in output.splitlines()
            if (match := RUN_LINE.match(line))]


def _sent_once(engine, log_file: str) -> None:
    """Every notification sent, on its first attempt, and written to the log exactly once."""
    with engine.connect() as conn:
        rows = conn.execute(select(notifications.c.id, notifications.c.status, notifications.c.attempts)).all()
    assert len(rows) == 2 * ORDERS  # order_confirmed and payment_succeeded per order
    assert {(status, attempts) for _, status, attempts in rows} == {("sent", 1)}
    logged = [json.loads(line)["notification_id"] for line in Path(log_file).read_text(encoding="utf-8").splitlines()]
    assert sorted(logged) == sorted(row_id for row_id, _, _ in rows)


def _notification_labels(output: str) -> list[str]:
    return [label for label, stage in _run_lines(output) if stage == "notifications"]


def _alongside(labels: list[str]) -> bool:
    """Every notification run came from the second process ([+n]) or, once the workflow was
    done, from this one ([end]; on a backlog this small it may take them all): none in a round."""
    return bool(labels) and all(label.startswith(("[+", "[end")) for label in labels)


def test_notifications_are_sent_alongside_the_workflow_each_once(backlog, settings):
    result = _process()
    assert result.exit_code == 0, result.output
    lines = _run_lines(result.output)
    assert [stage for _, stage in lines].count("workflow") == 3
    labels = _notification_labels(result.output)
    # SQLite writes one transaction at a time: there is nothing to overlap, the rounds stay.
    assert _alongside(labels) == (backlog.dialect.name != "sqlite"), labels
    assert f"done: {len(lines)} run(s)" in result.output
    with backlog.connect() as conn:
        assert status_counts(conn) == {"finalized": ORDERS}
    _sent_once(backlog, settings.notify_log_file)
    assert "done: 0 run(s)" in _process().output  # nothing left, and no process started for it


def test_one_process_sends_after_each_round_as_before(backlog, settings):
    result = _process("--one-process")
    assert result.exit_code == 0, result.output
    labels = _notification_labels(result.output)
    assert labels and not any(label.startswith(("[+", "[end")) for label in labels)
    _sent_once(backlog, settings.notify_log_file)


def _spawned_child(pid: int) -> int | None:
    """The multiprocessing child (`spawn_main`) of process `pid`, if it has one yet."""
    for child in child_pids(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                return child
        except OSError:
            continue
    return None


def _gone(pid: int) -> bool:
    return process_start_ticks(pid) is None  # exited, or a zombie


def _sent(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(notifications)
                            .where(notifications.c.status == "sent")).scalar()


@pytest.fixture
def waiting_command(backlog):
    """`ordersys process` as its own process, waiting for an order another run holds for ten
    minutes, once its notifications process has sent everything else: (command, that child)."""
    with backlog.begin() as conn:
        order_id = add_order(conn, "P-held", [("A", 1)])
        conn.execute(update(orders).where(orders.c.id == order_id)
                     .values(claimed_by="a-run-that-died", claim_expires_at=utcnow() + timedelta(minutes=10)))
    command = subprocess.Popen([sys.executable, "-c", LAUNCH, "process", "--no-analytics", "--max-wait", "900"],
                               env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        child = None
        for _ in range(600):  # the spawned interpreter takes a few seconds to appear
            child = _spawned_child(command.pid)
            if child or command.poll() is not None:
                break
            time.sleep(0.1)
        assert child, command.communicate()[0] if command.poll() is not None else "no notifications process"
        for _ in range(600):
            if _sent(backlog) == 2 * ORDERS or command.poll() is not None:
                break
            time.sleep(0.1)
        assert _sent(backlog) == 2 * ORDERS and command.poll() is None
        yield command, child
    finally:
        if command.poll() is None:
            command.kill()
            command.communicate()


def _wait_until(condition, seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return condition()


@pytest.mark.parametrize("db_url", ["mariadb"], indirect=True)
def test_the_second_process_ends_when_the_command_is_killed(waiting_command):
    """kill -9 of the command: its notifications process sees it is orphaned and ends instead
    of polling forever."""
    command, child = waiting_command
    command.send_signal(signal.SIGKILL)
    command.wait()
    assert _wait_until(lambda: _gone(child))


@pytest.mark.parametrize("db_url", ["pg"], indirect=True)
def test_a_killed_second_process_fails_the_command_at_once(waiting_command):
    """kill -9 of the notifications process (the OOM killer, an operator): the command stops
    waiting and fails, naming it, instead of going on without anyone sending."""
    command, child = waiting_command
    os.kill(child, signal.SIGKILL)
    assert _wait_until(lambda: command.poll() is not None)
    output = command.communicate()[0]
    assert command.returncode != 0
    assert "the notifications process ended with exit code -9" in output, output


@pytest.mark.parametrize("db_url", ["pg"], indirect=True)
def test_ctrl_c_stops_both_processes_without_a_traceback(waiting_command):
    command, child = waiting_command
    os.killpg(command.pid, signal.SIGINT)
    assert _wait_until(lambda: command.poll() is not None)
    output = command.communicate()[0]
    assert command.returncode != 0 and "Aborted!" in output
    assert "Traceback" not in output, output
    assert _wait_until(lambda: _gone(child))


@pytest.mark.parametrize("args", [(), ("--one-process",)], ids=["alongside", "one-process"])
@pytest.mark.parametrize("db_url", ["pg"], indirect=True)
def test_a_channel_that_is_down_does_not_keep_the_command_going(backlog, settings, monkeypatch, args):
    """The webhook refuses every connection: its breaker opens, and while it is paused the
    notifications due on it are not work to start another run for (a run would take none of
    them); the command ends, and they stay pending for later."""
    monkeypatch.setenv("ORDERSYS_NOTIFY_CHANNEL", "webhook")
    monkeypatch.setenv("ORDERSYS_NOTIFY_WEBHOOK_URL", "http://127.0.0.1:9/hook")  # discard: refused

    def process_runs() -> int:
        command = subprocess.run([sys.executable, "-c", LAUNCH, "process", "--no-analytics", *args],
                                 env=dict(os.environ), capture_output=True, text=True, timeout=300)
        assert command.returncode == 0, command.stdout + command.stderr
        return int(re.search(r"done: (\d+) run\(s\)", command.stdout).group(1))

    assert process_runs() <= 5  # three workflow rounds and the dispatch run that opened the breaker
    with backlog.begin() as conn:  # new notifications, due now, on the paused channel
        for i in range(3):
            add_order(conn, f"P-late-{i}", [("A", 1)])
    assert process_runs() == 1  # the workflow's; no dispatch run until the pause ends
    assert _sent(backlog) == 0
    with backlog.connect() as conn:
        assert status_counts(conn) == {"finalized": ORDERS + 3}
        pending = conn.execute(select(func.count()).select_from(notifications)
                               .where(notifications.c.status == "pending")).scalar()
    assert pending == 2 * (ORDERS + 3)
