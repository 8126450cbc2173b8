"""Chunked staging and the merge: straddling orders, resume after a failure, re-import, orders
repeated in later files, inconsistent orders, and catalog files. Both backends."""

from __future__ import annotations

import pytest
from imports_support import HEADER, balanced, order_lines, rejects, rows, run_import, scalar, write
from sqlalchemy import create_engine, text

from ordersys_pipelines.domain.imports import load
from ordersys_pipelines.domain.imports.catalog import load_catalog
from ordersys_pipelines.domain.imports.csv_format import CsvFormatError
from ordersys_pipelines.domain.imports.importer import ImportSuperseded


def lines(*specs: str) -> str:
    """'ref,customer,sku,qty,price' → full canonical rows."""
    out = []
    for spec in specs:
        ref, customer, sku, qty, price = spec.split(",")
        out.append(f"{ref},2024-05-0{1 + len(ref) % 5} 12:00,{customer}@example.com,{customer.title()},{sku},{sku} item,{qty},{price}\n")
    return HEADER + "".join(out)


MIXED_FILE = lines(
    "O1,ann,A,1,1.00",
    "O2,bob,B,2,2.00",
    "O1,ann,B,3,2.00",
    "O3,cat,A,1,1.00",
    "O2,bob,C,1,0.50",
    "O4,dan,A,1,1.00",
    "O5,eve,B,1,2.00",
    "O1,ann,C,4,0.50",   # O1's third line, far from its first
    "O6,fay,bad,zero,1",  # rejected
)


def test_orders_straddling_chunks_and_far_apart_lines_are_imported_whole(engine, tmp_path):
    result = run_import(engine, tmp_path, MIXED_FILE, chunk_rows=2)
    assert (result.chunks, result.rows_read, result.lines_imported, result.orders, result.rejected) == (5, 9, 8, 5, 1)
    assert order_lines(engine, "O1") == [(1, "A", 1, 100), (2, "B", 3, 200), (3, "C", 4, 50)]
    assert order_lines(engine, "O2") == [(1, "B", 2, 200), (2, "C", 1, 50)]
    assert scalar(engine, "SELECT total_cents FROM orders WHERE order_ref = 'O1'") == 100 + 600 + 200
    assert scalar(engine, "SELECT count(*) FROM import_staging") == 0
    assert balanced(result)


def test_mariadb_without_local_infile_stages_with_batched_inserts(mariadb_url, tmp_path):
    """A client (or server) that refuses LOAD DATA LOCAL INFILE: the same import, by INSERTs."""
    engine = create_engine(mariadb_url, connect_args={"local_infile": False, "init_command": "SET time_zone = '+00:00'"},
                           isolation_level="READ COMMITTED")
    try:
        result = run_import(engine, tmp_path, MIXED_FILE, chunk_rows=2)
        assert (result.chunks, result.rows_read, result.lines_imported, result.orders, result.rejected) == (5, 9, 8, 5, 1)
        assert order_lines(engine, "O1") == [(1, "A", 1, 100), (2, "B", 3, 200), (3, "C", 4, 50)]
        assert rejects(engine)[0][0] == 10
        assert load._local_infile_refused and engine in load._local_infile_refused
    finally:
        engine.dispose()


def test_a_run_killed_after_chunk_k_resumes_and_imports_exactly_once(engine, tmp_path):
    class Killed(Exception):
        pass

    def die_after_second_chunk(progress):
        if progress.chunk_index == 1:
            raise Killed

    with pytest.raises(Killed):
        run_import(engine, tmp_path, MIXED_FILE, chunk_rows=2, on_chunk=die_after_second_chunk)
    # Two chunks committed and recorded; no order exists yet (they appear when the file completes).
    assert rows(engine, "SELECT status, chunks_committed, rows_read FROM import_files") == [("importing", 2, 4)]
    assert scalar(engine, "SELECT count(*) FROM orders") == 0
    assert "Killed" in scalar(engine, "SELECT error FROM import_files")

    # Started again (even with another chunk size): it continues after the last committed line.
    result = run_import(engine, tmp_path, MIXED_FILE, chunk_rows=3)
    assert result.resumed_after_line == 5
    assert (result.status, result.rows_read, result.lines_imported, result.orders, result.rejected) == ("completed", 9, 8, 5, 1)
    assert result.rows_this_run == 5
    assert scalar(engine, "SELECT count(*) FROM order_lines") == 8
    assert len(rejects(engine)) == 1
    assert order_lines(engine, "O1") == [(1, "A", 1, 100), (2, "B", 3, 200), (3, "C", 4, 50)]


