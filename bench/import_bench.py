"""Import benchmark (`make bench-import`): the orders_csv import on PostgreSQL next to a raw COPY.

Generates a 1M-line order file (cached in bench/out/), creates its own PostgreSQL database
(unique name, dropped at the end) and prints, from one run:

- a raw COPY of the file into a one-table staging copy (all text columns, no index), logged and
  unlogged: the floor any import is measured against;
- the import's lines/s through the same code path as the asset (`dg.materialize` of the file's
  `orders_csv` partition), in a child process whose peak RSS is read with wait4;
- the same at 200k lines, for the memory growth;
- the ratios, and the targets they are held to.

    python bench/import_bench.py [--rows 1000000] [--small-rows 200000] [--without-fk]

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

    from ordersys_pipelines.assets.imports import order_files, orders_csv
    from ordersys_pipelines.domain.imports.files import content_hash, partition_key
    from ordersys_pipelines.resources import DatabaseResource, ImportsResource

    if path == "-":  # only load the code: the baseline memory of an import process
        print(json.dumps({}))
        return
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
    }))


def truncate(url: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


def drop_foreign_keys(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for table, name in FOREIGN_KEYS:
            conn.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT {name}"))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small-rows", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--without-fk", action="store_true", help="also import without the foreign keys")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return

    OUT.mkdir(parents=True, exist_ok=True)
    big, small = order_file(args.rows, args.seed), order_file(args.small_rows, args.seed)

    from ordersys_pipelines.db import migrate

    name = f"ordersys_bench_imports_{os.getpid()}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
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
        from ordersys_pipelines.db.engine import get_engine

        get_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

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

    print(tabulate(rows, headers=["measure", "value", "note"], tablefmt="github"))


if __name__ == "__main__":
    main()
