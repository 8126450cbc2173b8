"""Column types and table options shared by the schema and its migrations, per dialect.

MySQL/MariaDB differ from PostgreSQL in three ways that matter here: DATETIME keeps whole
seconds unless asked for microseconds, CURRENT_TIMESTAMP follows the column's precision only
when given one, and a table's collation decides whether 'A' = 'a' (we want PostgreSQL's
case-sensitive comparisons, so keys such as e-mails and order references stay distinct).
"""

from __future__ import annotations

from sqlalchemy import DateTime, Text
from sqlalchemy.dialects.mysql import DATETIME, LONGTEXT
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


class _MySQLTimestamp(DATETIME):
    """DATETIME(6) whose unreadable values raise, as on the other backends. A zero date
    ('0000-00-00', or '2024-00-10'), storable under a relaxed sql_mode, comes back from PyMySQL
    as a str; passed on, it fails later and far away (a TypeError in a sort, a template)."""

    def result_processor(self, dialect, coltype):
        def process(value):
            if isinstance(value, str):
                raise ValueError(f"stored timestamp {value!r} is not a valid date and time")
            return value

        return process


# Naive UTC with microseconds on every backend (PostgreSQL's TIMESTAMP already has them).
Timestamp = DateTime().with_variant(_MySQLTimestamp(fsp=6), "mysql", "mariadb")

# Text of no set size (a message about an order of many lines): MySQL's TEXT holds 64 KiB and
# cuts what is longer without an error under a relaxed sql_mode; LONGTEXT holds 4 GiB.
LongText = Text().with_variant(LONGTEXT(), "mysql", "mariadb")

# InnoDB (row locks, SKIP LOCKED), four-byte UTF-8, byte-wise case-sensitive comparisons.
TABLE_OPTIONS = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


class now_default(FunctionElement):
    """`CURRENT_TIMESTAMP` as a server default; with microseconds on MySQL/MariaDB."""

    type = Timestamp
    inherit_cache = True


@compiles(now_default)
def _now_default(element, compiler, **kw) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(now_default, "mysql")
@compiles(now_default, "mariadb")
def _now_default_mysql(element, compiler, **kw) -> str:
    return "CURRENT_TIMESTAMP(6)"
