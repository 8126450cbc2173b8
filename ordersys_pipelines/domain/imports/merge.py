"""Turn a file's staged rows into customers, products, orders and order lines, set-wise.

Runs after every chunk of the file is staged. On PostgreSQL and MariaDB in ONE transaction
(`merge_file`). On SQLite, whose one writer blocks every other transaction meanwhile, in
bounded steps (`check_orders`, then `merge_orders` per slice of order_refs, each its own
transaction): an order is still written whole in one step, and none is eligible for the
workflow before the file is `completed`. Either way the lines of one order are imported
together even when they lie far apart in the file or straddle chunks.

Orders are all-or-nothing. A whole order is rejected, every line with a reason naming why,
when one of its lines was rejected while staging; when its lines disagree on what is one value
per order (the customer, the order date: either choice would import an order the file does not
say; names may differ, since an order holds none); when its total does not fit 64-bit cents.
An order_ref that an earlier file brought in is replaced (header and lines) while that order
is still `created`; once it has moved on, this file's lines for it are rejected naming the
order and its state.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)

from ordersys_pipelines.db.dialect import insert_new, is_mysql, lock_rows
from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.schema import (
    customers,
    import_files,
    import_rejects,
    import_staging,
    order_lines,
    orders,
    products,
)
from ordersys_pipelines.db.types import TABLE_OPTIONS, Timestamp
from ordersys_pipelines.domain.money import plain

_temp = MetaData()


def _temporary(name: str, *columns: Column) -> Table:
    """A temporary table of the merge, keyed by order_ref (dropped at commit / after the merge)."""
    return Table(name, _temp, *columns, prefixes=["TEMPORARY"], postgresql_on_commit="DROP", **TABLE_OPTIONS)


# One row per order_ref of the file being merged (dropped at commit / after the merge).
file_orders = _temporary(
    "tmp_import_orders",
    Column("order_ref", String(100), nullable=False),
    Column("order_date", Timestamp, nullable=False),
    Column("customer_email", String(320)),
    Column("customer_ref", String(100)),
    Column("customer_name", String(200), nullable=False),
    Column("key_min", String(320)),
    Column("key_max", String(320)),
    Column("date_max", Timestamp, nullable=False),
    Column("total_cents", BigInteger, nullable=False),
)
# The ids of the orders this merge inserted or replaced, so the lines join a table the size of
# the file rather than all of `orders`.
file_order_ids = _temporary(
    "tmp_import_order_ids",
    Column("order_ref", String(100), nullable=False),
    Column("order_id", BigInteger, nullable=False),
)
# Orders of the file rejected whole, with the reason every one of their lines gets.
rejected_orders = _temporary(
    "tmp_import_rejected_orders",
    Column("order_ref", String(100), nullable=False),
    Column("reason", Text, nullable=False),
)
# The largest total an order may have: what a signed 64-bit column of cents holds.
MAX_TOTAL_CENTS = 2**63 - 1


# On MySQL and SQLite the same tables with a key on order_ref. Neither plans a hash join, so
# without it every join of the staged lines with them is a nested loop over both: on MariaDB a
# 200k-line file took over 14 minutes in one INSERT, on SQLite the lines of a 100k-line file
# 371 s (a scan of the file's order ids per staged line), holding the write lock all along.
# Declared inline as UNIQUE (order_ref is unique in both), because on MySQL a separate CREATE
# INDEX commits the transaction, even on a temporary table. PostgreSQL hashes the join.
_KEYED_TEMP_TABLES = {
    table.name: Table(
        table.name,
        MetaData(),
        *[Column(c.name, c.type, nullable=c.nullable) for c in table.columns],
        UniqueConstraint("order_ref"),
        prefixes=["TEMPORARY"],
        **TABLE_OPTIONS,
    )
    for table in (file_orders, file_order_ids, rejected_orders)
}


@dataclass
class MergeCounts:
    lines_imported: int = 0
    orders: int = 0
    new_customers: int = 0
    new_products: int = 0
    rejected: int = 0


def _staged_text():
    """A staged row written back as CSV-like text, for rejects found at merge time: a stand-in
    that `originals.quote_original_text` replaces with the file's own line in the same transaction."""
    s = import_staging.c
    parts = [
        s.order_ref, func.cast(s.order_date, String), func.coalesce(s.customer_email, s.customer_ref),
        s.customer_name, s.sku, s.product_name, func.cast(s.quantity, String), func.cast(s.unit_price_cents, String),
    ]
    text = parts[0]
    for part in parts[1:]:
        text = text + literal(",") + part
    return text.label("raw_text")


