"""A corpus of hostile order files: each case gives the file, the orders it must import (with
their totals in cents) and every rejected line with its reason. On every backend."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from imports_support import HEADER, rejects, rows, run_import

from ordersys_pipelines.domain.imports.csv_format import CsvFormatError
from ordersys_pipelines.domain.imports.validate import SUPPORTED_DATES

NOTES_HEADER = HEADER.rstrip("\n") + ",notes\n"
RANGE = f"is outside the supported dates ({SUPPORTED_DATES})"
OFFSET = "has an offset that does not exist (at most ±14:00, minutes below 60)"
NOT_AN_AMOUNT = "is not an amount (digits with an optional . and cents)"
LINE_MAX = 99_999_999_999 * 1_000_000  # 1,000,000 × 999,999,999.99: the largest line total


def line(ref: str, *, date: str = "2024-05-01 12:00", email: str | None = None, name: str = "Ann",
         sku: str = "MUG", qty: str = "1", price: str = "1.00", notes: str | None = None) -> str:
    fields = [ref, date, email or f"{ref.lower()}@example.com", name, sku, "Mug", qty, price]
    if notes is not None:
        fields.append(notes)
    return ",".join(fields) + "\n"


@dataclass
class Case:
    content: str | bytes
    orders: dict[str, int]  # order_ref → total_cents
    rejects: list[tuple[int, str]] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    blank_lines: int = 0
    continued_lines: int = 0
    orders_count: int | None = None  # for derived order_refs: how many orders, not which
    derived_rejects: list[int] = field(default_factory=list)  # lines rejected with their derived order


def whole_order(ref: str, bad_line: int, lines: list[int]) -> list[tuple[int, str]]:
    return [(n, f"order {ref} is not imported: its line {bad_line} was rejected") for n in lines]


CASES = {
    "signs on quantities": Case(
        HEADER + line("A", qty="+3") + line("B", qty="+0") + line("C", qty="-1") + line("D", qty="2"),
        {"D": 200},
        [(2, "quantity '+3' has a + sign (write the digits only)"),
         (3, "quantity '+0' has a + sign (write the digits only); quantity '+0' is not positive"),
         (4, "quantity '-1' is not positive")],
    ),
    "signs and odd spellings of amounts": Case(
        HEADER + "".join(line(f"P{i}", price=p) for i, p in enumerate(
            ["+1.00", "-1", "1e2", "1_0", "١٢", "１２", "0x10", '"1,000.00"', "NaN", "inf", ".5", "5.", " 7 ", "0"])),
        {"P10": 50, "P11": 500, "P12": 700, "P13": 0},
        [(2, f"unit_price '+1.00' {NOT_AN_AMOUNT}"), (3, "unit_price '-1' is negative")]
        + [(4 + i, f"unit_price '{p}' {NOT_AN_AMOUNT}")
           for i, p in enumerate(["1e2", "1_0", "١٢", "１２", "0x10", "1,000.00", "NaN", "inf"])],
    ),
    "odd spellings of quantities": Case(
        HEADER + "".join(line(f"Q{i}", qty=q) for i, q in enumerate(["1e2", "١٢", "0x10", "3.0", "007", "1000001"])),
        {"Q4": 700},
        [(2, "quantity '1e2' is not a whole number"), (3, "quantity '١٢' is not a whole number"),
         (4, "quantity '0x10' is not a whole number"), (5, "quantity '3.0' is not a whole number"),
         (7, "quantity '1000001' exceeds the maximum of 1000000")],
    ),
    "NUL and other control characters": Case(
        NOTES_HEADER + line("A", name="An\x00n", notes="") + line("B", sku="M\x01", notes="")
        + line("C", name="Bo\x7fb", notes="") + line("D", name="Cy\x85", notes="") + line("E", notes="a\x00b")
        + line("F", name="Tab\there", notes=""),
        {"E": 100, "F": 100},
        [(2, "customer_name holds the control character U+0000 (at character 3)"),
         (3, "sku holds the control character U+0001 (at character 2)"),
         (4, "customer_name holds the control character U+007F (at character 3)"),
         (5, "customer_name holds the control character U+0085 (at character 3)")],
    ),
    "dates outside the supported range": Case(
        HEADER + "".join(line(f"D{i}", date=d) for i, d in enumerate([
            "9999-12-31T23:00:00-05:00", "0000-01-01", "0001-01-01T00:30:00+01:00", "1899-12-31",
            "1900-01-01T00:30:00+01:00", "2199-12-31T23:00:00-05:00", "1900-01-01", "2199-12-31T23:59:59"])),
        {"D6": 100, "D7": 100},
        [(2 + i, f"order_date '{d}' {RANGE}") for i, d in enumerate([
            "9999-12-31T23:00:00-05:00", "0000-01-01", "0001-01-01T00:30:00+01:00", "1899-12-31",
            "1900-01-01T00:30:00+01:00", "2199-12-31T23:00:00-05:00"])],
    ),
    "offsets that do not exist": Case(
        HEADER + "".join(line(f"Z{i}", date=f"2024-05-01T12:00:00{o}") for i, o in enumerate(
            ["+99:99", "+23:59", "-24:00", "+05:60", "+14:01", "+14:00", "-12:00", "Z", "+0530"])),
        {"Z5": 100, "Z6": 100, "Z7": 100, "Z8": 100},
        [(2 + i, f"order_date '2024-05-01T12:00:00{o}' {OFFSET}")
         for i, o in enumerate(["+99:99", "+23:59", "-24:00", "+05:60", "+14:01"])],
    ),
    "odd date spellings": Case(
        HEADER + "".join(line(f"S{i}", date=d) for i, d in enumerate([
            "2024/05/01", "01.05.2024", "20240501", "2024-5-1", "2024-05-01T25:00", "2023-02-29",
            "2024-05-01t12:00", "2024-02-29", "2024-05-01 12:00:00.123456", "2024-05-01T12:00Z"])),
        {"S7": 100, "S8": 100, "S9": 100},
        [(2 + i, f"order_date '{d}' is not a date (YYYY-MM-DD[ HH:MM[:SS]])") for i, d in enumerate([
            "2024/05/01", "01.05.2024", "20240501", "2024-5-1", "2024-05-01T25:00", "2023-02-29",
            "2024-05-01t12:00"])],
    ),
    "an order whose total does not fit 64-bit cents, next to one that just fits": Case(
        HEADER + line("BIG", qty="1000000", price="999999999.99") * 93
        + line("MAX", qty="1000000", price="999999999.99") * 92,
        {"MAX": 92 * LINE_MAX},
        [(n, "order BIG is not imported: its total exceeds the largest amount (92233720368547758.07)")
         for n in range(2, 95)],
    ),
    "a 1 MB value in an ignored column, and in a stored one": Case(
        NOTES_HEADER + line("A", notes="x" * 1_000_000) + line("B", name="y" * 1_000_000, notes="")
        + line("C", notes=""),
        {"A": 100, "C": 100},
        [(3, "customer_name is longer than 200 characters")],
    ),
    "a quote that opens and never closes, shifting the fields": Case(
        HEADER + line("A") + line("B", name='"Bob') + line("C") + line("D") + line("E"),
        {"A": 100},
        [(3, "a quote opened on line 3 runs to line 6, so lines 3-6 were read as one row: expected 8 fields, found 4")]
        + [(n, "swallowed by the quote opened on line 3 (lines 3-6 were read as one row)") for n in (4, 5, 6)],
    ),
    "a quote that opens in the last column and never closes": Case(
        NOTES_HEADER + line("A", notes="") + line("B", notes='"note') + line("C", notes="") + line("D", notes=""),
        {"A": 100},
        [(3, "a quote opened on line 3 runs to the end of the file, so lines 3-5 were read as one row")]
        + [(n, "swallowed by the quote opened on line 3 (lines 3-5 were read as one row)") for n in (4, 5)],
    ),
    "one bad line rejects its whole order, across chunks": Case(
        HEADER + line("O1", sku="A") + line("O2") + line("O1", sku="B", qty="x") + line("O3") + line("O1", sku="C"),
        {"O2": 100, "O3": 100},
        [(4, "quantity 'x' is not a whole number")] + whole_order("O1", 4, [2, 6]),
        {"chunk_rows": 1},
    ),
    "a line of the wrong shape rejects its order": Case(
        HEADER + line("O1", sku="A") + "O1,2024-05-01 12:00,o1@example.com,Ann,B,Mug,1\n" + line("O2")
        + line("O3").rstrip("\n") + ",extra\n",
        {"O2": 100},
        [(3, "expected 8 fields, found 7"), (5, "expected 8 fields, found 9")] + whole_order("O1", 3, [2]),
    ),
    "lines of one order with different dates or customers": Case(
        HEADER + line("O1") + line("O1", date="2024-05-02 12:00") + line("O2", email="a@example.com")
        + line("O2", email="b@example.com") + line("O3", name="Ann") + line("O3", name="Ann Smith"),
        {"O3": 200},
        [(2, "order O1 has lines with different order dates (2024-05-01 12:00:00, 2024-05-02 12:00:00 UTC); "
             "none of its lines were imported")] * 1
        + [(3, "order O1 has lines with different order dates (2024-05-01 12:00:00, 2024-05-02 12:00:00 UTC); "
               "none of its lines were imported")]
        + [(n, "order O2 has lines for different customers (a@example.com, b@example.com); "
               "none of its lines were imported") for n in (4, 5)],
        {"chunk_rows": 2},
    ),
    "an old export without order_ref: a bad line rejects the lines grouped with it": Case(
        "customer_email,product_name,quantity,price_per_item,order_date\n"
        "a@example.com,Mug,1,1.00,2024-05-01 10:00\n"
        "a@example.com,Pen,x,1.00,2024-05-01 10:00\n"
        "b@example.com,Mug,1,1.00,2024-05-01 10:00\n",
        {},
        [(3, "quantity 'x' is not a whole number")],
        orders_count=1,
        derived_rejects=[2],
    ),
    "a date format and a time zone at the edges of the range": Case(
        HEADER + "".join(line(f"F{i}", date=d) for i, d in enumerate(
            ["31/12/2199 23:30", "01/01/1900 00:30", "01/01/0001 00:00", "31/12/9999 23:00", "01/01/1900 01:30"])),
        {"F0": 100, "F4": 100},
        [(3, f"order_date '01/01/1900 00:30' {RANGE}"), (4, f"order_date '01/01/0001 00:00' {RANGE}"),
         (5, f"order_date '31/12/9999 23:00' {RANGE}")],
        {"date_format": "%d/%m/%Y %H:%M", "timezone": "Europe/Berlin"},
    ),
    "no line end after the last line, a line of spaces, blank lines at the end": Case(
        HEADER + line("A") + "   \n" + line("B") + "\n\n" + line("C").rstrip("\n"), {"A": 100, "B": 100, "C": 100},
        [(3, "expected 8 fields, found 1")], blank_lines=2,
    ),
    "only a header": Case(HEADER, {}),
    "duplicate lines are lines": Case(HEADER + line("O1") * 2, {"O1": 200}),
    "BOM, CRLF and blank lines": Case(
        ("\ufeff" + HEADER + "\n" + line("A") + "\n\n" + line("B")).replace("\n", "\r\n"), {"A": 100, "B": 100},
        blank_lines=3,
    ),
    "CR line ends": Case((HEADER + line("A") + line("B", name='"Bo\rb"')).replace("\n", "\r"),
                         {"A": 100, "B": 100}, continued_lines=1),
    "quoted commas, quotes and newlines": Case(
        HEADER + line("A", name='"Ann, the ""first"""') + line("B", name='"Bob\nSmith"'), {"A": 100, "B": 100},
        continued_lines=1,
    ),
    "UTF-16 with its BOM": Case((HEADER + line("A", name="Müller")).encode("utf-16"), {"A": 100},
                                options={"encoding": "utf-16"}),
    "latin-1": Case((HEADER + line("A", name="Müller")).encode("latin-1"), {"A": 100},
                    options={"encoding": "latin-1"}),
    "bytes that are not UTF-8": Case(
        (HEADER + line("A", name="M\xfcller") + line("B")).encode("latin-1"), {"B": 100},
        [(2, "customer_name: not valid UTF-8 text (shown as \ufffd)")],
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_hostile_files(engine, tmp_path, case: Case):
    result = run_import(engine, tmp_path, case.content, **case.options)
    found = rejects(engine)
    if case.derived_rejects:
        derived = [(n, reason) for n, reason in found if n in case.derived_rejects]
        assert [n for n, _ in derived] == case.derived_rejects
        assert all(reason.startswith("order G-") and reason.endswith(" was rejected") for _, reason in derived)
        found = [item for item in found if item not in derived]
    assert found == sorted(case.rejects)
    imported = dict(rows(engine, "SELECT order_ref, total_cents FROM orders"))
    if case.orders_count is None:
        assert imported == case.orders
    else:
        assert len(imported) == case.orders_count
    assert result.lines_imported == (rows(engine, "SELECT count(*) FROM order_lines")[0][0])
    assert (result.blank_lines, result.continued_lines) == (case.blank_lines, case.continued_lines)
    assert result.lines_balanced, result
    assert result.status == ("completed" if case.orders or case.orders_count or not result.rows_read else "failed")


@pytest.mark.parametrize(("content", "message"), [
    (HEADER.replace(",", ";") + line("A").replace(",", ";"), "missing required column(s): quantity"),
    (HEADER.replace(",", "\t") + line("A").replace(",", "\t"), "missing required column(s): quantity"),
    ("", "the file is empty (no header line)"),
    ('"order_ref,' + "x" * 200_000 + "\n", "the header line cannot be read as CSV"),
])
def test_files_that_are_not_order_csv_fail_whole_with_a_clear_reason(engine, tmp_path, content, message):
    with pytest.raises(CsvFormatError) as failure:
        run_import(engine, tmp_path, content)
    assert message in str(failure.value)
    assert rows(engine, "SELECT status FROM import_files") == [("failed",)]
