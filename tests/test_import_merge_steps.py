"""The merge in bounded steps on SQLite: no import transaction holds the one write lock for
long, a run killed or failed between steps goes on with the orders still staged, orders appear
whole and stay out of the workflow until the file is completed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from imports_support import rows, run_import, scalar, write
from sqlalchemy import event, select, text
from test_import_load import MIXED_FILE

from ordersys_pipelines.db import migrate
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.db.schema import orders
from ordersys_pipelines.domain.imports import importer
from ordersys_pipelines.domain.imports.generate import generate_orders
from ordersys_pipelines.domain.imports.importer import (
    ImportOptions,
    ImportSuperseded,
    import_order_file,
    mark_run_failed,
)
from ordersys_pipelines.domain.orders.reservation import eligible

# Imports a file in slices of argv[3] orders and stops dead (a marker file says so) when the
# second slice's merge starts: the first slice is committed, the file not completed.
CHILD_IMPORT = """
import sys, time
from pathlib import Path
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.domain.imports import importer

url, path, slice_rows, marker = sys.argv[1:5]
real, calls = importer.merge_orders, []

def merge_orders(conn, file_id, counts, *, between=None):
    calls.append(between)
    if len(calls) == 2:
        Path(marker).write_text("stopped")
        time.sleep(600)
    real(conn, file_id, counts, between=between)

importer.merge_orders = merge_orders
importer.import_order_file(get_engine(url), Path(path), options=importer.ImportOptions(chunk_rows=int(slice_rows)))
"""


def eligible_orders(engine) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(orders.c.id).where(eligible())).all())


def content(engine) -> list[tuple]:
    """Every imported order with its lines, independent of ids."""
    return rows(engine, "SELECT o.order_ref, o.status, o.total_cents, c.email, l.line_no, p.sku, l.quantity, "
                        "l.unit_price_cents FROM orders o JOIN customers c ON c.id = o.customer_id "
                        "JOIN order_lines l ON l.order_id = o.id JOIN products p ON p.id = l.product_id "
                        "ORDER BY o.order_ref, l.line_no")


def counts(engine) -> tuple:
    return rows(engine, "SELECT status, rows_read, lines_imported, orders_imported, rejected_rows, new_customers, "
                        "new_products FROM import_files")[0]


class Killed(BaseException):
    """As a kill: nothing in the import gets to handle it."""


def die_after_first_slice(monkeypatch, exception: BaseException) -> list:
    merged = []

    def merge_then_die(conn, file_id, counts, *, between=None):
        if merged:
            raise exception
        merged.append(between)
        return real(conn, file_id, counts, between=between)

    real = importer.merge_orders
    monkeypatch.setattr(importer, "merge_orders", merge_then_die)
    return merged


def test_no_import_transaction_holds_the_sqlite_write_lock_for_long(sqlite_url, tmp_path):
    """In one transaction the merge holds SQLite's write lock for as long as the whole file takes
    (and a file with many rejected orders took far longer: 2,000 in 100k lines added 95 s, a
    scan of the staged lines for each); in steps of 10k lines no transaction does more than a
    share of the import's work. Counted in SQLite's virtual-machine instructions, which do not
    depend on the machine's speed or load."""
    engine = get_engine(sqlite_url)
    path = tmp_path / "orders.csv"
    generate_orders(path, rows=30_000, seed=3, bad_rows=1_500)
    ticks, held = [0], []

    def tick():
        ticks[0] += 1
        return 0  # 0: go on

    def begin(conn):  # BEGIN IMMEDIATE: the write lock is taken here
        conn.connection.driver_connection.set_progress_handler(tick, 1000)
        conn.info["ticks_at_begin"] = ticks[0]

    def commit(conn):
        held.append(ticks[0] - conn.info.pop("ticks_at_begin"))
        conn.connection.driver_connection.set_progress_handler(None, 0)

    event.listen(engine, "begin", begin)
    event.listen(engine, "commit", commit)
    try:
        result = import_order_file(engine, path, options=ImportOptions(chunk_rows=10_000))
    finally:
        event.remove(engine, "begin", begin)
        event.remove(engine, "commit", commit)
    assert (result.status, result.lines_imported, result.rejected) == ("completed", 28_500, 1_500)
    assert len(held) >= 1 + 3 + 1 + 3  # claim, 3 chunks, the checks, 3 slices of orders
    assert max(held) < 0.4 * sum(held), held