def merge_file(conn: Connection, file_id: int, *, default_stock: int) -> MergeCounts:
    """The whole merge in the caller's one transaction."""
    counts = check_orders(conn, file_id, default_stock=default_stock)
    merge_orders(conn, file_id, counts)
    _clear_staging(conn, file_id)
    drop_temp_tables(conn)
    return counts


def check_orders(conn: Connection, file_id: int, *, default_stock: int) -> MergeCounts:
    """Reject the orders that cannot be imported whole (taking their lines out of staging) and
    add the customers and products of the others. Leaves `file_orders` filled for them."""
    counts = MergeCounts()
    pg = conn.dialect.name == "postgresql"
    s = import_staging
    staged = s.c.file_id == file_id
    now = utcnow()
    if pg:
        # Room to hash and sort a large file in memory; fresh statistics after the bulk load
        # (else the planner takes the table for empty and picks nested loops) — a small sample
        # is enough to choose hash joins.
        conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")
        conn.exec_driver_sql("SET LOCAL default_statistics_target = 10")
        conn.exec_driver_sql("ANALYZE import_staging")
    else:
        drop_temp_tables(conn)

    # Orders with a line rejected while staging, or with a total beyond 64-bit cents, go first.
    # Those still staged are found by IN, not by a correlated EXISTS, which SQLite runs as a scan
    # of the staged lines for every rejected order (2,000 rejects in 100k lines: 95 s).
    _create_temp_table(conn, rejected_orders)
    r = import_rejects.c
    first_rejected = (
        select(r.order_ref, func.min(r.line_number).label("line"))
        .where(r.file_id == file_id, r.order_ref.is_not(None))
        .group_by(r.order_ref)
        .subquery()
    )
    conn.execute(insert(rejected_orders).from_select(
        ["order_ref", "reason"],
        select(
            first_rejected.c.order_ref,
            literal("order ") + first_rejected.c.order_ref + literal(" is not imported: its line ")
            + func.cast(first_rejected.c.line, String) + literal(" was rejected"),
        ).where(first_rejected.c.order_ref.in_(select(s.c.order_ref).where(staged))),
    ))
    counts.rejected += _reject_orders(conn, file_id, merging=False)
    too_large = _orders_over_max_total(conn, file_id)
    if too_large:
        conn.execute(insert(rejected_orders), [
            {"order_ref": ref, "reason": f"order {ref} is not imported: its total exceeds the largest amount "
                                         f"({plain(MAX_TOTAL_CENTS)})"}
            for ref in too_large
        ])
    counts.rejected += _reject_orders(conn, file_id, merging=False)

    # The file's orders: date, total of all lines, and the ranges of what must be one value.
    _fill_file_orders(conn, staged)
    t = file_orders.c

    # Lines of one order that disagree on the customer or the order date. Names may differ
    # ("Ann", "Ann Smith"): an order holds no name, and the customer is keyed by e-mail.
    def seconds(column):  # 'YYYY-MM-DD HH:MM:SS' on every database
        return func.substr(func.cast(column, String), 1, 19)

    disagreements = (
        (t.key_min != t.key_max, literal(" has lines for different customers (") + t.key_min + literal(", ")
         + t.key_max + literal("); none of its lines were imported")),
        (t.order_date != t.date_max, literal(" has lines with different order dates (") + seconds(t.order_date)
         + literal(", ") + seconds(t.date_max) + literal(" UTC); none of its lines were imported")),
    )
    for disagree, reason in disagreements:  # one round each: an order gets the first reason
        if conn.execute(select(exists().where(disagree))).scalar():
            conn.execute(insert(rejected_orders).from_select(
                ["order_ref", "reason"], select(t.order_ref, literal("order ") + t.order_ref + reason).where(disagree)
            ))
            counts.rejected += _reject_orders(conn, file_id, merging=True)

    # Products first seen here start with the default stock.
    statement = insert_new(conn, products, [products.c.sku]).from_select(
        ["sku", "name", "price_cents", "stock", "reserved", "created_at", "updated_at"],
        select(
            s.c.sku, func.max(s.c.product_name), func.max(s.c.unit_price_cents), literal(default_stock, BigInteger),
            literal(0, BigInteger), literal(now, DateTime), literal(now, DateTime),
        )
        .where(staged)
        .group_by(s.c.sku),
    )
    counts.new_products = _rowcount(conn, statement)

    # Customers (from the file's orders, a quarter of its lines), keyed by e-mail, or by the
    # shop's customer id in files without e-mail.
    for key, target, keyed in (
        (t.customer_email, customers.c.email, t.customer_email.is_not(None)),
        (t.customer_ref, customers.c.customer_ref, and_(t.customer_email.is_(None), t.customer_ref.is_not(None))),
    ):
        statement = insert_new(conn, customers, [target]).from_select(
            [target.name, "name", "created_at"],
            select(key, func.max(t.customer_name), literal(now, DateTime)).where(keyed).group_by(key),
        )
        counts.new_customers += _rowcount(conn, statement)
    return counts


