"""Helpers of the notification tests: shop data made with SQL inserts, a real SMTP server
(aiosmtpd) recording what it receives, fast-retry notifier settings."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from sqlalchemy import Engine, insert, select

from ordersys_pipelines.db.schema import customers, notifications, order_lines, orders, products, refunds
from ordersys_pipelines.domain.notifications.config import NotifierConfig
from ordersys_pipelines.domain.notifications.outbox import enqueue_for_orders, enqueue_for_refunds


class Shop:
    """Customers, products, orders, lines and refunds inserted with SQL, and the outbox."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._products: dict[str, int] = {}

    def customer(self, name: str = "Ann Example", email: str | None = "ann@example.com",
                 channel: str | None = None, ref: str | None = None) -> int:
        with self.engine.begin() as conn:
            return conn.execute(
                insert(customers).values(name=name, email=email, customer_ref=ref, notify_channel=channel)
                .returning(customers.c.id)
            ).scalar_one()

    def order(self, customer_id: int, ref: str, lines=(("SKU-1", "Widget", 2, 61725),),
              status: str = "finalized", reason: str | None = None) -> int:
        with self.engine.begin() as conn:
            for sku, name, _, price in lines:
                if sku not in self._products:
                    self._products[sku] = conn.execute(
                        insert(products).values(sku=sku, name=name, price_cents=price, stock=100)
                        .returning(products.c.id)
                    ).scalar_one()
            order_id = conn.execute(
                insert(orders).values(
                    order_ref=ref, customer_id=customer_id, order_date=datetime(2024, 3, 9, 14, 30),
                    total_cents=sum(qty * price for _, _, qty, price in lines), status=status,
                    status_reason=reason,
                ).returning(orders.c.id)
            ).scalar_one()
            conn.execute(insert(order_lines), [
                {"order_id": order_id, "line_no": i, "product_id": self._products[sku], "quantity": qty,
                 "unit_price_cents": price}
                for i, (sku, _, qty, price) in enumerate(lines, start=1)
            ])
        return order_id

    def refund(self, order_id: int, amount_cents: int, reference: str, status: str = "processed",
               reason: str | None = "damaged in transit", last_error: str | None = None) -> int:
        with self.engine.begin() as conn:
            return conn.execute(
                insert(refunds).values(order_id=order_id, reference=reference, amount_cents=amount_cents,
                                       type="partial", status=status, reason=reason, last_error=last_error)
                .returning(refunds.c.id)
            ).scalar_one()

    def enqueue(self, notification_type: str, ids: list[int]) -> int:
        with self.engine.begin() as conn:
            if notification_type.startswith("refund_"):
                return enqueue_for_refunds(conn, notification_type, ids)
            return enqueue_for_orders(conn, notification_type, ids)

    def orders(self, count: int, prefix: str = "O", **customer) -> list[int]:
        customer_id = self.customer(**customer)
        return [self.order(customer_id, f"{prefix}-{i:04d}") for i in range(count)]

    def notifications(self) -> list:
        with self.engine.connect() as conn:
            return conn.execute(select(notifications).order_by(notifications.c.id)).all()

    def notification(self, nid: int):
        with self.engine.connect() as conn:
            return conn.execute(select(notifications).where(notifications.c.id == nid)).one()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class SmtpRecorder:
    """aiosmtpd handler that keeps every accepted message and refuses chosen recipients."""

    refuse: dict[str, str] = field(default_factory=dict)  # address → SMTP reply
    delay_seconds: float = 0.0
    messages: list[EmailMessage] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    peers: list = field(default_factory=list)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.peers.append(session.peer)  # one (host, port) per SMTP session
        if self.delay_seconds:
            time.sleep(self.delay_seconds)  # holds the server's loop: a slow server
        self.raw.append(envelope.original_content)
        self.messages.append(message_from_bytes(envelope.original_content, policy=policy.default))
        return "250 Message accepted for delivery"

    def ids(self) -> list[int]:
        return [int(message["X-Ordersys-Notification"]) for message in self.messages]


class SmtpServer:
    def __init__(self, port: int | None = None, **controller_options):
        self.port = port or free_port()
        self.recorder = SmtpRecorder()
        self._options = controller_options
        self._controller: Controller | None = None

    def start(self) -> SmtpServer:
        self._controller = Controller(self.recorder, hostname="127.0.0.1", port=self.port, **self._options)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def messages(self) -> list[EmailMessage]:
        return self.recorder.messages


def login_checker(username: str, password: str):
    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login.decode() == username and auth_data.password.decode() == password
        return AuthResult(success=ok, handled=False)  # unhandled: the server answers 535

    return authenticator


@dataclass
class WebhookServer:
    url: str
    requests: list[dict] = field(default_factory=list)
    statuses: list[tuple[int, str]] = field(default_factory=list)  # responses to give, then 200
    on_request: Callable[[dict], None] | None = None  # runs before the response is given


def log_lines(path) -> list[dict]:
    """The JSON lines the log channel wrote to `path`."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()] \
        if Path(path).exists() else []


def make_config(**overrides) -> NotifierConfig:
    """NotifierConfig with fast retries (no backoff, three attempts) and `overrides`."""
    return NotifierConfig(**{"backoff_seconds": 0.0, "max_attempts": 3, "timeout_seconds": 5.0, **overrides})


