"""Reserve stock for a batch of created orders: all lines of an order or none, oldest first.

One transaction per batch: it takes the reservation lock (PostgreSQL advisory lock; SQLite has
one writer anyway), locks the oldest eligible orders (FOR UPDATE SKIP LOCKED), loads (order,
product, quantity) and the products' stock once, runs the greedy FIFO allocation in Python over
those arrays and writes the outcome with a handful of set-based statements. The products taken
are locked (FOR UPDATE, id order) only after the orders are written, just before the commit:
other runs' settlements, which lock the same hot rows, wait that long only. That the stock read
without locks is still there is checked under those locks; only a lowered stock (an inventory
import meanwhile) fails the check, and then the batch is decided again under the locks.
Holding the lock from picking the batch to committing it keeps FIFO strict even
with concurrent runs (a younger batch can never take stock an older batch needed), and the
locked rows are the claim: a run that dies mid-way rolls back and frees them at once. Orders
it reserved keep a claim with a lease for the run's next op (starting the payments); if the
run dies before that, the lease lapses and any run takes them. An order that does not fit
consumes nothing, so it never takes stock from a younger order that fits.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Connection, Engine, and_, exists, func, or_, select

from ordersys_pipelines.db import statistics
from ordersys_pipelines.db.dialect import exclusive_transaction, lock_rows
from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.rowsets import in_ids
from ordersys_pipelines.db.schema import import_files, order_lines, orders, products
from ordersys_pipelines.domain import claims, inventory
from ordersys_pipelines.domain.isolation import in_savepoint, isolate
from ordersys_pipelines.domain.orders import poison
from ordersys_pipelines.domain.orders.states import CREATED, FAILED, RESERVED, transition

FIFO = [orders.c.order_date, orders.c.order_ref]


def eligible() -> ColumnElement[bool]:
    """Created orders whose import has completed (or that came from no import at all)."""
    return and_(
        orders.c.status == CREATED,
        or_(
            orders.c.import_file_id.is_(None),
            exists().where(import_files.c.id == orders.c.import_file_id, import_files.c.status == "completed"),
        ),
    )


@dataclass
class ReservationResult:
    claimed: int = 0
    reserved: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)

    def failed_by_reason(self) -> dict[str, int]:
        """Failure counts by the kind of reason (the text before the first colon)."""
        return dict(Counter(reason.split(":", 1)[0] for reason in self.failed.values()))

    def merge(self, other: ReservationResult) -> None:
        self.reserved += other.reserved
        self.failed.update(other.failed)


@dataclass(frozen=True)
class Allocation:
    reserved: list[int]
    failed: dict[int, str]
    taken: dict[int, int]  # product id → quantity reserved in total


def allocate(
    fifo_order_ids: Sequence[int],
    needs: Mapping[int, Mapping[int, int]],
    available: Mapping[int, int],
    skus: Mapping[int, str],
) -> Allocation:
    """Greedy all-or-nothing allocation in FIFO order.

    needs: order id → {product id: quantity}; available: product id → stock − reserved (products
    missing here are unknown). An order is reserved only if every product fits; otherwise it
    fails with a reason naming each short SKU, the quantity needed and what was available."""
    left = dict(available)
    reserved: list[int] = []
    failed: dict[int, str] = {}
    taken: Counter[int] = Counter()
    for order_id in fifo_order_ids:
        wanted = needs.get(order_id)
        if not wanted:
            failed[order_id] = "no order lines: nothing to reserve"
            continue
        short = []
        for product_id, quantity in sorted(wanted.items(), key=lambda item: skus.get(item[0], "")):
            if product_id not in left:
                short.append(f"unknown product #{product_id} needed {quantity}")
            elif quantity > left[product_id]:
                short.append(f"{skus[product_id]} needed {quantity}, available {left[product_id]}")
        if short:
            failed[order_id] = "insufficient stock: " + "; ".join(short)
            continue
        for product_id, quantity in wanted.items():
            left[product_id] -= quantity
            taken[product_id] += quantity
        reserved.append(order_id)
    return Allocation(reserved, failed, dict(taken))


def lock_created(conn: Connection, *, limit: int) -> list[int]:
    """Lock up to `limit` eligible created orders, oldest first (skipping rows another
    transaction holds, and orders a live claim stamp reserves for another run)."""
    statement = select(orders.c.id).where(eligible(), claims.claimable(orders)).order_by(*FIFO).limit(limit)
    statement = lock_rows(conn, statement, skip_locked=True)
    return list(conn.execute(statement).scalars())


def reserve_locked(
    conn: Connection,
    order_ids: Sequence[int],
    *,
    claimant: str,
    lease_seconds: int,
    run_id: str | None,
    now: datetime | None = None,
) -> ReservationResult:
    """Reserve the created orders `order_ids`, which this transaction has locked."""
    now = now or utcnow()
    rows = conn.execute(
        select(orders.c.id, orders.c.order_date, orders.c.order_ref).where(
            in_ids(conn, orders.c.id, order_ids), orders.c.status == CREATED
        )
    ).all()
    if not rows:
        return ReservationResult(claimed=len(order_ids))
    ids = [row.id for row in rows]
    fifo = [row.id for row in sorted(rows, key=lambda row: (row.order_date, row.order_ref))]

    needs: dict[int, dict[int, int]] = defaultdict(dict)
    for order_id, product_id, quantity in conn.execute(
        select(order_lines.c.order_id, order_lines.c.product_id, order_lines.c.quantity).where(
            in_ids(conn, order_lines.c.order_id, ids)
        )
    ):
        needs[order_id][product_id] = needs[order_id].get(product_id, 0) + quantity
    products = {p for wanted in needs.values() for p in wanted}
    # Optimistic first: decide on the stock as read, write the orders, and lock only the products
    # taken, at the end, so other runs' settlements wait on those rows only until this commit.
    with conn.begin_nested() as attempt:
        read = inventory.read_products(conn, products)
        allocation = _write_outcome(conn, fifo, needs, read, claimant, lease_seconds, run_id, now)
        if inventory.still_available(conn, {row.id: row.stock - row.reserved for row in read}, allocation.taken):
            inventory.add_reserved(conn, allocation.taken, now)
            return ReservationResult(claimed=len(order_ids), reserved=allocation.reserved, failed=allocation.failed)
        attempt.rollback()  # stock went down meanwhile (an inventory import): decide again, under the locks
    locked = inventory.lock_products(conn, products)
    allocation = _write_outcome(conn, fifo, needs, locked, claimant, lease_seconds, run_id, now)
    inventory.add_reserved(conn, allocation.taken, now)
    return ReservationResult(claimed=len(order_ids), reserved=allocation.reserved, failed=allocation.failed)


def _write_outcome(conn: Connection, fifo: list[int], needs, stock: Sequence, claimant: str, lease_seconds: int,
                   run_id: str | None, now: datetime) -> Allocation:
    """Allocate `stock` (rows of id, sku, stock, reserved) in FIFO order and move the orders."""
    allocation = allocate(
        fifo,
        needs,
        available={row.id: row.stock - row.reserved for row in stock},
        skus={row.id: row.sku for row in stock},
    )
    # The run claims what it reserved for its next op (starting the payments), in the same write.
    transition(conn, allocation.reserved, RESERVED, None, run_id, expected_from=CREATED, now=now,
               claim_for=(claimant, now + timedelta(seconds=lease_seconds)))
    if allocation.failed:
        transition(conn, allocation.failed.keys(), FAILED, allocation.failed, run_id, expected_from=CREATED, now=now,
                   notify=("order_failed",))
    return allocation


# Serializes reservation transactions (db.dialect.exclusive_transaction: an advisory lock key).
RESERVATION_LOCK = 0x6F72_6473_7973  # "ordsys"


def reserve_batch(
    engine: Engine, *, batch_size: int, claimant: str, lease_seconds: int, run_id: str | None
) -> ReservationResult:
    """Pick and reserve up to `batch_size` of the oldest eligible orders in one transaction.
    An order the reservation cannot read or write fails alone (domain.isolation)."""
    statistics.refresh(engine, [order_lines.name, products.name])
    statistics.refresh(engine, [orders.name], share=statistics.ORDERS_SHARE)
    with exclusive_transaction(engine, RESERVATION_LOCK) as conn:
        ids = lock_created(conn, limit=batch_size)
        if not ids:
            return ReservationResult()
        batch = isolate(
            ids,
            in_savepoint(conn, lambda c, some: reserve_locked(
                c, some, claimant=claimant, lease_seconds=lease_seconds, run_id=run_id)),
            fail=lambda errors: poison.fail_orders(conn, errors, stage="reservation", expected_from=CREATED,
                                            run_id=run_id),
            stage="reservation",
        )
        result = batch.merged_into(ReservationResult(claimed=len(ids)))
        result.failed.update({i: poison.reason("reservation", error) for i, error in batch.failed.items()})
        return result


def pending(conn: Connection, cap: int = 100_000) -> int:
    """Orders the workflow could take now: eligible created ones and reserved ones whose payment
    has not started (counted up to `cap` each; a sensor's look)."""
    count = select(func.count()).select_from
    created = select(orders.c.id).where(eligible(), claims.claimable(orders)).limit(cap)
    reserved = select(orders.c.id).where(orders.c.status == RESERVED, claims.claimable(orders)).limit(cap)
    return conn.execute(count(created.subquery())).scalar_one() + conn.execute(count(reserved.subquery())).scalar_one()
