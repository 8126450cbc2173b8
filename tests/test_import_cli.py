"""`ordersys import`, `generate-orders`, `catalog` and `demo`, and the file generator."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from imports_support import HEADER, rows, scalar, write

from ordersys_pipelines.cli import main
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.domain.imports.generate import BAD_KINDS, generate_orders


@pytest.fixture
def cli(settings, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # runs go to an ephemeral instance
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps tables at the terminal width
    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_import_prints_a_summary_and_missing_or_unreadable_files_are_one_line_errors(cli, settings, tmp_path):
    path = write(tmp_path, "shop.csv", HEADER + "A,2024-03-01,a@example.com,Ann,S,Mug,2,0.29\nB,2024-03-01,bad,Bob,S,Mug,1,1\n")
    result = cli("import", path, "--no-progress")
    assert result.exit_code == 0, result.output
    for text in ("rows read", "lines imported", "rejected rows", "rows/s", "is not an e-mail address"):
        assert text in result.output
    assert rows(get_engine(settings.database_url), "SELECT order_ref, total_cents FROM orders") == [("A", 58)]

    again = cli("import", path, "--no-progress")
    assert again.exit_code == 0 and "already imported; nothing changed" in again.output

    for target, message in ((tmp_path / "nope.csv", "nope.csv: no such file"), (tmp_path, "not a file")):
        failed = cli("import", target)
        assert failed.exit_code != 0
        assert message in failed.output and len(failed.output.strip().splitlines()) == 1

    broken = cli("import", write(tmp_path, "broken.csv", "a,b\n1,2\n"), "--no-progress")
    assert broken.exit_code != 0
    assert "Error: broken.csv: missing required column(s): quantity" in broken.output
    assert len(broken.output.strip().splitlines()) == 1


def test_import_options_date_format_columns_and_encoding(cli, settings, tmp_path):
    path = write(tmp_path, "us.csv", "Ref;X,Mail,Item,Qty,Price,When\n1,m@example.com,Caf\xe9,1,2.50,2/24/2003 0:00\n"
                 .encode("latin-1"))
    result = cli("import", path, "--no-progress", "--encoding", "latin-1", "--date-format", "%m/%d/%Y %H:%M",
                 "--columns", "Ref;X=order_ref,Mail=customer_email,Item=product_name,Qty=quantity,Price=unit_price,When=order_date")
    assert result.exit_code == 0, result.output
    engine = get_engine(settings.database_url)
    assert rows(engine, "SELECT name FROM products") == [("Café",)]
    assert str(scalar(engine, "SELECT order_date FROM orders"))[:16] == "2003-02-24 00:00"


def test_generate_orders_is_seeded_and_its_bad_rows_are_each_rejected_once(cli, settings, tmp_path):
    out = tmp_path / "gen.csv"
    assert cli("generate-orders", "--rows", 600, "--out", out, "--seed", 5, "--bad-rows", 11).exit_code == 0
    first = out.read_bytes()
    assert cli("generate-orders", "--rows", 600, "--out", out, "--seed", 5, "--bad-rows", 11).exit_code == 0
    assert out.read_bytes() == first
    assert len(first.decode().splitlines()) == 601
    catalog = tmp_path / "catalog.csv"
    assert cli("catalog", "generate", "--out", catalog, "--stock", 50).exit_code == 0
    loaded = cli("catalog", "load", catalog)
    assert loaded.exit_code == 0 and "2,000 products created" in loaded.output
    result = cli("import", out, "--no-progress")
    assert result.exit_code == 0, result.output
    engine = get_engine(settings.database_url)
    assert scalar(engine, "SELECT count(*) FROM import_rejects") == 11
    assert scalar(engine, "SELECT count(*) FROM order_lines") == 589
    assert scalar(engine, "SELECT count(*) FROM products") == 2000  # every generated sku is in the catalog


def test_generated_files_look_like_a_shop(tmp_path):
    generated = generate_orders(tmp_path / "g.csv", rows=20_000, seed=9, bad_rows=len(BAD_KINDS))
    import pyarrow.csv as pa_csv

    table = pa_csv.read_csv(tmp_path / "g.csv", convert_options=pa_csv.ConvertOptions(
        column_types={"quantity": "string", "unit_price": "string", "order_date": "string"})).to_pandas()
    per_order = table.groupby("order_ref").size()
    assert generated.orders == len(per_order) and 2.5 < per_order.mean() < 4.5
    orders_per_customer = table.drop_duplicates("order_ref").groupby("customer_email").size()
    assert orders_per_customer.max() > 5  # repeat customers
    assert 1500 < table["sku"].nunique() <= 2000
    dates = table["order_date"][table["order_date"].str.match(r"^\d{4}-\d{2}-\d{2} ")].str[:10]
    assert 330 < (max(dates.map(lambda d: __import__("datetime").date.fromisoformat(d)))
                  - min(dates.map(lambda d: __import__("datetime").date.fromisoformat(d)))).days <= 365
