"""`ordersys demo` runs the whole pipeline on a fresh database and Redis prefix."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from ordersys_pipelines.cli import main
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.resources.redis import connect


def _scalar(engine, sql: str):
    with engine.connect() as conn:
        return conn.execute(text(sql)).scalar_one()


def test_demo_runs_every_stage(sqlite_url, redis_resource, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORDERSYS_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("ORDERSYS_REDIS_URL", redis_resource.url)
    monkeypatch.setenv("ORDERSYS_REDIS_PREFIX", redis_resource.key_prefix)
    monkeypatch.setenv("ORDERSYS_INBOX", str(tmp_path / "inbox"))
    monkeypatch.setenv("ORDERSYS_GATEWAY_REFUND_FAILURE_RATE", "0")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)

    result = CliRunner().invoke(
        main, ["demo", "--rows", "400", "--bad-rows", "4", "--seed", "3", "--refunds", "4"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    for step in ("1. Database", "4. Import", "5. Before", "6. Workflow", "7. Refunds", "8. KPIs", "9. After"):
        assert step in result.output
    assert "repeated: same refund" in result.output

    engine = get_engine(sqlite_url)
    assert _scalar(engine, "SELECT count(*) FROM order_lines") == 396
    assert _scalar(engine, "SELECT count(*) FROM orders WHERE status NOT IN ('finalized', 'failed')") == 0
    # Four refunds although five requests were made (one repeated), all processed.
    assert _scalar(engine, "SELECT count(*) FROM refunds") == 4
    assert _scalar(engine, "SELECT count(*) FROM refunds WHERE status = 'processed'") == 4
    assert _scalar(engine, "SELECT count(*) FROM notifications WHERE status <> 'sent'") == 0
    # Stock conserved: what left the shelf is what the finalized orders bought.
    sold = _scalar(engine, "SELECT sum(l.quantity) FROM order_lines l JOIN orders o ON o.id = l.order_id "
                           "WHERE o.status = 'finalized'")
    assert _scalar(engine, "SELECT sum(stock) FROM products") == 2000 * 1000 - sold
    assert _scalar(engine, "SELECT sum(reserved) FROM products") == 0

    client = connect(redis_resource.url)
    leaderboard = client.zrange(redis_resource.key("leaderboard:customers"), 0, -1, withscores=True)
    net = _scalar(engine, "SELECT sum(total_cents) FROM orders WHERE status = 'finalized'") - _scalar(
        engine, "SELECT sum(amount_cents) FROM refunds WHERE status = 'processed'")
    assert int(sum(score for _, score in leaderboard)) == net
    assert list(client.scan_iter(match=redis_resource.key("kpi:daily:*")))


@pytest.mark.parametrize("columns", ["80", "50"])
def test_the_refund_table_shows_refs_whole(columns, monkeypatch, capsys):
    from ordersys_pipelines.cli.demo import print_refunds

    monkeypatch.setenv("COLUMNS", columns)
    ref, reference = "ORD-2026-0000123456", "demo-123456789-ORD-2026-0000123456"
    print_refunds([(ref, reference, "1234.56", "partial", "processed", "repeated: same refund"),
                   ("ORD-2026-0000123457", "demo-1-ORD-2026-0000123457", "", "", "rejected", "not [b]refundable[/b]")])
    shown = capsys.readouterr().out
    assert ref in shown and reference in shown and "demo-1-ORD-2026-0000123457" in shown
    assert "1234.56" in shown and "processed" in shown and "…" not in shown
    assert "[b]" in shown  # a reason is text, never markup
