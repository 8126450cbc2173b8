"""Import benchmark (`make bench-import`): the orders_csv import next to a raw bulk load, on
PostgreSQL and on MariaDB.

Generates a 1M-line order file (cached in bench/out/), creates its own PostgreSQL database
(unique name, dropped at the end) and prints, from one run:

- a raw COPY of the file into a one-table staging copy (all text columns, no index), logged and
  unlogged: the floor any import is measured against;
- the import's lines/s through the same code path as the asset (`dg.materialize` of the file's
  `orders_csv` partition), in a child process whose peak RSS is read with wait4;
- the same at 200k lines, for the memory growth;
- the ratios, and the targets they are held to.

Then the same file on MariaDB (a database of its own, dropped at the end): a raw
`LOAD DATA LOCAL INFILE` of the file into one text table against the import's lines/s, and one
table of both backends side by side. `--backends sqlite` imports it into a fresh SQLite file as
well and shows the import's longest transaction: on SQLite that is how long the one write lock
was held, and every other writer (BEGIN IMMEDIATE) waited.

    python bench/import_bench.py [--rows 1000000] [--small-rows 200000] [--without-fk]
                                 [--backends pg,mariadb,sqlite] [--db-prefix ordersys_bench_imports]

`--without-fk` adds one more import into a copy of the schema without the foreign keys of
orders and order_lines, to show what their per-row checks cost.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
ADMIN_URL = os.environ.get("ORDERSYS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MARIADB_ADMIN_URL = os.environ.get("ORDERSYS_BENCH_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql")
RAW_COLUMNS = "order_ref text, order_date text, customer_email text, customer_name text, sku text, product_name text, quantity text, unit_price text"
TABLES = "order_lines, orders, import_rejects, import_staging, import_files, customers, products"
FOREIGN_KEYS = [
    ("order_lines", "fk_order_lines_order_id_orders"),
    ("order_lines", "fk_order_lines_product_id_products"),
    ("orders", "fk_orders_customer_id_customers"),
    ("orders", "fk_orders_import_file_id_import_files"),
]


def order_file(rows: int, seed: int) -> Path:
    from ordersys_pipelines.domain.imports.generate import generate_orders

    path = OUT / f"orders-{rows}-seed{seed}.csv"
    if not path.exists():
        started = time.perf_counter()
        tmp = path.with_suffix(".part")
        generate_orders(tmp, rows=rows, seed=seed, bad_rows=max(1, rows // 20_000))
        tmp.rename(path)
        print(f"generated {path.name} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return path


def raw_copy(url: str, path: Path, *, unlogged: bool) -> float:
    """Seconds to COPY the file into one text table (created fresh, dropped after)."""
    engine = create_engine(url)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        kind = "UNLOGGED " if unlogged else ""
        cursor.execute(f"CREATE {kind}TABLE raw_copy ({RAW_COLUMNS})")
        raw.commit()
        started = time.perf_counter()
        with open(path, "rb") as handle, cursor.copy("COPY raw_copy FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
            while block := handle.read(1 << 20):
                copy.write(block)
        raw.commit()
        seconds = time.perf_counter() - started
        cursor.execute("DROP TABLE raw_copy")
        raw.commit()
        return seconds
    finally:
        raw.close()
        engine.dispose()


def raw_load_data(url: str, path: Path) -> float:
    """Seconds to LOAD DATA LOCAL INFILE the file into one InnoDB text table (fresh, dropped after)."""
    from ordersys_pipelines.db.engine import get_engine

    with get_engine(url).connect() as conn:
        conn.exec_driver_sql(f"CREATE TABLE raw_copy ({RAW_COLUMNS}) ENGINE=InnoDB CHARACTER SET utf8mb4")
        started = time.perf_counter()
        conn.exec_driver_sql(
            f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE raw_copy CHARACTER SET utf8mb4 "
            "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' "
            "LINES TERMINATED BY '\\n' IGNORE 1 LINES"
        )
        conn.commit()
        seconds = time.perf_counter() - started
        conn.exec_driver_sql("DROP TABLE raw_copy")
    return seconds


def import_in_child(url: str, path: Path, chunk_rows: int) -> dict:
    """Run one import in a child process; its result and its peak RSS (MB)."""
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--child", url, str(path), str(chunk_rows)],
        stdout=subprocess.PIPE,
        text=True,
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"import child failed ({process.returncode})")
    result = json.loads(output.strip().splitlines()[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # kilobytes on Linux
    return result


def child(url: str, path: str, chunk_rows: int) -> None:
    """The asset's code path: materialize the file's orders_csv partition, in-process."""
    import dagster as dg
    from sqlalchemy import event

    from ordersys_pipelines.assets.imports import order_files, orders_csv
    from ordersys_pipelines.db.engine import get_engine
    from ordersys_pipelines.domain.imports.files import content_hash, partition_key
    from ordersys_pipelines.resources import DatabaseResource, ImportsResource

    if path == "-":  # only load the code: the baseline memory of an import process
        print(json.dumps({}))
        return
    opened, transactions = {}, []

    def begin(conn):
        opened[id(conn)] = time.perf_counter()

    def end(conn):  # a read ends in a rollback; on SQLite (BEGIN IMMEDIATE) it held the lock too
        if id(conn) in opened:
            transactions.append(time.perf_counter() - opened.pop(id(conn)))

    engine = get_engine(url)  # the engine the asset's DatabaseResource gets
    event.listen(engine, "begin", begin)
    event.listen(engine, "commit", end)
    event.listen(engine, "rollback", end)
    instance = dg.DagsterInstance.ephemeral()
    key = partition_key(Path(path).name, content_hash(Path(path)))
    instance.add_dynamic_partitions(order_files.name, [key])
    with tempfile.TemporaryDirectory() as inbox:
        started = time.perf_counter()
        result = dg.materialize(
            [orders_csv],
            partition_key=key,
            instance=instance,
            resources={"database": DatabaseResource(url=url), "imports": ImportsResource(inbox=inbox, chunk_rows=chunk_rows)},
            run_config={"ops": {"orders_csv": {"config": {"path": path}}},
                        "loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
        seconds = time.perf_counter() - started
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("orders_csv")[0].metadata.items()}
    print(json.dumps({
        "seconds": seconds,
        "rows_read": metadata["rows_read"],
        "lines_imported": metadata["lines_imported"],
        "orders": metadata["orders"],
        "rejected": metadata["rejected"],
        "transactions": len(transactions),
        "longest_transaction": max(transactions, default=0.0),
    }))


def truncate(url: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
            conn.execute(text("VACUUM ANALYZE"))
        else:
            conn.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
            for table in TABLES.split(", "):
                conn.execute(text(f"TRUNCATE TABLE {table}"))
    engine.dispose()


def drop_foreign_keys(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for table, name in FOREIGN_KEYS:
            kind = "CONSTRAINT" if engine.dialect.name == "postgresql" else "FOREIGN KEY"
            conn.execute(text(f"ALTER TABLE {table} DROP {kind} {name}"))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small-rows", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--without-fk", action="store_true", help="also import without the foreign keys")
    parser.add_argument("--backends", default="pg,mariadb", help="comma-separated: pg, mariadb, sqlite (default pg,mariadb)")
    parser.add_argument("--db-prefix", default="ordersys_bench_imports",
                        help="name prefix of the benchmark's databases (the process id is appended)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return

    OUT.mkdir(parents=True, exist_ok=True)
    big, small = order_file(args.rows, args.seed), order_file(args.small_rows, args.seed)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    summary = []
    if "pg" in backends:
        summary.append(bench_postgres(args, big, small))
    if "mariadb" in backends:
        summary.append(bench_mariadb(args, big))
    if "sqlite" in backends:
        bench_sqlite(args, big)
    if len(summary) > 1:
        from tabulate import tabulate

        print()
        print(tabulate(summary, headers=["backend", "raw bulk load", f"import {args.rows:,} lines", "import / raw"],
                       tablefmt="github"))


def scratch_database(admin_url: str, name: str):
    """Create database `name`; returns its URL and a function that drops it."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    pg = admin.dialect.name == "postgresql"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"' if pg else f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        from ordersys_pipelines.db.engine import get_engine

        get_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' if pg else f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()

    return url, drop