def test_a_rejected_row_in_a_committed_chunk_is_not_rejected_twice_on_resume(engine, tmp_path):
    content = lines("O1,ann,A,1,1", "O2,bob,A,x,1", "O3,cat,A,1,1", "O4,dan,A,1,1")

    def die(progress):
        if progress.chunk_index == 0:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run_import(engine, tmp_path, content, chunk_rows=2, on_chunk=die)
    result = run_import(engine, tmp_path, content, chunk_rows=2)
    assert (result.lines_imported, result.rejected) == (3, 1)
    assert rejects(engine) == [(3, "quantity 'x' is not a whole number")]


def test_re_importing_the_same_content_under_any_name_changes_nothing(engine, tmp_path):
    first = run_import(engine, tmp_path, MIXED_FILE)
    before = rows(engine, "SELECT id, order_ref, total_cents, updated_at FROM orders ORDER BY id")
    again = run_import(engine, tmp_path, MIXED_FILE, name="copy-of-orders.csv")
    assert again.already_imported and again.file_id == first.file_id and again.name == "orders.csv"
    assert (again.lines_imported, again.orders, again.rejected) == (8, 5, 1)
    assert rows(engine, "SELECT id, order_ref, total_cents, updated_at FROM orders ORDER BY id") == before
    assert scalar(engine, "SELECT count(*) FROM import_files") == 1
    assert scalar(engine, "SELECT count(*) FROM import_rejects") == 1


def test_an_order_ref_repeated_in_a_later_file_replaces_it_while_created_and_is_rejected_after(engine, tmp_path):
    run_import(engine, tmp_path, lines("O1,ann,A,1,1.00", "O1,ann,B,1,2.00", "O2,bob,A,1,1.00"))
    second = run_import(engine, tmp_path, lines("O1,ann,C,5,0.10", "O3,cat,A,1,1.00"), name="second.csv")
    assert (second.orders, second.lines_imported, second.rejected) == (2, 2, 0)
    assert order_lines(engine, "O1") == [(1, "C", 5, 10)]
    assert rows(engine, "SELECT total_cents, import_file_id FROM orders WHERE order_ref = 'O1'") == [(50, second.file_id)]

    with engine.begin() as conn:
        conn.execute(text("UPDATE orders SET status = 'reserved' WHERE order_ref = 'O1'"))
    third = run_import(engine, tmp_path, lines("O1,ann,A,9,9.00", "O1,ann,B,9,9.00", "O4,dan,A,1,1.00"), name="third.csv")
    assert (third.orders, third.lines_imported, third.rejected) == (1, 1, 2)
    assert rows(engine, "SELECT line_number, reason FROM import_rejects WHERE file_id = :f ORDER BY line_number",
                f=third.file_id) == [
        (2, "order O1 is already reserved; its lines can no longer be replaced"),
        (3, "order O1 is already reserved; its lines can no longer be replaced"),
    ]
    assert order_lines(engine, "O1") == [(1, "C", 5, 10)]
    assert balanced(third)


def test_an_order_whose_lines_name_different_customers_is_rejected_whole(engine, tmp_path):
    result = run_import(engine, tmp_path, lines("O1,ann,A,1,1", "O2,bob,A,1,1", "O1,zed,B,1,1"), chunk_rows=1)
    assert (result.orders, result.lines_imported, result.rejected) == (1, 1, 2)
    assert {reason for _, reason in rejects(engine)} == {
        "order O1 has lines for different customers (ann@example.com, zed@example.com); none of its lines were imported"}
    assert scalar(engine, "SELECT count(*) FROM customers WHERE email = 'zed@example.com'") == 0


def test_a_wholly_rejected_file_fails_and_starts_over_when_run_again(engine, tmp_path):
    content = "order_ref,order_date,customer_email,sku,quantity,unit_price\nA,24.02.2003,a@example.com,S,1,1\n"
    result = run_import(engine, tmp_path, content)
    assert (result.status, result.error, result.rejected) == ("failed", "every one of the 1 rows was rejected", 1)
    fixed = run_import(engine, tmp_path, content, date_format="%d.%m.%Y")
    assert (fixed.status, fixed.lines_imported, fixed.rejected) == ("completed", 1, 0)
    assert scalar(engine, "SELECT count(*) FROM import_rejects") == 0


