"""Row sets: a batch of Python rows used as a table, on every backend."""

import json
from datetime import datetime

import pytest
from sqlalchemy import BigInteger, Column, DateTime, MetaData, Table, Text, select, text

from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.db.rowsets import DENSE_MAX_SPREAD, DENSE_MIN_IDS, in_ids, rowset
from ordersys_pipelines.db.schema import order_lines
from ordersys_pipelines.domain.isolation import is_data_error

ROWS = [(1, "plain"), (2, "ünïcödé ✓"), (3, None), (4, "x" * 100_000), (5, "quote ' and \" and ?")]


@pytest.fixture
def conn(db_url):
    engine = get_engine(db_url)
    with engine.begin() as connection:
        yield connection
    engine.dispose()


def test_rows_come_back_as_given(conn):
    rows = rowset(conn, ROWS, [("id", BigInteger()), ("label", Text())], "labels")
    assert [tuple(r) for r in conn.execute(select(rows.c.id, rows.c.label).order_by(rows.c.id))] == ROWS


def test_values_the_driver_cannot_take_as_they_are_are_converted_by_their_type(conn):
    """SQLite's temporary table and PostgreSQL's arrays take any column type; MariaDB's JSON row
    set takes ints, strings and None."""
    if conn.dialect.name in ("mysql", "mariadb"):
        pytest.skip("JSON row sets carry ints, strings and None")
    when = datetime(2024, 3, 1, 12, 30, 15, 123456)
    rows = rowset(conn, [(1, when)], [("id", BigInteger()), ("at", DateTime())], "times")
    assert conn.execute(select(rows.c.at)).scalar_one() == when


def test_a_row_of_the_wrong_width_is_refused(conn):
    with pytest.raises(ValueError):
        rowset(conn, [(1, "a"), (2,)], [("id", BigInteger()), ("label", Text())], "short")


def test_an_empty_row_set_is_an_empty_table(conn):
    rows = rowset(conn, [], [("id", BigInteger()), ("label", Text())], "none")
    assert conn.execute(select(rows.c.id)).all() == []


@pytest.mark.parametrize("value", [2**64, "lone \ud800 surrogate"], ids=["int past 64 bits", "lone surrogate"])
def test_a_value_no_row_set_can_carry_is_a_data_error(conn, value):
    """Refused before the statement, as an error that isolation puts on the row's own values."""
    with pytest.raises(Exception) as caught:
        rows = rowset(conn, [(1, value)], [("id", BigInteger()), ("value", Text())], "hostile")
        conn.execute(select(rows.c.value)).all()
    assert is_data_error(caught.value), repr(caught.value)


def test_the_ends_of_bigint_nulls_and_digits_come_back_as_given(conn):
    """An int in a text column is its digits, on every backend."""
    rows = [(2**63 - 1, "top", None), (-(2**63), None, None), (0, 42, None)]
    found = rowset(conn, rows, [("id", BigInteger()), ("label", Text()), ("empty", Text())], "ends")
    assert sorted(tuple(r) for r in conn.execute(select(found.c.id, found.c.label, found.c.empty))) == [
        (-(2**63), None, None), (0, "42", None), (2**63 - 1, "top", None)]


@pytest.mark.parametrize("row", [(1, "nul \x00 byte"), ("12", "digits in an int column"), (True, "a bool id"),
                                 (3, {"a": 1}), (4, b"bytes"), (5, 1.5)],
                         ids=["NUL byte", "str in an int column", "bool in an int column", "dict as text",
                              "bytes as text", "float as text"])
def test_a_value_postgresql_cannot_take_is_a_data_error(pg_url, row):
    """PostgreSQL's arrays take one type per column and no NUL in text: refused for the values."""
    engine = get_engine(pg_url)
    try:
        with engine.begin() as connection, pytest.raises(Exception) as caught:
            rows = rowset(connection, [(7, "fine"), row], [("id", BigInteger()), ("label", Text())], "hostile")
            connection.execute(select(rows.c.label)).all()
        assert is_data_error(caught.value), repr(caught.value)
    finally:
        engine.dispose()


def test_a_column_of_bools_is_not_taken_as_integers(pg_url):
    """PostgreSQL would cast bool[] to bigint[] (true as 1); the row set refuses it first."""
    engine = get_engine(pg_url)
    try:
        with engine.begin() as connection, pytest.raises(TypeError, match="bool True is not an integer"):
            rowset(connection, [(True, "a"), (False, "b")], [("id", BigInteger()), ("label", Text())], "bools")
    finally:
        engine.dispose()


