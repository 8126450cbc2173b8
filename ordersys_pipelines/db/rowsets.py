"""Ship a batch of Python rows to the database as ONE parameter and use it as a table.

Set-based statements often need per-row values computed in Python (a reason per order, a
quantity per product). Instead of one statement per row, or thousands of bind parameters
(PostgreSQL and SQLite both cap their number), the rows travel as a single JSON document that
the database unpacks: `json_to_recordset` on PostgreSQL, `json_each` on SQLite. The result is
a subquery to join or to drive `UPDATE … FROM`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    Connection,
    Subquery,
    Text,
    any_,
    bindparam,
    cast,
    column,
    func,
    select,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import TypeEngine

Columns = Sequence[tuple[str, TypeEngine]]


def rowset(conn: Connection, rows: Iterable[Sequence], columns: Columns, name: str = "rows") -> Subquery:
    """A subquery with `columns` holding `rows` (tuples in column order; ints, strings, None)."""
    names = [c for c, _ in columns]
    param = f"{name}_json"
    if conn.dialect.name == "postgresql":
        document = json.dumps([dict(zip(names, row, strict=True)) for row in rows])
        source = (
            func.json_to_recordset(cast(bindparam(param, document, type_=Text), JSON))
            .table_valued(*[column(c, t) for c, t in columns])
            .render_derived(name=f"{name}_src", with_types=True)
        )
        return select(*[source.c[c] for c in names]).subquery(name)
    document = json.dumps([list(row) for row in rows])
    source = func.json_each(bindparam(param, document, type_=Text)).table_valued("value")
    return select(
        *[type_coerce(func.json_extract(source.c.value, f"$[{i}]"), t).label(c) for i, (c, t) in enumerate(columns)]
    ).subquery(name)


def in_ids(conn: Connection, column_: ColumnElement, ids: Iterable[int], name: str = "ids") -> ColumnElement[bool]:
    """`column IN ids` with the ids as one parameter, however many there are."""
    ids = [int(i) for i in ids]
    if conn.dialect.name == "postgresql":
        return column_ == any_(bindparam(name, ids, type_=ARRAY(BigInteger)))
    return column_.in_(select(rowset(conn, ((i,) for i in ids), [("id", BigInteger())], name).c.id))
