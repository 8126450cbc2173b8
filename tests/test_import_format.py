"""CSV format rules: headers, aliases, mappings, amounts, quantities, dates, e-mail, encodings,
line numbers. Parsing and validation need no database; end-to-end cases run on both backends."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pytest
from imports_support import HEADER, balanced, order_lines, rejects, rows, run_import, scalar, write

from ordersys_pipelines.domain.imports.csv_format import (
    CsvFormatError,
    detect_kind,
    parse_column_mapping,
    resolve_order_layout,
)
from ordersys_pipelines.domain.imports.reader import CsvChunkReader
from ordersys_pipelines.domain.imports.validate import ValidationOptions, derive_sku, parse_cents, parse_dates


def test_header_names_are_case_and_whitespace_insensitive_and_old_aliases_are_accepted():
    layout = resolve_order_layout([" Order ID ", "ORDER_DATE", "Customer Email", "customer_name", "SKU",
                                   "Product-Name", "Quantity", "Price_Per_Item", "Notes"])
    assert layout.positions == {"order_ref": 0, "order_date": 1, "customer_email": 2, "customer_name": 3,
                                "sku": 4, "product_name": 5, "quantity": 6, "unit_price": 7}
    assert layout.ignored == ("Notes",)
    assert resolve_order_layout(["email", "qty", "product_price", "item", "customer_email"],
                                parse_column_mapping("qty=quantity, item=product_name")).positions == {
        "quantity": 1, "unit_price": 2, "product_name": 3, "customer_email": 4}


def test_missing_required_columns_name_every_one_and_what_was_found():
    with pytest.raises(CsvFormatError) as error:
        resolve_order_layout(["order_ref", "customer_name", "colour"])
    message = str(error.value)
    for missing in ("quantity", "unit_price", "customer_email (or customer_ref)", "sku (or product_name)"):
        assert missing in message
    assert "Found: order_ref, customer_name, colour" in message


def test_column_mapping_errors_are_clear():
    with pytest.raises(CsvFormatError, match="'colour' is not a known column"):
        parse_column_mapping("Farbe=colour")
    with pytest.raises(CsvFormatError, match="not of the form"):
        parse_column_mapping("just-a-name")
    with pytest.raises(CsvFormatError, match="both give unit_price"):
        resolve_order_layout(["customer_email", "sku", "quantity", "unit_price", "price_per_item"])


def test_inventory_files_are_recognised_by_their_header():
    assert detect_kind(["SKU", "Name", "Price", "Stock"]) == "inventory"
    assert detect_kind(HEADER.strip().split(",")) == "orders"


@pytest.mark.parametrize(
    ("text", "cents"),
    [("0.29", 29), ("19.99", 1999), ("3", 300), ("3.", 300), (".5", 50), ("1.50", 150), ("1.500", 150),
     ("0", 0), ("007.10", 710), ("999999999.99", 99_999_999_999)],
)
def test_amounts_are_exact_decimals_in_cents(text, cents):
    value, bad, extra = parse_cents(pa.array([text]))
    assert (value[0].as_py(), bad[0].as_py(), extra[0].as_py()) == (cents, False, False)


@pytest.mark.parametrize("text", ["12,50", "-3", "abc", "", ".", "1e3", "1000000000.00", "1.2.3"])
def test_what_is_not_an_amount(text):
    assert parse_cents(pa.array([text]))[1][0].as_py() is True


def test_more_than_two_decimals_is_its_own_problem():
    value, bad, extra = parse_cents(pa.array(["1.234"]))
    assert (bad[0].as_py(), extra[0].as_py()) == (False, True)


def test_dates_iso_offsets_timezone_and_strptime_formats():
    text = pa.array(["2024-03-01", "2024-03-01 10:11", "2024-03-01T10:11:12", "2024-03-01T10:11:12.5Z",
                     "2024-03-01T10:11:12+02:00", "2024-02-30", "2023-02-29", "2024-13-01", "soon", ""])
    assert parse_dates(text, ValidationOptions()).to_pylist() == [
        datetime(2024, 3, 1), datetime(2024, 3, 1, 10, 11), datetime(2024, 3, 1, 10, 11, 12),
        datetime(2024, 3, 1, 10, 11, 12), datetime(2024, 3, 1, 8, 11, 12), None, None, None, None, None]
    # Naive times are read in ORDERSYS_TIMEZONE and stored as UTC; offsets are their own.
    berlin = ValidationOptions(timezone="Europe/Berlin")
    assert parse_dates(pa.array(["2024-07-01 12:00", "2024-01-15", "2024-07-01T12:00Z"]), berlin).to_pylist() == [
        datetime(2024, 7, 1, 10, 0), datetime(2024, 1, 14, 23, 0), datetime(2024, 7, 1, 12, 0)]
    us = ValidationOptions(date_format="%m/%d/%Y %H:%M")
    assert parse_dates(pa.array(["2/24/2003 0:00", "12/31/2003 23:59", "2/30/2003 0:00", "2003-02-24"]), us).to_pylist() == [
        datetime(2003, 2, 24), datetime(2003, 12, 31, 23, 59), None, None]


def test_derived_skus_are_stable_and_readable():
    assert derive_sku("Blue  Mug") == derive_sku(" blue mug ")
    assert derive_sku("Blue Mug").startswith("blue-mug-")
    assert derive_sku("Blue Mug") != derive_sku("Blue Mugs")


def test_physical_line_numbers_with_bom_crlf_quoted_newlines_blank_lines_and_short_rows(tmp_path):
    content = (
        "\ufeffa,b,c\r\n"
        '1,"two\r\nlines",x\r\n'    # lines 2-3
        "\r\n"                      # line 4: blank
        "2,short\r\n"               # line 5: one field missing
        '3,"q ""quoted"", and comma",y\r\n'  # line 6
        "4,5,6,7\r\n"               # line 7: one field too many
        '5,"a\nb\nc",z\r\n'         # lines 8-10
        "6,last,row\r\n"            # line 11
    )
    reader = CsvChunkReader(write(tmp_path, "f.csv", content), chunk_rows=2, block_size=48)
    assert reader.header == ["a", "b", "c"]
    seen, malformed = [], []
    for chunk in reader.chunks():
        assert chunk.num_rows <= 2
        seen += list(zip(chunk.line_numbers.tolist(), chunk.columns[1].to_pylist(), strict=True))
        malformed += [(r.line_number, r.raw_text, r.reason) for r in chunk.malformed]
    assert seen == [(2, "two\r\nlines"), (6, 'q "quoted", and comma'), (8, "a\nb\nc"), (11, "last")]
    assert malformed == [(5, "2,short", "expected 3 fields, found 2"), (7, "4,5,6,7", "expected 3 fields, found 4")]


def test_empty_file_and_header_only(engine, tmp_path):
    with pytest.raises(CsvFormatError, match="empty"):
        run_import(engine, tmp_path, b"", name="empty.csv")
    assert rows(engine, "SELECT status, error FROM import_files") == [("failed", "the file is empty (no header line)")]
    result = run_import(engine, tmp_path, HEADER, name="header.csv")
    assert (result.status, result.rows_read, result.lines_imported) == ("completed", 0, 0)


def test_a_canonical_file_with_every_ugly_spelling(engine, tmp_path):
    content = (
        "\ufeffOrder_Ref , Order Date,CUSTOMER_EMAIL,customer_name,sku,product_name,quantity,unit_price,Extra\r\n"
        'A-1,2024-03-01 10:00,Ann@Example.com,"Ann, the ""first""",MUG,"Mug, 27"" big",3,19.99,x\r\n'
        "A-1,2024-03-01 10:00,ann@example.com,Ann,PEN,Pen,1,0.29,\r\n"
        'B-2,2024-03-02,bob@example.com,"Bob\r\nSmith",MUG,Mug,2,19.99,\r\n'
    )
    result = run_import(engine, tmp_path, content, default_stock=7)
    assert (result.status, result.rows_read, result.lines_imported, result.orders, result.rejected) == ("completed", 3, 3, 2, 0)
    assert (result.new_customers, result.new_products) == (2, 2)
    assert result.ignored_columns == ["Extra"]
    assert rows(engine, "SELECT order_ref, total_cents FROM orders ORDER BY order_ref") == [("A-1", 5997 + 29), ("B-2", 3998)]
    assert order_lines(engine, "A-1") == [(1, "MUG", 3, 1999), (2, "PEN", 1, 29)]
    assert rows(engine, "SELECT email, name FROM customers ORDER BY email") == [
        ("ann@example.com", 'Ann, the "first"'), ("bob@example.com", "Bob\r\nSmith")]
    assert rows(engine, "SELECT sku, name, stock, reserved FROM products ORDER BY sku") == [
        ("MUG", 'Mug, 27" big', 7, 0), ("PEN", "Pen", 7, 0)]
    assert balanced(result)


