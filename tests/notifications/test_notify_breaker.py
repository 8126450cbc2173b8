"""A slow or down receiver costs attempts only for what was tried: the per-channel circuit
breaker, against a real HTTP receiver (a threaded http.server) and a real SMTP server."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from notify_support import free_port
from sqlalchemy import select, update

from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.schema import notification_channel_state, notifications
from ordersys_pipelines.domain.notifications.breaker import read_channel_states
from ordersys_pipelines.domain.notifications.dispatch import dispatch_pending as dispatch
from ordersys_pipelines.domain.notifications.dispatch import due_summary
from ordersys_pipelines.jobs.common import step_output_metadata
from ordersys_pipelines.jobs.notifications import notification_dispatch
from ordersys_pipelines.resources import DatabaseResource, NotifierResource

# The notifier's timeout where a test makes the receiver hang: a hung request is held well past
# it, and answered ones must still come in within it on a loaded 2-core machine (the receiver
# shares the test's process and GIL). Tests without a hang take the roomy ANSWERED.
TIMEOUT = 1.0
ANSWERED = 10.0


class Receiver:
    """A webhook receiver on 127.0.0.1. While `hanging` (or for the first `hang_first` requests) it
    holds a request past the client's timeout and drops it unanswered; `answers` maps an
    Idempotency-Key to the (status, body) to give it; everything else is accepted (200) and
    counted in `delivered`."""

    def __init__(self, port: int | None = None):
        self.hanging = False
        self.hang_first = 0
        self.answers: dict[str, tuple[int, str]] = {}
        self.seen: list[str] = []
        self.delivered: Counter = Counter()
        self._lock = threading.Lock()
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                key = self.headers["Idempotency-Key"]
                with receiver._lock:
                    receiver.seen.append(key)
                    hang = receiver.hanging or len(receiver.seen) <= receiver.hang_first
                    status, text = receiver.answers.get(key, (200, '{"ok": true}'))
                    if not hang and status == 200:
                        receiver.delivered[key] += 1
                if hang:
                    receiver._release.wait(TIMEOUT * 10)
                    self.close_connection = True
                    return
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port or 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receivers():
    started: list[Receiver] = []

    def start(port: int | None = None) -> Receiver:
        started.append(Receiver(port))
        return started[-1]

    yield start
    for receiver in started:
        receiver.stop()


def _webhook(config, url: str, timeout_seconds: float = ANSWERED, **overrides):
    return config(channel="webhook", webhook_url=url, timeout_seconds=timeout_seconds, **overrides)


def _state(engine, channel: str):
    with engine.connect() as conn:
        return conn.execute(select(notification_channel_state)
                            .where(notification_channel_state.c.channel == channel)).one_or_none()


def test_a_briefly_slow_receiver_gets_every_notification_exactly_once(shop, engine, receivers, config):
    """Three requests in a row time out, then the receiver recovers: three notifications used an
    attempt each, none failed, and in the end each was delivered once (before, the first timeout
    counted an attempt for the whole batch and three of them failed all 30)."""
    receiver = receivers()
    receiver.hang_first = 3
    shop.enqueue("order_shipped", shop.orders(30))

    result = dispatch(engine, _webhook(config, receiver.url, TIMEOUT, max_attempts=3), claimant="run")

    rows = shop.notifications()
    assert (result.sent, result.retried, result.failed, sum(result.deferred.values())) == (30, 3, 0, 0)
    assert [row.status for row in rows] == ["sent"] * 30
    assert Counter(row.attempts for row in rows) == {1: 27, 2: 3}
    assert receiver.delivered == Counter({row.dedup_key: 1 for row in rows})
    assert len(receiver.seen) == 33 and _state(engine, "webhook") is None  # the breaker never opened


def test_timeouts_in_a_row_open_the_breaker_and_the_rest_wait_untouched(shop, engine, receivers, config):
    receiver = receivers()
    receiver.hanging = True
    shop.enqueue("order_shipped", shop.orders(10))
    settings = _webhook(config, receiver.url, TIMEOUT, breaker_failures=3, breaker_pause_seconds=0)

    slow = dispatch(engine, settings, claimant="run-1")

    assert (slow.sent, slow.retried, slow.failed, slow.deferred) == (0, 3, 0, Counter(webhook=7))
    rows = shop.notifications()
    assert [(r.status, r.attempts, r.claimed_by) for r in rows] == [("pending", 1, None)] * 3 + [("pending", 0, None)] * 7
    assert all(r.last_error is None for r in rows[3:]) and "timed out" in rows[2].last_error
    [breaker] = slow.breakers
    assert (breaker.channel, breaker.state, breaker.failures, breaker.deferred, breaker.left_pending) == (
        "webhook", "open", 3, 7, 10)
    assert len(receiver.seen) == 3  # the other seven were never sent

    receiver.hanging = False  # back; the pause (0 s) is over: the next run probes and goes on
    back = dispatch(engine, replace(settings, timeout_seconds=ANSWERED), claimant="run-2")

    assert (back.sent, back.retried, back.failed) == (10, 0, 0)
    rows = shop.notifications()
    assert receiver.delivered == Counter({row.dedup_key: 1 for row in rows})
    assert Counter(r.attempts for r in rows) == {2: 3, 1: 7} and {r.status for r in rows} == {"sent"}
    state = _state(engine, "webhook")
    assert (state.state, state.run_id) == ("closed", "run-2")


def test_a_receiver_that_is_down_opens_the_breaker_and_the_run_says_so(shop, engine, db_url, receivers, config):
    """Connection refused: after 3 the channel is left alone for the run (later batches do not
    claim it, the log channel goes on), attempts of the untried stay 0, the metadata says so."""
    port = free_port()  # nothing listens here
    webhook_customer = shop.customer(email="hook@example.com", channel="webhook")
    webhook_orders = [shop.order(webhook_customer, f"W-{i}") for i in range(12)]
    shop.enqueue("order_confirmed", webhook_orders)
    shop.enqueue("order_confirmed", shop.orders(2, prefix="L", email="log@example.com"))
    notifier = NotifierResource(channel="log", webhook_url=f"http://127.0.0.1:{port}/hooks", backoff_seconds=0,
                                timeout_seconds=ANSWERED, batch_size=5, breaker_failures=3, breaker_pause_seconds=60)
    resources = {"database": DatabaseResource(url=db_url), "notifier": notifier}
    before = utcnow()

    run = notification_dispatch.execute_in_process(resources=resources)

    metadata = step_output_metadata(run, "dispatch_notifications")
    assert (metadata["claimed"], metadata["sent"], metadata["retried"], metadata["deferred"]) == (7, 2, 3, 2)
    assert metadata["channels_open"] == "webhook"
    table = metadata["channel_breakers"]
    assert "| webhook | open | webhook http://127.0.0.1:" in table and "ConnectionRefusedError" in table
    assert "| 3 | 2 | 12 |" in table  # three failures in a row, two handed back, twelve waiting
    rows = {row.order_id: row for row in shop.notifications()}
    hook_rows = sorted((rows[o] for o in webhook_orders), key=lambda r: r.id)  # claimed by id
    assert [(r.status, r.attempts, r.claimed_by) for r in hook_rows] == (
        [("pending", 1, None)] * 3 + [("pending", 0, None)] * 9)
    assert all(before + timedelta(seconds=59) <= r.next_attempt_at for r in hook_rows[3:5])  # the pause
    assert all(r.status == "sent" for o, r in rows.items() if o not in webhook_orders)
    state = _state(engine, "webhook")
    assert (state.state, state.failures, state.deferred, state.left_pending) == ("open", 3, 2, 12)
    assert state.retry_at >= before + timedelta(seconds=59) and "ConnectionRefusedError" in state.reason

    # During the pause the sensor sees nothing due on the channel and a run leaves it alone.
    with engine.connect() as conn:
        assert due_summary(conn, config=notifier.config)[0] == 0
        assert due_summary(conn)[0] == 10  # without the breaker: the retried three and seven never tried
    again = dispatch(engine, notifier.config, claimant="run-2")
    assert again.claimed == 0

    # The pause is over and the receiver is back on that port: everything goes, once each.
    receiver = receivers(port)
    with engine.begin() as conn:
        conn.execute(update(notification_channel_state).values(retry_at=utcnow() - timedelta(seconds=1)))
        conn.execute(update(notifications).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    back = dispatch(engine, notifier.config, claimant="run-3")
    assert (back.sent, back.retried, back.failed) == (12, 0, 0)
    assert receiver.delivered == Counter({r.dedup_key: 1 for r in hook_rows})
    with engine.connect() as conn:
        assert [(s.channel, s.state) for s in read_channel_states(conn)] == [("webhook", "closed")]


def test_a_half_open_probe_that_fails_opens_the_breaker_again_at_once(shop, engine, config):
    shop.enqueue("order_shipped", shop.orders(6))
    settings = _webhook(config, f"http://127.0.0.1:{free_port()}/", breaker_failures=2, breaker_pause_seconds=0)
    first = dispatch(engine, settings, claimant="run-1")
    assert (first.retried, sum(first.deferred.values())) == (2, 4)

    probe = dispatch(engine, settings, claimant="run-2")  # still down: one try, not two

    assert (probe.retried, sum(probe.deferred.values())) == (1, 5)
    assert sorted(r.attempts for r in shop.notifications()) == [0, 0, 0, 0, 1, 2]
    assert _state(engine, "webhook").state == "open"


def test_a_rejected_notification_alone_uses_an_attempt(shop, engine, receivers, config):
    """400 for one (a definite rejection: failed), 503 for another (retried later), the rest sent;
    one 503 between answers is not two channel failures in a row, so the breaker stays closed."""
    receiver = receivers()
    shop.enqueue("order_delivered", shop.orders(6))
    rows = shop.notifications()
    receiver.answers[rows[1].dedup_key] = (400, '{"error": "unknown customer"}')
    receiver.answers[rows[4].dedup_key] = (503, "maintenance")

    result = dispatch(engine, _webhook(config, receiver.url, backoff_seconds=60, breaker_failures=2), claimant="run")

    assert (result.sent, result.retried, result.failed, result.breakers) == (4, 1, 1, [])
    after = shop.notifications()
    assert [(r.status, r.attempts) for r in after] == [
        ("sent", 1), ("failed", 1), ("sent", 1), ("sent", 1), ("pending", 1), ("sent", 1)]
    assert after[1].last_error == f'HTTP 400 Bad Request from {receiver.url}: {{"error": "unknown customer"}}'
    assert _state(engine, "webhook") is None


def test_an_smtp_server_that_stops_opens_the_breaker_and_nothing_is_lost(shop, engine, smtp_factory, config):
    server = smtp_factory()
    settings = config(channel="email", smtp_port=server.port, breaker_failures=3, breaker_pause_seconds=0)
    shop.enqueue("order_confirmed", shop.orders(2, prefix="A"))
    assert dispatch(engine, settings, claimant="run-1").sent == 2
    server.stop()
    shop.enqueue("order_confirmed", shop.orders(8, prefix="B", email="bea@example.com"))

    down = dispatch(engine, settings, claimant="run-2")

    assert (down.sent, down.retried, down.failed, sum(down.deferred.values())) == (0, 3, 0, 5)
    waiting = [r for r in shop.notifications() if r.status == "pending"]
    assert sorted(r.attempts for r in waiting) == [0] * 5 + [1] * 3
    state = _state(engine, "email")
    assert state.state == "open" and f"SMTP server 127.0.0.1:{server.port} unavailable" in state.reason

    server = smtp_factory(port=server.port)
    back = dispatch(engine, settings, claimant="run-3")
    assert (back.sent, back.failed) == (8, 0)
    assert Counter(server.recorder.ids()) == Counter({r.id: 1 for r in waiting})
    assert _state(engine, "email").state == "closed"


def test_the_send_command_tells_about_an_open_channel(shop, settings, monkeypatch):
    from click.testing import CliRunner

    from ordersys_pipelines.cli import main

    monkeypatch.setenv("ORDERSYS_NOTIFY_CHANNEL", "webhook")
    monkeypatch.setenv("ORDERSYS_NOTIFY_WEBHOOK_URL", f"http://127.0.0.1:{free_port()}/")
    monkeypatch.setenv("ORDERSYS_NOTIFY_BREAKER_FAILURES", "2")
    shop.enqueue("order_shipped", shop.orders(4))

    sent = CliRunner().invoke(main, ["notifications", "send"])
    channels = CliRunner().invoke(main, ["notifications", "channels"])

    assert sent.exit_code == 0, sent.output
    assert "sent 0, retried 2, failed 0" in sent.output
    assert "channel webhook is down: webhook http://127.0.0.1:" in sent.output
    assert "2 handed back untried, 4 pending on it" in sent.output
    assert channels.exit_code == 0, channels.output
    [line] = [line for line in channels.output.splitlines() if line.startswith("webhook")]
    assert line.split()[:2] == ["webhook", "open"]


def test_poison_breaker_rows_never_halt_a_channel(shop, engine, receivers, config):
    """States written by hand: an open breaker without retry_at, one paused for a century, an
    unknown state and an unknown channel. Each open one is probed; the others are ignored."""
    receiver = receivers()
    far = utcnow() + timedelta(days=36500)
    with engine.begin() as conn:
        conn.execute(notification_channel_state.insert(), [
            {"channel": "webhook", "state": "open", "reason": "x" * 10_000, "retry_at": far},
            {"channel": "log", "state": "open", "reason": None, "retry_at": None},
            {"channel": "email", "state": "jammed", "reason": "\x07\x1b[31m", "retry_at": far},
            {"channel": "pigeon", "state": "open", "reason": "ü", "retry_at": far},
        ])
    shop.enqueue("order_shipped", shop.orders(3, prefix="H", channel="webhook"))
    shop.enqueue("order_shipped", shop.orders(2, prefix="L", email="log@example.com", channel="log"))
    settings = _webhook(config, receiver.url, breaker_pause_seconds=60)
    with engine.connect() as conn:
        assert due_summary(conn, config=settings)[0] == 5

    result = dispatch(engine, settings, claimant="run")

    assert (result.sent, result.failed) == (5, 0) and len(receiver.delivered) == 3
    with engine.connect() as conn:
        states = {s.channel: s.state for s in read_channel_states(conn)}
    assert states == {"webhook": "closed", "log": "closed", "email": "jammed", "pigeon": "open"}
