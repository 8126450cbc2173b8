"""`ordersys process --quiet` on the log channel, in an instance with the project's dagster.yaml:
the command prints its summary only, every notification line is in the notification log, and
the dispatch run's event log holds the run's summaries, not one event per notification."""

from __future__ import annotations

import dagster as dg
from click.testing import CliRunner
from notify_support import log_lines
from sqlalchemy import select
from workflow_helpers import add_order, add_products

from ordersys_pipelines.cli import instance_home, main
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.db.schema import notifications


def test_process_quiet_prints_the_summary_and_keeps_the_lines_out_of_the_event_log(settings, tmp_path, monkeypatch):
    home = instance_home.write(tmp_path / "dagster_home")  # the project's dagster.yaml, SQLite storage
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("ORDERSYS_GATEWAY_APPROVAL_RATE", "1")
    with get_engine(settings.database_url).begin() as conn:
        add_products(conn, {"A": 100})
        for i in range(6):
            add_order(conn, f"Q-{i}", [("A", 1)])

    result = CliRunner().invoke(main, ["process", "--quiet", "--no-analytics"], catch_exceptions=False)

    assert result.exit_code == 0, result.output
    [summary] = result.output.splitlines()
    assert summary.startswith("done: ") and "finalized 6" in summary
    with get_engine(settings.database_url).connect() as conn:
        sent = list(conn.execute(select(notifications.c.id).where(notifications.c.status == "sent")).scalars())
    assert len(sent) == 12  # order_confirmed and payment_succeeded per order
    assert sorted(line["notification_id"] for line in log_lines(settings.notify_log_file)) == sorted(sent)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [run] = instance.get_runs(dg.RunsFilter(job_name="notification_dispatch"))
        messages = [entry.user_message for entry in instance.all_logs(run.run_id)]
    assert not any('"notification_id"' in message for message in messages)
    assert any("dispatched 12 notifications: 12 sent" in message for message in messages)