def test_a_run_killed_between_merge_steps_goes_on_with_the_orders_still_staged(sqlite_url, tmp_path, monkeypatch):
    engine = get_engine(sqlite_url)
    merged = die_after_first_slice(monkeypatch, Killed())
    with pytest.raises(Killed):
        run_import(engine, tmp_path, MIXED_FILE, chunk_rows=2)
    # The first slice's order is in, whole, but not for the workflow: its file is not completed.
    assert merged == [("O1", "O1")]
    assert rows(engine, "SELECT status FROM import_files") == [("staged",)]
    assert rows(engine, "SELECT order_ref, total_cents FROM orders") == [("O1", 900)]
    assert scalar(engine, "SELECT count(*) FROM order_lines") == 3
    assert eligible_orders(engine) == 0

    monkeypatch.undo()
    result = run_import(engine, tmp_path, MIXED_FILE, chunk_rows=2)
    assert (result.status, result.rows_this_run, result.rows_read, result.lines_imported, result.orders,
            result.rejected) == ("completed", 0, 9, 8, 5, 1)
    assert result.lines_balanced
    assert eligible_orders(engine) == 5
    assert scalar(engine, "SELECT count(*) FROM import_staging") == 0


def test_a_run_failed_between_merge_steps_resumes_the_merge_on_rerun(sqlite_url, tmp_path, monkeypatch):
    engine = get_engine(sqlite_url)
    die_after_first_slice(monkeypatch, RuntimeError("disk full"))
    path = write(tmp_path, "orders.csv", MIXED_FILE)
    with pytest.raises(RuntimeError):
        import_order_file(engine, path, run_id="run-1", options=ImportOptions(chunk_rows=2))
    mark_run_failed(engine, "run-1", "RuntimeError: disk full")
    assert rows(engine, "SELECT status, error FROM import_files") == [("failed", "RuntimeError: disk full")]

    monkeypatch.undo()
    result = run_import(engine, tmp_path, MIXED_FILE, chunk_rows=2)
    assert (result.status, result.rows_read, result.lines_imported, result.orders, result.rejected) == (
        "completed", 9, 8, 5, 1)
    assert scalar(engine, "SELECT count(*) FROM import_rejects") == 1
    again = run_import(engine, tmp_path, MIXED_FILE, name="again.csv")
    assert again.already_imported and scalar(engine, "SELECT count(*) FROM order_lines") == 8


def test_a_run_whose_file_another_run_took_over_between_merge_steps_stops(sqlite_url, tmp_path, monkeypatch):
    engine = get_engine(sqlite_url)
    real = importer.merge_orders

    def merge_then_lose_the_file(conn, file_id, counts, *, between=None):
        real(conn, file_id, counts, between=between)
        conn.execute(text("UPDATE import_files SET run_id = 'another-run'"))

    monkeypatch.setattr(importer, "merge_orders", merge_then_lose_the_file)
    with pytest.raises(ImportSuperseded):
        run_import(engine, tmp_path, MIXED_FILE, chunk_rows=2)
    assert rows(engine, "SELECT status, run_id FROM import_files") == [("staged", "another-run")]
    assert rows(engine, "SELECT order_ref FROM orders") == [("O1",)]
    monkeypatch.undo()
    result = run_import(engine, tmp_path, MIXED_FILE, chunk_rows=2)
    assert (result.status, result.lines_imported, result.orders, result.rejected) == ("completed", 8, 5, 1)


def test_kill_9_during_the_merge_steps_then_rerun_gives_what_one_uninterrupted_run_gives(
        sqlite_url, tmp_path):
    path = tmp_path / "orders.csv"
    generate_orders(path, rows=20_000, seed=5, bad_rows=10)
    engine = get_engine(sqlite_url)
    marker = tmp_path / "stopped"
    child = subprocess.Popen([sys.executable, "-c", CHILD_IMPORT, sqlite_url, str(path), "300", str(marker)],
                             cwd=Path(__file__).parent)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, "the import ended before it reached its second merge step"
            assert time.monotonic() < deadline, "the import did not reach its second merge step"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    # A plain WAL reader, which waits for no writer: the first step's orders are there.
    watcher = sqlite3.connect(engine.url.database)
    assert watcher.execute("SELECT count(*) FROM orders").fetchone()[0] > 0
    watcher.close()
    assert rows(engine, "SELECT status FROM import_files") == [("staged",)]
    assert eligible_orders(engine) == 0
    result = import_order_file(engine, path, options=ImportOptions(chunk_rows=300))
    assert result.status == "completed" and result.lines_balanced
    killed = (content(engine), counts(engine))

    clean = get_engine(f"sqlite:///{tmp_path / 'clean.db'}")
    migrate.upgrade(str(clean.url))
    import_order_file(clean, path, options=ImportOptions(chunk_rows=300))
    assert killed == (content(clean), counts(clean))
