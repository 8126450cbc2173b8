"""Schema, migrations, settings and resources."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from ordersys_pipelines.db import migrate
from ordersys_pipelines.db.schema import customers, products
from ordersys_pipelines.resources.redis import RedisUnavailable, resolve_redis_url
from ordersys_pipelines.settings import Settings, SettingsError

TABLES = {
    "customers", "products", "orders", "order_lines", "order_events", "import_files",
    "import_rejects", "import_staging", "payment_callbacks", "gateway_calls", "refunds",
    "refund_events", "notifications",
}


def test_upgrade_is_idempotent_and_creates_every_table(db_url):
    migrate.upgrade(db_url)
    migrate.upgrade(db_url)
    assert TABLES <= set(migrate.table_names(db_url))
    assert migrate.current_revision(db_url) is not None


def test_reserved_can_never_exceed_stock(engine):
    with engine.begin() as conn:
        conn.execute(insert(products).values(sku="A", name="a", price_cents=100, stock=5, reserved=5))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(products.update().values(reserved=6))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(products.update().values(stock=-1, reserved=0))
    with engine.connect() as conn:
        assert conn.execute(select(products.c.stock, products.c.reserved)).one() == (5, 5)


def test_settings_defaults(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in ("ORDERSYS_DATABASE_URL", "ORDERSYS_REDIS_URL", "ORDERSYS_INBOX", "ORDERSYS_CHUNK_ROWS"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env()
    assert settings.database_url == f"sqlite:///{tmp_path / '.ordersys' / 'ordersys.db'}"
    assert settings.effective_redis_url == "redis://127.0.0.1:6379/0"
    assert str(settings.inbox) == "data/inbox"
    assert settings.chunk_rows == 50_000


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ORDERSYS_CHUNK_ROWS", "lots", "ORDERSYS_CHUNK_ROWS='lots' is not an integer"),
        ("ORDERSYS_CHUNK_ROWS", "0", "must be at least 1"),
        ("ORDERSYS_TIMEZONE", "Mars/Olympus", "not a known time zone"),
        ("ORDERSYS_KPI_START_DATE", "2020-13-01", "is not a date"),
    ],
)
def test_bad_settings_are_named(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        Settings.from_env()


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("mysql://root@127.0.0.1:3306/shop", "mysql+pymysql://root@127.0.0.1:3306/shop"),
        ("mariadb://root@127.0.0.1/shop", "mariadb+pymysql://root@127.0.0.1/shop"),
        ("mysql+pymysql://root@127.0.0.1/shop", "mysql+pymysql://root@127.0.0.1/shop"),
        ("postgresql://postgres@127.0.0.1/shop", "postgresql://postgres@127.0.0.1/shop"),
    ],
)
def test_a_mysql_url_without_driver_uses_pymysql(monkeypatch, given, used):
    monkeypatch.setenv("ORDERSYS_DATABASE_URL", given)
    assert Settings.from_env().database_url == used


def test_timestamps_keep_microseconds(engine):
    """DATETIME(6) on MariaDB: a claim lease or callback time keeps its fraction on every backend."""
    stamp = datetime(2024, 5, 1, 12, 0, 0, 123456)
    with engine.begin() as conn:
        conn.execute(insert(customers).values(email="a@example.com", name="A", created_at=stamp))
        assert conn.execute(select(customers.c.created_at)).scalar_one() == stamp


def test_configured_redis_that_does_not_answer_is_an_error_naming_it(tmp_path):
    url = "redis://127.0.0.1:1/0"
    with pytest.raises(RedisUnavailable, match="redis://127.0.0.1:1/0"):
        resolve_redis_url(url, tmp_path)


def test_unconfigured_redis_falls_back_to_an_embedded_server(tmp_path):
    url = resolve_redis_url(None, tmp_path / "redis")
    assert url.startswith("unix://")
    from ordersys_pipelines.resources.redis import connect

    client = connect(url)
    client.set("k", "v")
    assert client.get("k") == "v"
    client.shutdown(nosave=True)


def test_definitions_load():
    from ordersys_pipelines.definitions import build_defs

    defs = build_defs()

    assert defs.resolve_all_job_defs() is not None


def test_every_stage_sensor_looks_on_every_loop_of_the_sensor_daemon(monkeypatch):
    """The daemon loops every MIN_INTERVAL_LOOP_TIME seconds and skips a sensor whose last tick
    began less than its interval ago. A tick begins just after its loop, so an interval equal to
    the loop is met only every other loop: each stage of a dropped file would wait up to 10 s.
    (The failure and alert sensors keep Dagster's 30 s.)"""
    from dagster._daemon.sensor import MIN_INTERVAL_LOOP_TIME

    from ordersys_pipelines.definitions import build_defs

    monkeypatch.delenv("ORDERSYS_SENSOR_INTERVAL", raising=False)
    chain = {"inbox_sensor", "order_workflow_sensor", "payment_settlement_sensor", "workflow_after_import_sensor",
             "refund_processing_sensor", "notification_dispatch_sensor", "analytics_after_work"}
    intervals = {s.name: s.minimum_interval_seconds for s in build_defs().sensors if s.name in chain}
    assert set(intervals) == chain
    assert {name: i for name, i in intervals.items() if not 0 < i < MIN_INTERVAL_LOOP_TIME} == {}
