"""dagster.yaml is a working production instance on the real PostgreSQL."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("ORDERSYS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def instance_database(monkeypatch):
    name = f"ordersys_instance_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    # dagster-postgres speaks psycopg2; SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3.
    url = make_url(PG_ADMIN_URL).set(drivername="postgresql+psycopg2", database=name)
    url = url.render_as_string(hide_password=False)
    monkeypatch.setenv("DAGSTER_PG_URL", url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_production_instance_stores_runs_in_postgres(tmp_path, instance_database, pg_url, monkeypatch):
    monkeypatch.setenv("ORDERSYS_DATABASE_URL", pg_url)
    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    from ordersys_pipelines.definitions import build_defs

    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert instance.run_coordinator.__class__.__name__ == "QueuedRunCoordinator"
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        assert {"key": "ordersys/stage", "value": "workflow", "limit": 4} in limits
        # The runs one look of the queue launches start side by side.
        assert instance.run_coordinator.dequeue_use_threads

        # The Definitions are built now, from this test's settings.
        job = build_defs().resolve_job_def("order_workflow")
        result = job.execute_in_process(instance=instance)
        assert result.success
        stored = instance.get_run_by_id(result.run_id)
        assert stored is not None and stored.status == dg.DagsterRunStatus.SUCCESS

    engine = create_engine(instance_database)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM runs")).scalar_one() == 1
    engine.dispose()