def test_a_rejected_row_names_every_problem_and_keeps_its_text(engine, tmp_path):
    content = HEADER + (
        "A,2024-02-30,not-an-email,Ann,S1,Mug,0,1.234\n"
        "B,2024-03-01,b@example.com,Bob,S1,Mug,-2,-3\n"
        "C,2024-03-01,c@example.com,Cy,S1,Mug,99999999999,1\n"
        "D,2024-03-01,d@example.com,Di,S1,Mug,three,12,50\n"   # 9 fields: malformed
        "E,2024-03-01,e@example.com,Ed,,Mug,1.5,abc\n"
        ",2024-03-01,,Fay,S1,Mug,1,1\n"
        "G,2024-03-01,g@example.com,Gil,S1,Mug,1000000,0.01\n"
    )
    result = run_import(engine, tmp_path, content)
    assert (result.rows_read, result.lines_imported, result.rejected) == (7, 1, 6)
    assert rejects(engine) == [
        (2, "customer_email 'not-an-email' is not an e-mail address; quantity '0' is not positive; "
            "unit_price '1.234' has more than 2 decimals; order_date '2024-02-30' is not a date (YYYY-MM-DD[ HH:MM[:SS]])"),
        (3, "quantity '-2' is not positive; unit_price '-3' is negative"),
        (4, "quantity '99999999999' exceeds the maximum of 1000000"),
        (5, "expected 8 fields, found 9"),
        (6, "sku is empty; quantity '1.5' is not a whole number; "
            "unit_price 'abc' is not an amount (digits with an optional . and cents)"),
        (7, "customer_email is empty; order_ref is empty"),
    ]
    assert rows(engine, "SELECT raw_text FROM import_rejects WHERE line_number = 3") == [
        ("B,2024-03-01,b@example.com,Bob,S1,Mug,-2,-3",)]
    assert rows(engine, "SELECT order_ref, total_cents FROM orders") == [("G", 1_000_000)]