def _fill_file_orders(conn: Connection, staged) -> None:
    """One row per order_ref of the staged lines `staged` selects."""
    s = import_staging
    _create_temp_table(conn, file_orders)
    customer_key = func.coalesce(s.c.customer_email, s.c.customer_ref)
    conn.execute(
        insert(file_orders).from_select(
            ["order_ref", "order_date", "customer_email", "customer_ref", "customer_name", "key_min", "key_max",
             "date_max", "total_cents"],
            select(
                s.c.order_ref, func.min(s.c.order_date), func.min(s.c.customer_email), func.min(s.c.customer_ref),
                func.max(s.c.customer_name), func.min(customer_key),
                func.max(customer_key), func.max(s.c.order_date), func.sum(s.c.quantity * s.c.unit_price_cents),
            )
            .where(staged)
            .group_by(s.c.order_ref),
        )
    )
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ANALYZE tmp_import_orders")


def order_slices(conn: Connection, file_id: int, lines: int) -> list[tuple[str, str]]:
    """(first, last) order_refs of consecutive slices of the staged orders, about `lines` staged
    lines each (an order is never split)."""
    s = import_staging.c
    per_order = conn.execute(
        select(s.order_ref, func.count()).where(s.file_id == file_id).group_by(s.order_ref).order_by(s.order_ref)
    ).all()
    slices, first, size = [], None, 0
    for ref, count in per_order:
        first = ref if first is None else first
        size += count
        if size >= lines:
            slices.append((first, ref))
            first, size = None, 0
    if first is not None:
        slices.append((first, per_order[-1][0]))
    return slices


