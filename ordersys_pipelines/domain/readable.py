"""Looking at tables that may hold a timestamp nothing can read.

Sensors and commands look at the work tables with one aggregate (MIN, MAX, COUNT) before any
run starts. One stored timestamp past year 9999, a zero date or a text that is no date would
make that look fail on every tick, and the stage would never start to isolate the row
(domain.isolation). `look` runs the aggregate as it is and, when a value cannot be read,
again over the rows whose timestamps can be: those the stage will meet are isolated there.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, Connection, Row, Select, and_, func

from ordersys_pipelines.db.dialect import is_mysql
from ordersys_pipelines.domain.isolation import is_data_error

# Every timestamp the system writes lies in this window (and every KPI day).
READABLE_WINDOW = (datetime(1900, 1, 1), datetime(2200, 1, 1))


def readable(conn: Connection, column) -> ColumnElement[bool]:
    """`column` holds a timestamp every backend and driver reads: within READABLE_WINDOW, and
    a real date (SQLite: text datetime() understands; MariaDB: no zero month or day)."""
    low, high = READABLE_WINDOW
    conditions = [column >= low, column < high]
    if conn.dialect.name == "sqlite":
        conditions.append(func.datetime(column).is_not(None))
    elif is_mysql(conn):
        conditions += [func.month(column) > 0, func.dayofmonth(column) > 0]
    return and_(*conditions)


def look(conn: Connection, statement: Select, *columns) -> Row:
    """The one row of `statement`; if a value of it cannot be read, the row computed over the
    rows whose `columns` are readable."""
    try:
        with conn.begin_nested():
            return conn.execute(statement).one()
    except Exception as error:  # noqa: BLE001 - anything but a data error is raised
        if not is_data_error(error):
            raise
    return conn.execute(statement.where(*(readable(conn, column) for column in columns))).one()