def bench_sqlite(args, big: Path) -> None:
    from tabulate import tabulate

    from ordersys_pipelines.db import migrate

    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/{args.db_prefix}.db"
        migrate.upgrade(url)
        full = import_in_child(url, big, args.chunk_rows)
    rows = [
        (f"import {args.rows:,} lines (orders_csv)", f"{full['rows_read'] / full['seconds']:,.0f} lines/s",
         f"{full['seconds']:.2f} s"),
        ("longest transaction (write lock held)", f"{full['longest_transaction']:.2f} s",
         f"of {full['transactions']} transactions"),
        ("lines imported / rejected / orders", f"{full['lines_imported']:,} / {full['rejected']:,} / {full['orders']:,}", ""),
    ]
    print()
    print("SQLite")
    print(tabulate(rows, headers=["measure", "value", "note"], tablefmt="github"))


def bench_mariadb(args, big: Path) -> tuple:
    from ordersys_pipelines.db import migrate

    url, drop = scratch_database(MARIADB_ADMIN_URL, f"{args.db_prefix}_{os.getpid()}")
    try:
        migrate.upgrade(url)
        load_seconds = raw_load_data(url, big)
        full = import_in_child(url, big, args.chunk_rows)
    finally:
        drop()
    load_rate = args.rows / load_seconds
    import_rate = full["rows_read"] / full["seconds"]
    rows = [
        ("raw LOAD DATA LOCAL INFILE, InnoDB", f"{load_rate:,.0f} rows/s", f"{load_seconds:.2f} s"),
        (f"import {args.rows:,} lines (orders_csv)", f"{import_rate:,.0f} lines/s", f"{full['seconds']:.2f} s"),
        ("import / raw LOAD DATA", f"{import_rate / load_rate * 100:.1f} %", ""),
        ("peak RSS, import", f"{full['peak_rss_mb']:.0f} MB", ""),
        ("lines imported / rejected / orders", f"{full['lines_imported']:,} / {full['rejected']:,} / {full['orders']:,}", ""),
    ]
    from tabulate import tabulate

    print()
    print("MariaDB")
    print(tabulate(rows, headers=["measure", "value", "note"], tablefmt="github"))
    return ("MariaDB", f"{load_rate:,.0f} rows/s (LOAD DATA)", f"{import_rate:,.0f} lines/s",
            f"{import_rate / load_rate * 100:.1f} %")


