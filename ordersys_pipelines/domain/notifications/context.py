"""What a notification is about, loaded for a whole batch at once, and the template context.

Two queries serve a batch of any size: the notifications with their order, customer and refund,
and the lines of all their orders.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Connection, case, exists, select

from ordersys_pipelines.db.rowsets import in_ids
from ordersys_pipelines.db.schema import (
    customers,
    notifications,
    order_lines,
    orders,
    payment_callbacks,
    products,
    refunds,
)
from ordersys_pipelines.domain.money import for_customer
from ordersys_pipelines.domain.notifications.outbox import REFUND_TYPES
from ordersys_pipelines.domain.notifications.templates import Rendered


class Line(NamedTuple):  # a tuple: a batch builds one per order line
    sku: str
    name: str
    quantity: int
    unit_price_cents: int

    @property
    def total_cents(self) -> int:
        return self.quantity * self.unit_price_cents


@dataclass
class NotificationRow:
    id: int
    type: str
    dedup_key: str
    attempts: int
    channel: str | None
    recipient: str | None
    reason: str | None
    subject: str | None
    body: str | None
    payload: str | None
    created_at: datetime
    order_id: int | None
    order_ref: str | None
    order_date: datetime | None
    order_status: str | None
    total_cents: int | None
    customer_name: str | None
    customer_email: str | None
    customer_ref: str | None
    customer_channel: str | None
    refund_id: int | None
    refund_reference: str | None
    refund_amount_cents: int | None
    refund_type: str | None
    payment_state: str | None = None  # see payment_state()
    lines: list[Line] = field(default_factory=list)

    @property
    def rendered(self) -> bool:
        return self.subject is not None and self.body is not None


_ROW_FIELDS = [f.name for f in fields(NotificationRow) if f.name != "lines"]  # what load_rows selects
PAID_STATUSES = ("finalized", "shipped", "delivered")


def payment_state():
    """What a message may say about the order's money, as the database knows it now:
    `none` (no payment was ever started), `declined` (the gateway declined it), `returning` (a
    payment arrived after the order was cancelled or failed and is paid back), `paid`, or `pending` (started and not
    answered: it may still be approved). Only `none` and `declined` mean nothing was charged."""
    paybacks = refunds.alias("paybacks")  # the outer query joins refunds itself
    paid_back = exists().where(paybacks.c.order_id == orders.c.id, paybacks.c.type == "payback")
    # A verified decline, applied or not (a decline that finds the order cancelled is rejected,
    # yet it still says the gateway took nothing).
    # OFFSET 0 keeps this a lookup of the order's own callbacks through their payment_ref index.
    # Without it PostgreSQL may hash the declines of the whole table once per batch instead (it
    # costs the lookup as if every row got this far, where only unpaid orders do): 19 ms for a
    # batch of 1,000 notifications at 28,000 callbacks, a scan that grows with the table.
    declined = exists(
        select(payment_callbacks.c.id)
        .where(payment_callbacks.c.payment_ref == orders.c.payment_ref, payment_callbacks.c.event_status == "declined")
        .offset(0)
    )
    return case(
        (orders.c.payment_ref.is_(None), "none"),
        (paid_back, "returning"),
        (orders.c.status.in_(PAID_STATUSES), "paid"),
        (declined, "declined"),
        else_="pending",
    )


def load_rows(conn: Connection, ids: Iterable[int]) -> list[NotificationRow]:
    """The notifications `ids` (in id order) with their order, customer and refund; no lines."""
    n = notifications.c
    query = (
        select(
            n.id, n.type, n.dedup_key, n.attempts, n.channel, n.recipient, n.reason, n.subject, n.body,
            n.payload, n.created_at, n.order_id, orders.c.order_ref, orders.c.order_date,
            orders.c.status.label("order_status"), orders.c.total_cents,
            customers.c.name.label("customer_name"), customers.c.email.label("customer_email"),
            customers.c.customer_ref, customers.c.notify_channel.label("customer_channel"),
            n.refund_id, refunds.c.reference.label("refund_reference"),
            refunds.c.amount_cents.label("refund_amount_cents"), refunds.c.type.label("refund_type"),
            payment_state().label("payment_state"),
        )
        .select_from(notifications)
        .outerjoin(orders, orders.c.id == n.order_id)
        .outerjoin(customers, customers.c.id == n.customer_id)
        .outerjoin(refunds, refunds.c.id == n.refund_id)
        .where(in_ids(conn, n.id, ids))
        .order_by(n.id)
    )
    result = conn.execute(query)
    # Rows become NotificationRows by position (a mapping per row was a tenth of preparing a
    # batch), so the columns must be the fields in order.
    if list(result.keys()) != _ROW_FIELDS:
        raise RuntimeError(f"load_rows selects {list(result.keys())}, not NotificationRow's {_ROW_FIELDS}")
    return [NotificationRow(*row) for row in result.all()]


def attach_lines(conn: Connection, rows: list[NotificationRow]) -> None:
    """Load the order lines of every row's order in one query."""
    order_ids = sorted({row.order_id for row in rows if row.order_id is not None})
    if not order_ids:
        return
    query = (
        select(order_lines.c.order_id, products.c.sku, products.c.name, order_lines.c.quantity,
               order_lines.c.unit_price_cents)
        .join(products, products.c.id == order_lines.c.product_id)
        .where(in_ids(conn, order_lines.c.order_id, order_ids))
        .order_by(order_lines.c.order_id, order_lines.c.line_no)
    )
    by_order: dict[int, list[Line]] = defaultdict(list)
    for order_id, sku, name, quantity, unit_price in conn.execute(query).all():
        by_order[order_id].append(Line(sku, name, quantity, unit_price))
    for row in rows:
        row.lines = by_order.get(row.order_id, [])


