"""The merge's work stays linear in the file on SQLite: SQLite hashes no join, so a join with an
unkeyed temporary table is a nested loop over both sides (the lines of a 100,000-line file took
371 s, all under the write lock). Counted in SQLite's virtual-machine instructions, which do not
depend on the machine's speed or load."""

from __future__ import annotations

from sqlalchemy import event

from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.domain.imports.generate import generate_orders
from ordersys_pipelines.domain.imports.importer import ImportOptions, import_order_file

INSTRUCTIONS_PER_TICK = 1000


def _import_instructions(url: str, folder, rows: int) -> int:
    path = folder / f"orders_{rows}.csv"
    generate_orders(path, rows=rows, seed=rows, products=200)
    engine = get_engine(url)
    ticks = [0]

    def count(*_):
        ticks[0] += 1
        return 0  # 0: go on

    def on_checkout(dbapi_connection, *_):
        dbapi_connection.set_progress_handler(count, INSTRUCTIONS_PER_TICK)

    def on_checkin(dbapi_connection, *_):
        if dbapi_connection is not None:
            dbapi_connection.set_progress_handler(None, 0)

    event.listen(engine, "checkout", on_checkout)
    event.listen(engine, "checkin", on_checkin)
    try:
        result = import_order_file(engine, path, options=ImportOptions())
    finally:
        event.remove(engine, "checkout", on_checkout)
        event.remove(engine, "checkin", on_checkin)
    assert result.lines_imported == rows
    return ticks[0]


def test_four_times_the_lines_cost_about_four_times_the_work(sqlite_url, tmp_path):
    small = _import_instructions(sqlite_url, tmp_path, 2_000)
    large = _import_instructions(sqlite_url, tmp_path, 8_000)
    # Linear work grows 4×; a nested loop over the file's lines and its orders grows 16×.
    assert large / small < 6, (small, large)
