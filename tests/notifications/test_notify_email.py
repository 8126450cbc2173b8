"""The e-mail channel against a real SMTP server (aiosmtpd), and overlapping dispatch runs."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from notify_support import Shop, free_port, login_checker
from sqlalchemy import update

from ordersys_pipelines.db.engine import get_engine, utcnow
from ordersys_pipelines.db.schema import notifications
from ordersys_pipelines.domain.notifications.dispatch import dispatch_batch, dispatch_pending


@pytest.fixture
def shop(sqlite_url) -> Shop:
    return Shop(get_engine(sqlite_url))


def test_email_with_non_ascii_names_and_subject(shop, smtp_server, config, tmp_path):
    (tmp_path / "order_confirmed.j2").write_text(
        "{% block subject %}Ihre Bestellung {{ order_ref }} ist bestätigt – danke, {{ customer_name }}!"
        "{% endblock %}{% block body %}Hallo {{ customer_name }},\n{% include '_lines.j2' %}\n{% endblock %}",
        encoding="utf-8",
    )
    customer = shop.customer(name="Zoë Ångström-Müller", email="zoe@example.com")
    order = shop.order(customer, "B-1", lines=[("SKU-Ü", "Crème brûlée ☕", 1, 123450)])
    shop.enqueue("order_confirmed", [order])

    result = dispatch_pending(shop.engine, config(channel="email", smtp_port=smtp_server.port,
                                                  templates_dir=str(tmp_path)), claimant="run")

    assert result.sent == 1
    [message] = smtp_server.messages
    subject = "Ihre Bestellung B-1 ist bestätigt – danke, Zoë Ångström-Müller!"
    assert message["Subject"] == subject
    assert message["To"].addresses[0].display_name == "Zoë Ångström-Müller"
    assert message["To"].addresses[0].addr_spec == "zoe@example.com"
    assert message["From"] == "orders@ordersys.local"
    assert message.get_content_charset() == "utf-8"
    assert "1 x Crème brûlée ☕ (SKU-Ü) at €1,234.50: €1,234.50" in message.get_content()
    headers = smtp_server.recorder.raw[0].split(b"\r\n\r\n", 1)[0]
    assert headers.isascii() and b"=?utf-8?" in headers  # RFC 2047 encoded words, not raw bytes
    row = shop.notifications()[0]
    assert (row.status, row.channel, row.recipient, row.subject) == ("sent", "email", "zoe@example.com", subject)
    assert int(message["X-Ordersys-Notification"]) == row.id and message["X-Ordersys-Event"] == row.dedup_key


def test_a_refused_recipient_fails_at_once_with_the_servers_reply(shop, smtp_server, config):
    smtp_server.recorder.refuse["nobody@example.com"] = (
        "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown")
    good = shop.orders(2, prefix="G", email="ann@example.com")
    bad = shop.orders(1, prefix="B", email="nobody@example.com")
    shop.enqueue("order_shipped", good + bad)

    result = dispatch_pending(shop.engine, config(channel="email", smtp_port=smtp_server.port, max_attempts=5),
                              claimant="run")

    assert (result.sent, result.failed, result.retried) == (2, 1, 0)
    rows = {row.order_id: row for row in shop.notifications()}
    refused = rows[bad[0]]
    assert (refused.status, refused.attempts) == ("failed", 1)
    assert refused.last_error == ("recipient nobody@example.com refused: 550 5.1.1 <nobody@example.com>: "
                                  "Recipient address rejected: User unknown")
    assert sorted(smtp_server.recorder.ids()) == sorted(rows[o].id for o in good)  # the session went on


def test_a_temporary_smtp_refusal_is_retried_later(shop, smtp_server, config):
    smtp_server.recorder.refuse["busy@example.com"] = "451 4.3.0 Mailbox temporarily unavailable"
    shop.enqueue("order_shipped", shop.orders(1, email="busy@example.com"))
    before = utcnow()

    result = dispatch_pending(shop.engine, config(channel="email", smtp_port=smtp_server.port,
                                                  backoff_seconds=60), claimant="run")

    row = shop.notifications()[0]
    assert (result.retried, row.status, row.attempts, row.claimed_by) == (1, "pending", 1, None)
    assert "451 4.3.0 Mailbox temporarily unavailable" in row.last_error
    assert before + timedelta(seconds=59) <= row.next_attempt_at <= utcnow() + timedelta(seconds=61)
    assert dispatch_pending(shop.engine, config(channel="email", smtp_port=smtp_server.port),
                            claimant="too-early").claimed == 0


def test_backoff_doubles_with_each_attempt(shop, config):
    shop.enqueue("order_shipped", shop.orders(1))
    down = config(channel="email", smtp_port=free_port(), backoff_seconds=10, max_attempts=9)
    for attempt, delay in [(1, 10), (2, 20), (3, 40), (4, 80)]:
        started = utcnow()
        with shop.engine.begin() as conn:  # the wait has passed
            conn.execute(update(notifications).values(next_attempt_at=started - timedelta(seconds=1)))
        assert dispatch_batch(shop.engine, down, claimant=f"run-{attempt}").retried == 1
        row = shop.notifications()[0]
        assert row.attempts == attempt
        assert started + timedelta(seconds=delay - 1) <= row.next_attempt_at <= utcnow() + timedelta(seconds=delay)


def test_smtp_down_retries_then_fails_and_a_new_event_goes_out_once_it_is_back(shop, smtp_factory, config):
    port = free_port()  # nothing listens here yet
    orders = shop.orders(3)
    shop.enqueue("order_confirmed", orders)
    # The breaker out of the way (it would stop after 5 refusals in a row): this is the retry policy.
    settings = config(channel="email", smtp_port=port, max_attempts=3, breaker_failures=10)

    down = dispatch_pending(shop.engine, settings, claimant="run-1")

    assert (down.sent, down.retried, down.failed, down.batches) == (0, 6, 3, 3)
    for row in shop.notifications():
        assert (row.status, row.attempts, row.sent_at) == ("failed", 3, None)
        assert row.last_error.startswith(f"gave up after 3 attempts: SMTP server 127.0.0.1:{port} unavailable: "
                                         "ConnectionRefusedError")

    server = smtp_factory(port=port)
    shop.enqueue("order_shipped", orders[:1])
    back = dispatch_pending(shop.engine, settings, claimant="run-2")

    assert (back.sent, back.failed, back.retried) == (1, 0, 0)
    [message] = server.messages
    assert message["Subject"] == "Your order O-0000 is on its way"
    statuses = Counter((row.type, row.status) for row in shop.notifications())
    assert statuses == {("order_confirmed", "failed"): 3, ("order_shipped", "sent"): 1}


def test_two_dispatch_runs_at_once_send_every_notification_exactly_once(locking_url, smtp_server, config):
    shop = Shop(get_engine(locking_url))
    orders = shop.orders(30)
    shop.enqueue("order_confirmed", orders)
    shop.enqueue("order_shipped", orders)
    smtp_server.recorder.delay_seconds = 0.02  # a slow server (1.2 s in all), so the runs overlap
    settings = config(channel="email", smtp_port=smtp_server.port)
    barrier = threading.Barrier(2)
    results = {}

    def run(name: str) -> None:
        barrier.wait()
        results[name] = dispatch_pending(shop.engine, settings, claimant=name, limit=4)

    threads = [threading.Thread(target=run, args=(name,)) for name in ("run-a", "run-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    received = Counter(smtp_server.recorder.ids())
    rows = shop.notifications()
    assert len(rows) == 60 and set(received) == {row.id for row in rows}
    assert set(received.values()) == {1}  # nobody got a message twice
    assert all(row.status == "sent" and row.attempts == 1 for row in rows)
    assert results["run-a"].sent + results["run-b"].sent == 60
    assert results["run-a"].sent and results["run-b"].sent  # both runs did part of the work


def test_login_is_used_and_a_refused_login_is_retried(shop, smtp_factory, config):
    server = smtp_factory(authenticator=login_checker("shop", "s3cret"), auth_require_tls=False)
    shop.enqueue("order_delivered", shop.orders(1))
    wrong = config(channel="email", smtp_port=server.port, smtp_username="shop", smtp_password="guess")

    assert dispatch_pending(shop.engine, wrong, claimant="run-1", max_batches=1).retried == 1
    row = shop.notifications()[0]
    assert "refused the session" in row.last_error and "535" in row.last_error

    right = config(channel="email", smtp_port=server.port, smtp_username="shop", smtp_password="s3cret")
    assert dispatch_pending(shop.engine, right, claimant="run-2").sent == 1
    assert len(server.messages) == 1


def test_starttls_required_but_not_offered_is_a_clear_transient_error(shop, smtp_server, config):
    shop.enqueue("order_delivered", shop.orders(1))
    settings = config(channel="email", smtp_port=smtp_server.port, smtp_tls=True, max_attempts=1)
    assert dispatch_pending(shop.engine, settings, claimant="run").failed == 1
    row = shop.notifications()[0]
    assert row.last_error == (f"gave up after 1 attempts: SMTP server 127.0.0.1:{smtp_server.port} "
                              "does not offer STARTTLS")
    assert smtp_server.messages == []


def test_a_customer_without_an_email_address_fails_by_email(shop, smtp_server, config):
    shop.enqueue("order_shipped", shop.orders(1, email=None, ref="SHOP-CUST-1"))
    settings = config(channel="email", smtp_port=smtp_server.port)
    assert dispatch_pending(shop.engine, settings, claimant="run").failed == 1
    assert shop.notifications()[0].last_error == "the customer has no e-mail address"


def test_one_smtp_session_serves_every_batch_of_a_run(shop, smtp_server, config):
    shop.enqueue("order_shipped", shop.orders(7))
    result = dispatch_pending(shop.engine, config(channel="email", smtp_port=smtp_server.port, batch_size=3),
                              claimant="run")
    assert (result.sent, result.batches) == (7, 3)
    assert len(smtp_server.recorder.peers) == 7 and len(set(smtp_server.recorder.peers)) == 1