def bench_postgres(args, big: Path, small: Path) -> tuple:
    from ordersys_pipelines.db import migrate

    url, drop = scratch_database(ADMIN_URL, f"{args.db_prefix}_{os.getpid()}")
    try:
        migrate.upgrade(url)
        copy_logged = raw_copy(url, big, unlogged=False)
        copy_unlogged = raw_copy(url, big, unlogged=True)
        baseline = import_in_child(url, Path("-"), args.chunk_rows)
        truncate(url)
        full = import_in_child(url, big, args.chunk_rows)
        truncate(url)
        part = import_in_child(url, small, args.chunk_rows)
        without_fk = None
        if args.without_fk:
            truncate(url)
            drop_foreign_keys(url)
            without_fk = import_in_child(url, big, args.chunk_rows)
    finally:
        drop()
    copy_rate = args.rows / copy_logged
    import_rate = full["rows_read"] / full["seconds"]
    growth = (full["peak_rss_mb"] / part["peak_rss_mb"] - 1) * 100
    ratio = import_rate / copy_rate * 100
    rows = [
        ("raw COPY, logged table", f"{copy_rate:,.0f} rows/s", f"{copy_logged:.2f} s"),
        ("raw COPY, unlogged table", f"{args.rows / copy_unlogged:,.0f} rows/s", f"{copy_unlogged:.2f} s"),
        (f"import {args.rows:,} lines (orders_csv)", f"{import_rate:,.0f} lines/s", f"{full['seconds']:.2f} s"),
        ("import / raw COPY logged", f"{ratio:.1f} %", "target >= 10 %  " + ("met" if ratio >= 10 else "MISSED")),
        ("import / raw COPY unlogged", f"{import_rate / (args.rows / copy_unlogged) * 100:.1f} %", ""),
        ("peak RSS, process baseline", f"{baseline['peak_rss_mb']:.0f} MB", "code loaded, no import"),
        (f"peak RSS, import {args.small_rows:,} lines", f"{part['peak_rss_mb']:.0f} MB", ""),
        (f"peak RSS, import {args.rows:,} lines", f"{full['peak_rss_mb']:.0f} MB",
         "target < 400 MB  " + ("met" if full["peak_rss_mb"] < 400 else "MISSED")),
        (f"RSS growth {args.small_rows // 1000}k → {args.rows // 1000}k", f"{growth:+.1f} %",
         "target < 10 %  " + ("met" if growth < 10 else "MISSED")),
        ("lines imported / rejected / orders", f"{full['lines_imported']:,} / {full['rejected']:,} / {full['orders']:,}", ""),
    ]
    if without_fk:
        rate = without_fk["rows_read"] / without_fk["seconds"]
        rows.append(("import without FK constraints", f"{rate:,.0f} lines/s", f"{rate / copy_rate * 100:.1f} % of raw COPY"))

    from tabulate import tabulate

    print("PostgreSQL")
    print(tabulate(rows, headers=["measure", "value", "note"], tablefmt="github"))
    return ("PostgreSQL", f"{copy_rate:,.0f} rows/s (COPY)", f"{import_rate:,.0f} lines/s", f"{ratio:.1f} %")


if __name__ == "__main__":
    main()