def test_a_batch_of_long_texts_arrives_whole(conn):
    """A batch as dispatch stores it: 1,000 rows of texts with quotes, newlines, JSON and UTF-8."""
    rows = [(i, f'Subject {i} "quoted"', f"line one\nline 'two' ✓ {i}\n" * 20, f'{{"body": "a\\nb", "n": {i}}}')
            for i in range(1, 1_001)]
    found = rowset(conn, rows, [("id", BigInteger()), ("subject", Text()), ("body", Text()), ("payload", Text())],
                   "texts")
    assert [tuple(r) for r in conn.execute(select(*found.c).order_by(found.c.id))] == rows


# --- in_ids --------------------------------------------------------------------------------------

ID_SETS = {
    "dense": list(range(1_000, 1_000 + DENSE_MIN_IDS)),
    "dense with gaps": [i for i in range(1_000, 1_000 + 3 * DENSE_MIN_IDS) if i % 3],
    "dense with duplicates, unsorted": list(range(2_000 + DENSE_MIN_IDS, 2_000, -1)) * 2,
    "just too sparse": list(range(0, (DENSE_MAX_SPREAD + 1) * DENSE_MIN_IDS, DENSE_MAX_SPREAD + 1)),
    "few": [5, 999_999, -3],
    "around zero and the bigint ends": [-(2**63), -1, 0, 1, 2**63 - 1],
    "dense at the top of bigint": list(range(2**63 - DENSE_MIN_IDS, 2**63)),
    "dense at the bottom of bigint": list(range(-(2**63), -(2**63) + DENSE_MIN_IDS)),
}


@pytest.mark.parametrize("ids", ID_SETS.values(), ids=ID_SETS.keys())
def test_in_ids_matches_exactly_the_ids_asked_for(conn, ids):
    """Dense or not, no id inside a dense set's range that was not asked for comes back."""
    probe = Table("in_ids_probe", MetaData(), Column("id", BigInteger, primary_key=True, autoincrement=False),
                  prefixes=["TEMPORARY"])
    probe.create(conn)
    try:
        ends = set(range(2**63 - 2 * DENSE_MIN_IDS, 2**63)) | set(range(-(2**63), -(2**63) + 2 * DENSE_MIN_IDS))
        stored = sorted(set(range(-5, 4_000)) | ends | {999_999})
        conn.execute(probe.insert(), [{"id": i} for i in stored])
        found = conn.execute(select(probe.c.id).where(in_ids(conn, probe.c.id, ids))).scalars().all()
        assert sorted(found) == sorted(set(ids) & set(stored))
    finally:
        probe.drop(conn)


def test_in_ids_of_no_ids_matches_nothing(conn):
    assert conn.execute(select(order_lines.c.id).where(in_ids(conn, order_lines.c.id, []))).all() == []


def _plan(conn, statement) -> str:
    compiled = statement.compile(dialect=conn.dialect)
    return json.dumps(conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + str(compiled), compiled.params).scalar())


def test_a_dense_batch_is_read_through_the_index_by_its_range(pg_url):
    """10,000 consecutive orders' lines: the ids' range is the index condition (which the planner
    costs as one range, not as 10,000 descents), `= ANY` the filter within it."""
    engine = get_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE dense_lines (id bigserial PRIMARY KEY, order_id bigint NOT NULL, "
                          "line_no int NOT NULL, quantity bigint NOT NULL) WITH (autovacuum_enabled = off)"))
        conn.execute(text("INSERT INTO dense_lines (order_id, line_no, quantity) "
                          "SELECT o, line, 1 FROM generate_series(1, 100000) o, generate_series(1, 3) line"))
        conn.execute(text("CREATE UNIQUE INDEX ix_dense_lines_order ON dense_lines (order_id, line_no)"))
        conn.execute(text("ANALYZE dense_lines"))
    try:
        lines = Table("dense_lines", MetaData(), Column("id", BigInteger), Column("order_id", BigInteger))
        ids = [i for i in range(50_001, 62_001) if i % 6]  # 10,000 ids, a few gaps
        with engine.connect() as conn:
            dense = select(lines.c.id).where(in_ids(conn, lines.c.order_id, ids))
            plan = _plan(conn, dense)
            assert "Seq Scan" not in plan and "ix_dense_lines_order" in plan
            assert "(order_id >= '50001'::bigint) AND (order_id <= '62000'::bigint)" in plan
            assert len(conn.execute(dense).all()) == 30_000
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE dense_lines"))
        engine.dispose()


def test_postgresql_sessions_plan_every_statement_for_its_values_without_jit(pg_url):
    """A batch statement run again and again is never prepared on the server (a generic plan
    would know nothing of the ids' array), and no statement is compiled by JIT."""
    engine = get_engine(pg_url)
    with engine.connect() as conn:
        for start in range(0, 10_000, 1_000):
            conn.execute(select(order_lines.c.id).where(
                in_ids(conn, order_lines.c.order_id, range(start, start + 1_000)))).all()
        assert conn.execute(text("SELECT count(*) FROM pg_prepared_statements")).scalar_one() == 0
        assert conn.execute(text("SHOW jit")).scalar_one() == "off"