def test_total_amount_must_agree_with_quantity_times_price(engine, tmp_path):
    content = (
        "order_id,customer_email,product_name,quantity,price_per_item,total_amount\n"
        "1,a@example.com,Mug,3,19.99,59.97\n"
        "2,a@example.com,Mug,3,19.99,60.00\n"
        "3,a@example.com,Mug,2,0.29,\n"
        "4,a@example.com,Mug,2,0.29,x\n"
    )
    result = run_import(engine, tmp_path, content)
    assert result.lines_imported == 2
    assert rejects(engine) == [
        (3, "total_amount '60.00' is not quantity × unit_price = 59.97"),
        (5, "total_amount 'x' is not an amount (digits with an optional . and cents)"),
    ]
    assert rows(engine, "SELECT order_ref, total_cents FROM orders ORDER BY order_ref") == [("1", 5997), ("3", 58)]


def test_old_exports_without_sku_order_ref_or_order_date(engine, tmp_path):
    """Lines are grouped by customer and date into orders; skus derive from product names; a
    file without dates takes the import date."""
    content = (
        "customer_email,customer_name,product_name,quantity,product_price,order_date\n"
        "a@example.com,Ann,Blue Mug,1,5.00,2/24/2003 0:00\n"
        "b@example.com,Bob,Blue Mug,1,5.00,2/24/2003 0:00\n"
        "a@example.com,Ann,Red Pen,2,1.25,2/24/2003 0:00\n"
        "a@example.com,Ann,Red Pen,1,1.25,2/25/2003 9:30\n"
    )
    result = run_import(engine, tmp_path, content, date_format="%m/%d/%Y %H:%M")
    assert (result.lines_imported, result.orders) == (4, 3)
    orders = rows(engine, "SELECT o.order_ref, c.email, o.order_date, o.total_cents FROM orders o "
                          "JOIN customers c ON c.id = o.customer_id ORDER BY c.email, o.order_date")
    assert [(email, str(date)[:16], total) for _, email, date, total in orders] == [
        ("a@example.com", "2003-02-24 00:00", 750), ("a@example.com", "2003-02-25 09:30", 125),
        ("b@example.com", "2003-02-24 00:00", 500)]
    assert all(ref.startswith("G-") for ref, *_ in orders)
    assert scalar(engine, "SELECT sku FROM products WHERE name = 'Blue Mug'") == derive_sku("Blue Mug")
    # The same customer and date in another file is the same order (replaced while created).
    again = run_import(engine, tmp_path, content.replace("2,1.25", "5,1.25"), name="again.csv",
                       date_format="%m/%d/%Y %H:%M")
    assert again.orders == 3
    assert scalar(engine, "SELECT count(*) FROM orders") == 3
    assert scalar(engine, "SELECT total_cents FROM orders WHERE order_ref = :r", r=orders[0][0]) == 500 + 625

    undated = run_import(engine, tmp_path, "customer_email,product_name,quantity,unit_price\nz@example.com,Cup,1,1\n",
                         name="undated.csv")
    started = scalar(engine, "SELECT started_at FROM import_files WHERE id = :id", id=undated.file_id)
    assert str(scalar(engine, "SELECT o.order_date FROM orders o JOIN customers c ON c.id = o.customer_id "
                              "WHERE c.email = 'z@example.com'"))[:19] == str(started)[:19]


