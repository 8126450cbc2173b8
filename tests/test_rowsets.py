"""Row sets: a batch of Python rows used as a table, on every backend."""

from datetime import datetime

import pytest
from sqlalchemy import BigInteger, DateTime, Text, select

from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.db.rowsets import rowset
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
    """SQLite's temporary table takes any column type; the JSON row sets take ints, strings, None."""
    if conn.dialect.name != "sqlite":
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
