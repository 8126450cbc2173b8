"""The database schema (SQLAlchemy Core). The only module that knows table layouts.

Conventions: money is BIGINT minor units (cents); timestamps are naive UTC; every work table
has `claimed_by` / `claim_expires_at` so a crashed run's claims lapse and are taken again.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from ordersys_pipelines.db.types import TABLE_OPTIONS, LongText, Timestamp, now_default

# Integer on SQLite so the key is an alias of ROWID (autoincrement); BIGINT elsewhere.
Id = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _created_at() -> Column:
    return Column("created_at", Timestamp, nullable=False, server_default=now_default())


def _updated_at() -> Column:
    return Column("updated_at", Timestamp, nullable=False, server_default=now_default())


def _claim_columns() -> list[Column]:
    return [Column("claimed_by", String(64)), Column("claim_expires_at", Timestamp)]


customers = Table(
    "customers",
    metadata,
    Column("id", Id, primary_key=True),
    # A customer is keyed by e-mail or, for exports without e-mail, by the shop's customer id.
    Column("email", String(320), unique=True),
    Column("customer_ref", String(100), unique=True),
    Column("name", String(200), nullable=False, server_default=""),
    # Per-customer notification channel override (log, email, webhook); NULL = the default.
    Column("notify_channel", String(20)),
    _created_at(),
    CheckConstraint("email IS NOT NULL OR customer_ref IS NOT NULL", name="has_key"),
    **TABLE_OPTIONS,
)

products = Table(
    "products",
    metadata,
    Column("id", Id, primary_key=True),
    Column("sku", String(100), nullable=False, unique=True),
    Column("name", String(300), nullable=False, server_default=""),
    Column("price_cents", BigInteger, nullable=False, server_default="0"),
    Column("stock", BigInteger, nullable=False, server_default="0"),
    Column("reserved", BigInteger, nullable=False, server_default="0"),
    _created_at(),
    _updated_at(),
    CheckConstraint("price_cents >= 0", name="price_non_negative"),
    CheckConstraint("stock >= 0", name="stock_non_negative"),
    CheckConstraint("reserved >= 0", name="reserved_non_negative"),
    CheckConstraint("reserved <= stock", name="reserved_within_stock"),
    **TABLE_OPTIONS,
)

import_files = Table(
    "import_files",
    metadata,
    Column("id", Id, primary_key=True),
    Column("content_hash", String(64), nullable=False, unique=True),
    Column("original_name", String(500), nullable=False),
    Column("partition_key", String(300)),
    Column("kind", String(20), nullable=False, server_default="orders"),  # orders | inventory
    # importing → staged → completed | failed
    Column("status", String(20), nullable=False, server_default="importing"),
    Column("rows_read", BigInteger, nullable=False, server_default="0"),
    Column("lines_imported", BigInteger, nullable=False, server_default="0"),
    Column("orders_imported", BigInteger, nullable=False, server_default="0"),
    Column("rejected_rows", BigInteger, nullable=False, server_default="0"),
    Column("new_customers", BigInteger, nullable=False, server_default="0"),
    Column("new_products", BigInteger, nullable=False, server_default="0"),
    Column("chunks_committed", Integer, nullable=False, server_default="0"),
    # Physical data lines (counted from the bytes), blank ones skipped, and the further lines
    # of rows whose quoted values run over several lines: physical = rows + blank + continued.
    Column("physical_lines", BigInteger, nullable=False, server_default="0"),
    Column("blank_lines", BigInteger, nullable=False, server_default="0"),
    Column("continued_lines", BigInteger, nullable=False, server_default="0"),
    Column("error", Text),
    Column("run_id", String(64)),
    Column("started_at", Timestamp, nullable=False, server_default=now_default()),
    Column("finished_at", Timestamp),
    **TABLE_OPTIONS,
)

import_rejects = Table(
    "import_rejects",
    metadata,
    Column("id", Id, primary_key=True),
    Column("file_id", Id, ForeignKey("import_files.id", ondelete="CASCADE"), nullable=False),
    Column("line_number", BigInteger, nullable=False),  # physical line in the file, header = 1
    # The order the line belongs to (when it can be told): its other lines are rejected too.
    Column("order_ref", String(100)),
    Column("raw_text", Text, nullable=False),
    Column("reason", Text, nullable=False),
    _created_at(),
    Index("ix_import_rejects_file_line", "file_id", "line_number"),
    **TABLE_OPTIONS,
)

# Parsed, validated rows of a file being imported; each chunk is loaded and committed here,
# then one set-based merge turns the whole file into customers, products, orders and lines.
import_staging = Table(
    "import_staging",
    metadata,
    Column("file_id", Id, nullable=False),
    Column("line_number", BigInteger, nullable=False),
    Column("order_ref", String(100), nullable=False),
    Column("order_date", Timestamp, nullable=False),
    Column("customer_email", String(320)),
    Column("customer_ref", String(100)),
    Column("customer_name", String(200), nullable=False),
    Column("sku", String(100), nullable=False),
    Column("product_name", String(300), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("unit_price_cents", BigInteger, nullable=False),
    Index("ix_import_staging_file_line", "file_id", "line_number"),
    **TABLE_OPTIONS,
)

def _partial_index(name: str, predicate: str, *columns: str) -> Index:
    where = text(predicate)
    return Index(name, *columns, postgresql_where=where, sqlite_where=where)


def _state_index(name: str, state: str, *columns: str) -> Index:
    return _partial_index(name, f"status = '{state}'", *columns)


orders = Table(
    "orders",
    metadata,
    Column("id", Id, primary_key=True),
    Column("order_ref", String(100), nullable=False, unique=True),
    Column("customer_id", Id, ForeignKey("customers.id"), nullable=False),
    Column("order_date", Timestamp, nullable=False),  # UTC
    Column("status", String(30), nullable=False, server_default="created"),
    Column("status_reason", Text),
    Column("status_changed_at", Timestamp, nullable=False, server_default=now_default()),
    Column("total_cents", BigInteger, nullable=False),
    Column("payment_ref", String(64), unique=True),
    # NULL, partially_refunded or refunded
    Column("refund_state", String(30)),
    Column("import_file_id", Id, ForeignKey("import_files.id")),
    *_claim_columns(),
    _created_at(),
    _updated_at(),
    CheckConstraint("total_cents >= 0", name="total_non_negative"),
    # By state only while active (or failed), partial: PostgreSQL and SQLite. MariaDB has no
    # partial indexes and keeps ix_orders_status_date (status, order_date, order_ref) instead.
    _state_index("ix_orders_created_fifo", "created", "order_date", "order_ref"),
    _state_index("ix_orders_reserved_fifo", "reserved", "order_date", "order_ref"),
    _state_index("ix_orders_awaiting_since", "awaiting_payment", "status_changed_at", "id"),
    _state_index("ix_orders_failed_since", "failed", "status_changed_at"),
    Index("ix_orders_order_date", "order_date"),
    Index("ix_orders_customer_id", "customer_id"),
    **TABLE_OPTIONS,
)

order_lines = Table(
    "order_lines",
    metadata,
    Column("id", Id, primary_key=True),
    Column("order_id", Id, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    Column("line_no", Integer, nullable=False),
    Column("product_id", Id, ForeignKey("products.id"), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("unit_price_cents", BigInteger, nullable=False),
    UniqueConstraint("order_id", "line_no"),
    CheckConstraint("quantity > 0", name="quantity_positive"),
    CheckConstraint("unit_price_cents >= 0", name="price_non_negative"),
    Index("ix_order_lines_product_id", "product_id"),
    **TABLE_OPTIONS,
)

order_events = Table(
    "order_events",
    metadata,
    Column("id", Id, primary_key=True),
    Column("order_id", Id, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    Column("from_status", String(30)),
    Column("to_status", String(30), nullable=False),
    Column("reason", Text),
    Column("run_id", String(64)),
    _created_at(),
    Index("ix_order_events_order_id", "order_id"),
    # The analytics freshness sensor finds the days a finished run touched by its run id.
    Index("ix_order_events_run_id", "run_id"),
    **TABLE_OPTIONS,
)

# Every call the simulated gateway receives, so tests and operators can count payouts.
# (kind, reference) is unique: a retried refund call with the same reference is recognised.
gateway_calls = Table(
    "gateway_calls",
    metadata,
    Column("id", Id, primary_key=True),
    Column("kind", String(20), nullable=False),  # payment | refund
    Column("reference", String(100), nullable=False),
    Column("payment_ref", String(64)),
    Column("amount_cents", BigInteger, nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("reason", Text),
    Column("attempts", Integer, nullable=False, server_default="1"),
    _created_at(),
    UniqueConstraint("kind", "reference"),
    **TABLE_OPTIONS,
)

payment_callbacks = Table(
    "payment_callbacks",
    metadata,
    Column("id", Id, primary_key=True),
    Column("event_id", String(100), nullable=False, unique=True),
    Column("payment_ref", String(64)),
    # The raw signed body; for a delivery rejected on receipt only its escaped first bytes.
    Column("payload", LongText, nullable=False),
    Column("payload_kept", String(5), nullable=False, server_default="whole"),  # whole | head
    Column("body_bytes", BigInteger),  # size and SHA-256 of the body as delivered
    Column("body_sha256", String(64)),
    Column("remote_addr", String(64)),
    Column("signature", String(200)),
    Column("signed_at", BigInteger),  # the timestamp the signature covers (epoch seconds)
    Column("source", String(20), nullable=False, server_default="gateway"),
    # pending → applied | rejected
    Column("status", String(20), nullable=False, server_default="pending"),
    Column("reason", Text),
    Column("deliveries", Integer, nullable=False, server_default="1"),
    Column("received_at", Timestamp, nullable=False, server_default=now_default()),
    # When the simulated gateway lets the callback become visible (callback delay).
    Column("available_at", Timestamp, nullable=False, server_default=now_default()),
    Column("processed_at", Timestamp),
    Column("run_id", String(64)),
    # What a verified event says (approved | declined, and its amount), recorded when settlement
    # reads it; NULL for deliveries that could not be trusted or read. Reconciliation's input.
    Column("event_status", String(20)),
    Column("amount_cents", BigInteger),
    *_claim_columns(),
    # Partial (PostgreSQL, SQLite; migration 0008): a settled callback leaves them. MariaDB keeps
    # ix_payment_callbacks_status (status, available_at) and _payload_kept (payload_kept, id).
    _state_index("ix_payment_callbacks_pending", "pending", "id"),
    _state_index("ix_payment_callbacks_rejected", "rejected", "received_at"),
    # The bounded record of rejected deliveries, newest first, for pruning it to its cap.
    _partial_index("ix_payment_callbacks_head", "payload_kept = 'head'", "id"),
    Index("ix_payment_callbacks_payment_ref", "payment_ref"),
    **TABLE_OPTIONS,
)

refunds = Table(
    "refunds",
    metadata,
    Column("id", Id, primary_key=True),
    Column("order_id", Id, ForeignKey("orders.id"), nullable=False),
    Column("reference", String(100), nullable=False, unique=True),
    Column("amount_cents", BigInteger, nullable=False),
    # full | partial; payback: a payment approved after its order was cancelled or failed, returned
    # in full (reference "payback:<payment ref>"; never revenue, so never in the KPIs)
    Column("type", String(10), nullable=False),
    # pending → processing → processed | failed | skipped; rejected at request time
    Column("status", String(20), nullable=False, server_default="pending"),
    Column("reason", Text),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text),
    Column("next_attempt_at", Timestamp, nullable=False, server_default=now_default()),
    Column("requested_at", Timestamp, nullable=False, server_default=now_default()),
    Column("processed_at", Timestamp),
    *_claim_columns(),
    CheckConstraint("amount_cents >= 0", name="amount_non_negative"),
    Index("ix_refunds_status", "status", "next_attempt_at"),
    Index("ix_refunds_order_id", "order_id"),
    Index("ix_refunds_processed_at", "processed_at"),
    **TABLE_OPTIONS,
)

refund_events = Table(
    "refund_events",
    metadata,
    Column("id", Id, primary_key=True),
    Column("refund_id", Id, ForeignKey("refunds.id", ondelete="CASCADE"), nullable=False),
    Column("from_status", String(20)),
    Column("to_status", String(20), nullable=False),
    Column("reason", Text),
    Column("run_id", String(64)),
    _created_at(),
    Index("ix_refund_events_refund_id", "refund_id"),
    Index("ix_refund_events_run_id", "run_id"),
    **TABLE_OPTIONS,
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", Id, primary_key=True),
    Column("order_id", Id, ForeignKey("orders.id")),
    Column("refund_id", Id, ForeignKey("refunds.id")),
    Column("customer_id", Id, ForeignKey("customers.id")),
    Column("type", String(40), nullable=False),
    Column("channel", String(20)),  # chosen at dispatch when NULL
    Column("recipient", String(320)),
    Column("reason", Text),  # the cause to tell the customer (decline reason, failure ...)
    Column("subject", LongText),
    Column("body", LongText),
    Column("payload", LongText),
    # pending → sending → sent | failed (pending again after a transient failure)
    Column("status", String(20), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text),
    Column("next_attempt_at", Timestamp, nullable=False, server_default=now_default()),
    Column("sent_at", Timestamp),
    Column("dedup_key", String(200), nullable=False, unique=True),
    *_claim_columns(),
    _created_at(),
    # Dispatch's lookup: partial on PostgreSQL (migration 0010), a sent notification leaves it.
    # SQLite and MariaDB keep the full index (status, next_attempt_at).
    Index("ix_notifications_active", "next_attempt_at", "id",
          postgresql_where=text("status IN ('pending', 'sending')")).ddl_if(dialect="postgresql"),
    Index("ix_notifications_failed", "next_attempt_at",
          postgresql_where=text("status = 'failed'")).ddl_if(dialect="postgresql"),
    Index("ix_notifications_status", "status", "next_attempt_at").ddl_if(dialect=("sqlite", "mysql", "mariadb")),
    Index("ix_notifications_sent_at", "sent_at"),
    **TABLE_OPTIONS,
)

# What happened to a notification besides dispatch's own marks (a re-queue by an operator ...).
notification_events = Table(
    "notification_events",
    metadata,
    Column("id", Id, primary_key=True),
    Column("notification_id", Id, ForeignKey("notifications.id", ondelete="CASCADE"), nullable=False),
    Column("event", String(20), nullable=False),  # requeued
    Column("from_status", String(20)),
    Column("to_status", String(20), nullable=False),
    Column("attempts_before", Integer),
    Column("reason", Text),
    Column("actor", String(64)),
    _created_at(),
    Index("ix_notification_events_notification_id", "notification_id"),
    **TABLE_OPTIONS,
)

# A dispatch's circuit breaker per channel: `open` while the channel is down (untried
# notifications wait until retry_at), `closed` once it answered again.
notification_channel_state = Table(
    "notification_channel_state",
    metadata,
    Column("channel", String(20), primary_key=True),
    Column("state", String(10), nullable=False),  # closed | open
    Column("reason", Text),
    Column("failures", Integer, nullable=False, server_default="0"),  # in a row, when it opened
    Column("deferred", Integer, nullable=False, server_default="0"),  # handed back untried by that run
    Column("left_pending", Integer, nullable=False, server_default="0"),  # pending on the channel then
    Column("opened_at", Timestamp),
    Column("retry_at", Timestamp),
    Column("run_id", String(64)),
    _updated_at(),
    **TABLE_OPTIONS,
)

__all__ = [
    "customers",
    "gateway_calls",
    "import_files",
    "import_rejects",
    "import_staging",
    "metadata",
    "notification_channel_state",
    "notification_events",
    "notifications",
    "order_events",
    "order_lines",
    "orders",
    "payment_callbacks",
    "products",
    "refund_events",
    "refunds",
]