def test_customers_keyed_by_the_shops_customer_ref(engine, tmp_path):
    content = "order_ref,customer_ref,customer_name,sku,quantity,unit_price\nR1,C-7,Ann,S,1,1\nR2,C-8,Bob,S,1,1\n"
    run_import(engine, tmp_path, content)
    run_import(engine, tmp_path, content.replace("R1,", "R3,").replace("R2,", "R4,"), name="two.csv")
    assert rows(engine, "SELECT customer_ref, email, name FROM customers ORDER BY customer_ref") == [
        ("C-7", None, "Ann"), ("C-8", None, "Bob")]
    assert scalar(engine, "SELECT count(*) FROM orders") == 4


def test_column_mapping_reads_any_export(engine, tmp_path):
    content = "Bestellung,Kunde,Artikel,Menge,Preis\nX1,k@example.com,Tee,2,3.10\n"
    result = run_import(engine, tmp_path, content,
                        columns="Bestellung=order_ref,Kunde=customer_email,Artikel=product_name,Menge=quantity,Preis=unit_price")
    assert result.lines_imported == 1
    assert rows(engine, "SELECT order_ref, total_cents FROM orders") == [("X1", 620)]


def test_bytes_that_are_not_utf8_reject_only_their_row_and_other_encodings_read(engine, tmp_path):
    content = HEADER.encode() + (
        b"A,2024-03-01,a@example.com,Ann,S,Mug,1,1\n"
        b"B,2024-03-01,b@example.com,M\xfcller,S,Mug,1,1\n"
        b"C,2024-03-01,c@example.com,Cy,S,Mug,1,1\n"
        b"D,2024-03-01,d@example.com,\xff\xfe,S\n"  # short, and not UTF-8 either
    )
    result = run_import(engine, tmp_path, content)
    assert (result.lines_imported, result.rejected) == (2, 2)
    assert rows(engine, "SELECT line_number, reason, raw_text FROM import_rejects ORDER BY line_number") == [
        (3, "customer_name: not valid UTF-8 text (shown as \ufffd)", "B,2024-03-01,b@example.com,M\ufffdller,S,Mug,1,1"),
        (5, "expected 8 fields, found 5", "D,2024-03-01,d@example.com,\ufffd\ufffd,S"),
    ]
    latin = run_import(engine, tmp_path, content, name="latin1.csv", encoding="latin-1")
    assert latin.already_imported  # same bytes: the same file, whatever its name
    latin = run_import(engine, tmp_path, content.replace(b",S\n", b",S,Mug,1,1\n"), name="latin1.csv",
                       encoding="latin-1")
    assert (latin.lines_imported, latin.rejected) == (4, 0)
    assert scalar(engine, "SELECT name FROM customers WHERE email = 'b@example.com'") == "Müller"
    assert scalar(engine, "SELECT name FROM customers WHERE email = 'd@example.com'") == "ÿþ"


def test_an_injection_looking_string_is_stored_literally(engine, tmp_path):
    evil = "Robert'); DROP TABLE orders;--"
    result = run_import(engine, tmp_path, HEADER + f"'; DELETE FROM products;--,2024-03-01,x@example.com,\"{evil}\",S,Mug,1,1\n")
    assert result.lines_imported == 1
    assert rows(engine, "SELECT o.order_ref, c.name FROM orders o JOIN customers c ON c.id = o.customer_id") == [
        ("'; DELETE FROM products;--", evil)]
    assert scalar(engine, "SELECT count(*) FROM products") == 1


def test_a_file_of_many_blocks_streams_in_exact_chunks(tmp_path):
    from ordersys_pipelines.domain.imports.generate import generate_orders

    path = generate_orders(tmp_path / "many.csv", rows=5_000, seed=2).path
    reader = CsvChunkReader(path, chunk_rows=1_000, block_size=4_096)
    chunks = list(reader.chunks())
    assert [c.num_rows for c in chunks] == [1_000] * 5
    assert chunks[-1].line_numbers[-1] == 5_001 and reader.bytes_read == path.stat().st_size