def merge_orders(conn: Connection, file_id: int, counts: MergeCounts, *,
                 between: tuple[str, str] | None = None) -> None:
    """Write the headers and lines of the orders in `file_orders`, adding to `counts`. With
    `between`, `file_orders` is first filled with the staged orders in that order_ref range
    (after `check_orders` committed), and their staged lines are removed once written."""
    s = import_staging
    staged = s.c.file_id == file_id
    now = utcnow()
    if between is not None:
        drop_temp_tables(conn)
        staged = and_(staged, s.c.order_ref.between(*between))
        _fill_file_orders(conn, staged)
    t = file_orders.c
    joined = and_(staged, s.c.order_ref == t.order_ref)

    # Orders an earlier file brought in: lock them so the workflow cannot move them meanwhile.
    existing = select(orders.c.id, orders.c.status).where(orders.c.order_ref.in_(select(t.order_ref)))
    if is_mysql(conn):  # a FOR UPDATE in a derived table locks nothing there: lock by reading the rows
        existing_count = len(conn.execute(lock_rows(conn, existing)).all())
    else:
        existing = lock_rows(conn, existing, of=orders)
        existing_count = conn.execute(select(func.count()).select_from(existing.subquery())).scalar_one()
    if existing_count:
        moved_on = and_(orders.c.order_ref == t.order_ref, orders.c.status != "created")
        reason = (
            literal("order ") + orders.c.order_ref + literal(" is already ") + orders.c.status
            + literal("; its lines can no longer be replaced")
        )
        counts.rejected += _reject(
            conn, file_id, select(s.c.line_number, _staged_text(), reason, s.c.order_ref)
            .select_from(s.join(file_orders, joined).join(orders, moved_on))
            .where(staged)
        )
        replaced = select(orders.c.id).where(orders.c.order_ref.in_(select(t.order_ref)), orders.c.status == "created")
        conn.execute(delete(order_lines).where(order_lines.c.order_id.in_(replaced)))

    # Headers: replace those still `created`, insert the new ones (a plain INSERT: ON CONFLICT's
    # speculative insertion costs a third more, and a concurrent insert of the same order_ref
    # fails the merge, whose retry then takes the replace path).
    columns = ["order_ref", "customer_id", "order_date", "status", "status_changed_at", "total_cents",
               "import_file_id", "created_at", "updated_at"]
    for key, target, keyed in (
        (t.customer_email, customers.c.email, t.customer_email.is_not(None)),
        (t.customer_ref, customers.c.customer_ref, t.customer_email.is_(None)),
    ):
        if existing_count:
            counts.orders += _rowcount(
                conn,
                update(orders)
                .where(orders.c.order_ref == t.order_ref, orders.c.status == "created", target == key, keyed)
                .values(customer_id=customers.c.id, order_date=t.order_date, total_cents=t.total_cents,
                        import_file_id=file_id, updated_at=now),
            )
        source = select(
            t.order_ref, customers.c.id, t.order_date, literal("created"), literal(now, DateTime), t.total_cents,
            literal(file_id, BigInteger), literal(now, DateTime), literal(now, DateTime),
        ).select_from(file_orders.join(customers, target == key)).where(keyed)
        # In date order: the order_ref, date and status indexes then grow at their right edge.
        source = source.order_by(t.order_date, t.order_ref)
        if existing_count:
            source = source.where(~exists().where(orders.c.order_ref == t.order_ref))
        counts.orders += _rowcount(conn, insert(orders).from_select(columns, source))

    # This file's orders and their ids: one probe of the order_ref index per order of the file.
    _create_temp_table(conn, file_order_ids)
    conn.execute(
        insert(file_order_ids).from_select(
            ["order_ref", "order_id"],
            select(orders.c.order_ref, orders.c.id).where(
                orders.c.order_ref.in_(select(t.order_ref)), orders.c.import_file_id == file_id
            ),
        )
    )
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ANALYZE tmp_import_order_ids")
    ids = file_order_ids.c

    # Lines, numbered in file order within each order (and written in order_id order, so the
    # foreign-key and (order_id, line_no) checks walk the pages of orders and the index in turn).
    line_no = func.row_number().over(partition_by=ids.order_id, order_by=s.c.line_number)
    counts.lines_imported += _rowcount(
        conn,
        insert(order_lines).from_select(
            ["order_id", "line_no", "product_id", "quantity", "unit_price_cents"],
            select(ids.order_id, line_no, products.c.id, s.c.quantity, s.c.unit_price_cents)
            .select_from(
                s.join(file_order_ids, ids.order_ref == s.c.order_ref).join(products, products.c.sku == s.c.sku)
            )
            .where(staged),
        ),
    )
    if between is not None:
        conn.execute(delete(s).where(staged))
        drop_temp_tables(conn)


def _reject_orders(conn: Connection, file_id: int, *, merging: bool) -> int:
    """Reject every staged line of the orders in `rejected_orders` with the order's reason and
    take them out of the merge (and of `file_orders` once it exists); then empty the table."""
    s, bad = import_staging.c, rejected_orders.c
    if not conn.execute(select(exists().select_from(rejected_orders))).scalar():
        return 0
    rejected = _reject(
        conn, file_id,
        select(s.line_number, _staged_text(), bad.reason, s.order_ref)
        .select_from(import_staging.join(rejected_orders, bad.order_ref == s.order_ref))
        .where(s.file_id == file_id),
    )
    refs = select(bad.order_ref)
    conn.execute(delete(import_staging).where(s.file_id == file_id, s.order_ref.in_(refs)))
    if merging:
        conn.execute(delete(file_orders).where(file_orders.c.order_ref.in_(refs)))
    conn.execute(delete(rejected_orders))
    return rejected


