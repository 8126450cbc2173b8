"""The webhook channel on one keep-alive connection, against a real HTTP/1.1 receiver that
misbehaves: drops idle connections, hangs, answers some requests with errors, or sees the
dispatching process die half-way through a batch."""

from __future__ import annotations

import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from notify_support import free_port
from sqlalchemy import update

from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.schema import notifications
from ordersys_pipelines.domain.notifications import channels as channels_module
from ordersys_pipelines.domain.notifications import dispatch
from ordersys_pipelines.domain.notifications.dispatch import dispatch_pending


class KeepAliveReceiver:
    """HTTP/1.1 on 127.0.0.1. `statuses` answer the requests in turn (then 200); after the
    requests numbered in `drop_after` it closes the connection without saying so (as a server
    whose idle timeout passed); the requests numbered in `hang` are held, unanswered, until
    `release` is set (at the latest after 30 s)."""

    def __init__(self):
        self.keys: list[str] = []  # Idempotency-Key of every request, in arrival order
        self.connections: set = set()
        self.statuses: list[int] = []
        self.drop_after: set[int] = set()
        self.hang: set[int] = set()
        self.release = threading.Event()
        self.answered_hung = False
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    receiver.keys.append(self.headers["Idempotency-Key"])
                    receiver.connections.add(self.client_address)
                    number = len(receiver.keys)
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                if number in receiver.hang:
                    receiver.release.wait(30)
                    receiver.answered_hung = True
                body = b'{"ok": true}' if status == 200 else f"error {status}".encode()
                self.wfile.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
                if number in receiver.drop_after:
                    self.close_connection = True  # closed with no "Connection: close" said

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver():
    started = KeepAliveReceiver()
    yield started
    started.stop()


def _webhook(config, receiver: KeepAliveReceiver, **overrides):
    return config(channel="webhook", webhook_url=receiver.url, **overrides)


def _keys(shop) -> list[str]:
    return [row.dedup_key for row in shop.notifications()]


def test_one_connection_serves_every_batch_of_a_run(shop, engine, receiver, config):
    shop.enqueue("order_shipped", shop.orders(7))
    result = dispatch_pending(engine, _webhook(config, receiver, batch_size=3), claimant="run")
    assert (result.sent, result.batches) == (7, 3)
    assert receiver.keys == _keys(shop) and len(receiver.connections) == 1


def test_a_connection_the_receiver_dropped_while_idle_is_opened_again(shop, engine, receiver, config):
    """The request that finds the connection closed is sent again on a new one: each
    notification arrives once, with one attempt, and none is marked failed or retried."""
    receiver.drop_after = {2, 4}
    shop.enqueue("order_shipped", shop.orders(6))

    result = dispatch_pending(engine, _webhook(config, receiver), claimant="run")

    assert (result.sent, result.retried, result.failed) == (6, 0, 0)
    assert receiver.keys == _keys(shop) and len(receiver.connections) == 3
    assert [(row.status, row.attempts) for row in shop.notifications()] == [("sent", 1)] * 6


def test_a_receiver_that_hangs_costs_one_timeout_not_the_batch(shop, engine, receiver, config):
    """The hung request times out (retried later), the connection it held is dropped, and the rest
    of the batch goes out on a new one while the receiver still sits on the first request."""
    receiver.hang = {2}
    shop.enqueue("order_shipped", shop.orders(5))

    settings = _webhook(config, receiver, timeout_seconds=1.0, backoff_seconds=60)
    result = dispatch_pending(engine, settings, claimant="run")

    assert not receiver.answered_hung  # dispatch did not wait for the hung answer
    assert (result.sent, result.retried) == (4, 1)
    rows = shop.notifications()
    assert [row.status for row in rows] == ["sent", "pending", "sent", "sent", "sent"]
    assert "timed out" in rows[1].last_error and rows[1].attempts == 1
    assert receiver.keys == [row.dedup_key for row in rows] and len(receiver.connections) == 2


def test_errors_in_the_middle_of_a_batch_mark_exactly_their_rows(shop, engine, receiver, config):
    """5xx is retried, 4xx fails, the others are sent; an error answer does not cost the
    connection (its body is read), and every row is marked by its own answer."""
    receiver.statuses = [200, 500, 200, 422, 200, 503, 200]
    shop.enqueue("order_shipped", shop.orders(7))

    result = dispatch_pending(engine, _webhook(config, receiver, max_attempts=5, backoff_seconds=60), claimant="run")

    assert (result.sent, result.retried, result.failed) == (4, 2, 1)
    rows = shop.notifications()
    assert [row.status for row in rows] == ["sent", "pending", "sent", "failed", "sent", "pending", "sent"]
    assert all(row.attempts == 1 for row in rows)
    assert [row.sent_at is not None for row in rows] == [row.status == "sent" for row in rows]
    assert rows[3].last_error == f"HTTP 422 X from {receiver.url}: error 422"
    assert len(receiver.connections) == 1


def test_a_run_that_dies_half_way_leaves_only_what_it_marked_sent(shop, engine, receiver, config, monkeypatch):
    """Marks are written in groups: the process dies after the fifth send, with two groups of two
    marked. Those four stay sent; the fifth (sent, not marked) and the untried two are sent by the
    next run once the lease has lapsed: at least once, the repeat under the same Idempotency-Key."""
    monkeypatch.setattr(dispatch, "FLUSH_EVERY", 2)
    real_send = channels_module.WebhookChannel.send
    sends = []

    def send_then_die(self, message):
        real_send(self, message)
        sends.append(message.notification_id)
        if len(sends) == 5:
            raise KeyboardInterrupt("killed")  # not an error a batch survives

    monkeypatch.setattr(channels_module.WebhookChannel, "send", send_then_die)
    shop.enqueue("order_shipped", shop.orders(7))
    with pytest.raises(KeyboardInterrupt):
        dispatch_pending(engine, _webhook(config, receiver), claimant="dead-run")

    rows = shop.notifications()
    assert [row.status for row in rows] == ["sent"] * 4 + ["sending"] * 3
    monkeypatch.setattr(channels_module.WebhookChannel, "send", real_send)
    with engine.begin() as conn:  # the dead run's lease lapses
        conn.execute(update(notifications).where(notifications.c.status == "sending")
                     .values(claim_expires_at=utcnow() - timedelta(seconds=1)))

    result = dispatch_pending(engine, _webhook(config, receiver), claimant="next-run")

    keys = [row.dedup_key for row in rows]
    assert result.sent == 3 and [row.status for row in shop.notifications()] == ["sent"] * 7
    assert receiver.keys == keys[:5] + keys[4:]


def test_credentials_in_the_url_stay_out_of_the_errors_and_a_bad_scheme_waits(shop, engine, config):
    shop.enqueue("order_shipped", shop.orders(2))
    port = free_port()
    result = dispatch_pending(engine, config(channel="webhook", webhook_url=f"http://hook:s3cret@127.0.0.1:{port}/h",
                                             backoff_seconds=60), claimant="run")
    assert result.retried == 2
    errors = [row.last_error for row in shop.notifications()]
    assert all(f"webhook http://127.0.0.1:{port}/h unavailable" in e and "s3cret" not in e for e in errors)

    with engine.begin() as conn:
        conn.execute(update(notifications).values(next_attempt_at=utcnow()))
    result = dispatch_pending(engine, config(channel="webhook", webhook_url="ftp://127.0.0.1/h", backoff_seconds=60),
                              claimant="run2")
    assert (result.retried, result.failed) == (2, 0)  # a setting to fix, not a message to drop
    assert all("is not an http(s) URL" in row.last_error for row in shop.notifications())