def test_missing_columns_fail_the_file_as_a_whole(engine, tmp_path):
    with pytest.raises(CsvFormatError, match="missing required column"):
        run_import(engine, tmp_path, "order_ref,email\nA,a@example.com\n")
    assert rows(engine, "SELECT status FROM import_files") == [("failed",)]
    assert scalar(engine, "SELECT count(*) FROM orders") == 0


def test_a_run_whose_file_another_run_took_over_stops(engine, tmp_path):
    def take_over(progress):
        with engine.begin() as conn:
            conn.execute(text("UPDATE import_files SET run_id = 'another-run'"))

    with pytest.raises(ImportSuperseded):
        run_import(engine, tmp_path, MIXED_FILE, chunk_rows=4, on_chunk=take_over)
    assert rows(engine, "SELECT chunks_committed FROM import_files") == [(1,)]
    result = run_import(engine, tmp_path, MIXED_FILE, chunk_rows=4)
    assert (result.lines_imported, result.rejected) == (8, 1)


def test_products_first_seen_in_an_order_file_get_the_default_stock_and_existing_ones_are_kept(engine, tmp_path):
    catalog = write(tmp_path, "catalog.csv", "sku,name,price,stock\nA,Apple,1.00,40\n")
    load_catalog(engine, catalog)
    run_import(engine, tmp_path, lines("O1,ann,A,1,9.99", "O1,ann,NEW,1,2.00"), default_stock=3)
    assert rows(engine, "SELECT sku, name, price_cents, stock FROM products ORDER BY sku") == [
        ("A", "Apple", 100, 40), ("NEW", "NEW item", 200, 3)]


def test_catalog_files_upsert_products_and_set_stock_never_below_reserved(engine, tmp_path):
    first = load_catalog(engine, write(tmp_path, "c1.csv", "SKU,Name,Price,Stock\nA,Apple,1.00,10\nB,Pear,0.50,5\n"))
    assert (first.products_created, first.products_updated, first.rejected) == (2, 0, 0)
    with engine.begin() as conn:
        conn.execute(text("UPDATE products SET reserved = 4 WHERE sku = 'B'"))
    content = (
        "sku,name,price,stock\n"
        "A,Apple (new),1.20,25\n"
        "B,Pear,0.50,3\n"       # below the 4 reserved
        "C,,2.00,abc\n"
        "D,Plum,,7\n"           # no price: not an amount
        "C,Cherry,2.00,8\n"
        "E,Fig,1.00,1\n"
        "E,Fig,1.00,2\n"        # a sku twice: the last line counts
    )
    second = load_catalog(engine, write(tmp_path, "c2.csv", content))
    assert (second.rows_read, second.products_created, second.products_updated, second.rejected) == (7, 2, 1, 4)
    assert [(r.line_number, r.reason) for r in second.rejects] == [
        (3, "stock 3 for B is below the 4 already reserved"),
        (4, "stock 'abc' is not a whole number of items"),
        (5, "price '' is not an amount (digits with an optional . and cents)"),
        (7, "sku E appears again on line 8; that line counts"),
    ]
    assert rows(engine, "SELECT sku, name, price_cents, stock, reserved FROM products ORDER BY sku") == [
        ("A", "Apple (new)", 120, 25, 0), ("B", "Pear", 50, 5, 4), ("C", "Cherry", 200, 8, 0), ("E", "Fig", 100, 2, 0)]
    assert load_catalog(engine, write(tmp_path, "c2-again.csv", content)).already_loaded
    assert scalar(engine, "SELECT count(*) FROM import_rejects") == 4
    with pytest.raises(CsvFormatError, match="stock"):
        load_catalog(engine, write(tmp_path, "c3.csv", "sku,name\nA,Apple\n"))


def test_a_catalog_file_is_not_taken_for_an_order_file_or_the_other_way_round(engine, tmp_path):
    catalog = "sku,name,price,stock,quantity,customer_email\nA,Apple,1.00,5,1,a@example.com\n"
    load_catalog(engine, write(tmp_path, "both.csv", catalog))
    with pytest.raises(CsvFormatError, match="loaded as a catalog file"):
        run_import(engine, tmp_path, catalog, name="both.csv")
    orders = HEADER.strip() + ",stock\nO1,2024-03-01,a@example.com,Ann,A,Apple,1,1,3\n"
    run_import(engine, tmp_path, orders, name="o.csv")
    with pytest.raises(CsvFormatError, match="imported as an order file"):
        load_catalog(engine, tmp_path / "o.csv")