def _create_temp_table(conn: Connection, table: Table) -> None:
    (table if conn.dialect.name == "postgresql" else _KEYED_TEMP_TABLES[table.name]).create(conn)


def drop_temp_tables(conn: Connection) -> None:
    """PostgreSQL drops them at commit; elsewhere they live as long as the pooled connection."""
    if conn.dialect.name == "postgresql":
        return
    for table in (file_order_ids, file_orders, rejected_orders):
        if is_mysql(conn):  # TEMPORARY: never drops a real table, and no implicit commit
            conn.exec_driver_sql(f"DROP TEMPORARY TABLE IF EXISTS {table.name}")
        else:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{table.name}")


def _clear_staging(conn: Connection, file_id: int) -> None:
    """Remove the file's staged rows. On PostgreSQL, when no other file is staging (the usual
    case), TRUNCATE instead of deleting a million rows one by one; the table lock taken first
    keeps other imports from adding rows between the check and the truncate."""
    s = import_staging
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("LOCK TABLE import_staging IN ACCESS EXCLUSIVE MODE")
        # Two probes of the (file_id, line_number) index rather than a scan of the whole table.
        others = conn.execute(
            select(exists().where(s.c.file_id < file_id) | exists().where(s.c.file_id > file_id))
        ).scalar()
        if not others:
            conn.exec_driver_sql("TRUNCATE import_staging")
            return
    conn.execute(delete(s).where(s.c.file_id == file_id))


def _reject(conn: Connection, file_id: int, rows) -> int:
    """Insert (line_number, raw_text, reason, order_ref) rows of `rows` as rejects of the file."""
    source = rows.add_columns(literal(file_id, BigInteger).label("file_id"))
    return _rowcount(conn, insert(import_rejects).from_select(
        ["line_number", "raw_text", "reason", "order_ref", "file_id"], source))


def _orders_over_max_total(conn: Connection, file_id: int) -> list[str]:
    """The file's order_refs whose lines add up to more than MAX_TOTAL_CENTS. PostgreSQL and
    MariaDB sum BIGINTs exactly (NUMERIC, DECIMAL); SQLite's sum() fails on overflow, so its
    float total() picks the candidates and their lines are added up exactly here."""
    s = import_staging.c
    line_total = s.quantity * s.unit_price_cents
    by_order = select(s.order_ref).where(s.file_id == file_id).group_by(s.order_ref)
    if conn.dialect.name != "sqlite":
        return list(conn.execute(by_order.having(func.sum(line_total) > MAX_TOTAL_CENTS)).scalars())
    over = []
    for ref in conn.execute(by_order.having(func.total(line_total) > float(2**62))).scalars().all():
        totals = conn.execute(select(line_total).where(s.file_id == file_id, s.order_ref == ref)).scalars()
        if sum(totals) > MAX_TOTAL_CENTS:
            over.append(ref)
    return over


def _rowcount(conn: Connection, statement) -> int:
    """Rows an INSERT … SELECT wrote (SQLAlchemy 2.1 keeps that rowcount only when asked to)."""
    return conn.execute(statement.execution_options(preserve_rowcount=True)).rowcount


def record_counts(conn: Connection, file_id: int, counts: MergeCounts) -> None:
    """Add what a merge step did to the file's counters, in that step's transaction."""
    f = import_files.c
    conn.execute(
        update(import_files)
        .where(f.id == file_id)
        .values(
            lines_imported=f.lines_imported + counts.lines_imported,
            orders_imported=f.orders_imported + counts.orders,
            new_customers=f.new_customers + counts.new_customers,
            new_products=f.new_products + counts.new_products,
            rejected_rows=f.rejected_rows + counts.rejected,
        )
    )


def mark_completed(conn: Connection, file_id: int, *, status: str, error: str | None) -> None:
    conn.execute(
        update(import_files).where(import_files.c.id == file_id).values(status=status, error=error, finished_at=utcnow())
    )