class Fields(dict):
    """A dict whose keys a template reads as attributes (`line.sku`) without a failed attribute
    lookup first: Jinja2 tries getattr before the item, and the AttributeError it raised for every
    field of every line was a fifth of rendering. Names a dict has as methods still win, as in
    Jinja2; a missing name is an AttributeError, so StrictUndefined still reports it."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@functools.lru_cache(maxsize=65_536)
def _money_for_customer(cents: int, currency: str) -> str:
    # A shop's prices and totals repeat: formatting every amount of every message anew was a
    # tenth of preparing a batch.
    return for_customer(cents, currency)


def template_context(row: NotificationRow, currency: str) -> dict[str, Any]:
    """The fields a template may use. Refund fields exist only for refund notifications, so a
    refund field in an order template is a missing-field error rather than an empty value."""

    def money(cents: int | None) -> str | None:
        if cents is None:
            return None
        # Not cached for anything but an int: for_customer refuses the rest (a bool would hit 1's entry).
        return _money_for_customer(cents, currency) if type(cents) is int else for_customer(cents, currency)

    context: dict[str, Any] = {
        "type": row.type,
        "notification_id": row.id,
        "currency": currency,
        "order_ref": row.order_ref,
        "order_date": row.order_date.date().isoformat() if row.order_date else None,
        "order_status": row.order_status,
        "customer_name": row.customer_name or row.customer_email or row.customer_ref or "customer",
        "customer_email": row.customer_email,
        "total": money(row.total_cents),
        "total_cents": row.total_cents,
        "lines": [
            Fields(
                sku=line.sku,
                name=line.name,
                quantity=line.quantity,
                unit_price=money(line.unit_price_cents),
                unit_price_cents=line.unit_price_cents,
                line_total=money(line.total_cents),
                line_total_cents=line.total_cents,
            )
            for line in row.lines
        ],
        "reason": row.reason,
        "payment_state": row.payment_state,
    }
    if row.type in REFUND_TYPES:
        context.update(
            refund_reference=row.refund_reference,
            refund_amount=money(row.refund_amount_cents),
            refund_amount_cents=row.refund_amount_cents,
            refund_type=row.refund_type,
        )
    return context


def payload(row: NotificationRow, context: dict[str, Any], rendered: Rendered) -> str:
    """The JSON document a webhook receives (and the record of what was said)."""
    document = {
        "event_id": row.dedup_key,
        "notification_id": row.id,
        "type": row.type,
        "created_at": row.created_at.isoformat() + "Z",
        "order": {
            "ref": row.order_ref,
            "date": context["order_date"],
            "status": row.order_status,
            "total_cents": row.total_cents,
            "currency": context["currency"],
            "lines": [
                {key: line[key] for key in ("sku", "name", "quantity", "unit_price_cents", "line_total_cents")}
                for line in context["lines"]
            ],
        },
        "customer": {"name": row.customer_name, "email": row.customer_email},
        "refund": (
            {"reference": row.refund_reference, "amount_cents": row.refund_amount_cents, "type": row.refund_type}
            if row.refund_id is not None
            else None
        ),
        "reason": row.reason,
        "subject": rendered.subject,
        "body": rendered.body,
    }
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS).decode()
