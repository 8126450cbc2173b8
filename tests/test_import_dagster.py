"""The orders_csv asset, the product_catalog asset and the inbox sensor, on an ephemeral instance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import dagster as dg
import pytest
from imports_support import HEADER, rows, scalar, write

from ordersys_pipelines.assets.catalog import product_catalog
from ordersys_pipelines.assets.imports import NO_REJECTS_LOST, order_files, orders_csv
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.domain.imports.files import content_hash, partition_key
from ordersys_pipelines.resources import build_resources
from ordersys_pipelines.sensors.inbox import SETTLED_SECONDS, inbox_sensor

GOOD = HEADER + "A1,2024-03-01,a@example.com,Ann,S1,Mug,3,19.99\nA1,2024-03-01,a@example.com,Ann,S2,Pen,1,0.29\n" \
    "A2,2024-03-02,b@example.com,Bob,S1,Mug,0,19.99\n"


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def materialize(instance, settings, path, key=None, **config):
    key = key or partition_key(path.name, content_hash(path))
    instance.add_dynamic_partitions(order_files.name, [key])
    return dg.materialize(
        [orders_csv],
        partition_key=key,
        instance=instance,
        resources=build_resources(settings),
        run_config={"ops": {"orders_csv": {"config": {"path": str(path), **config}}}},
        raise_on_error=False,
    )


def test_the_asset_imports_reports_and_files_the_csv_away(settings, instance):
    path = write(settings.inbox, "march.csv", GOOD)
    key = partition_key(path.name, content_hash(path))
    result = materialize(instance, settings, path, key)
    assert result.success
    metadata = result.asset_materializations_for_node("orders_csv")[0].metadata
    assert {k: metadata[k].value for k in ("dagster/row_count", "rows_read", "lines_imported", "orders", "rejected",
                                           "new_customers", "new_products", "chunks")} == {
        "dagster/row_count": 2, "rows_read": 3, "lines_imported": 2, "orders": 1, "rejected": 1,
        "new_customers": 1, "new_products": 2, "chunks": 1}
    assert "| 4 | quantity '0' is not positive |" in metadata["rejects"].value
    assert metadata["rows_per_second"].value > 0
    checks = result.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [(NO_REJECTS_LOST, True)]
    assert not path.exists() and (settings.inbox / "processed" / "march.csv").exists()

    # Re-executed after its file moved: it finds it in processed/ and changes nothing.
    again = materialize(instance, settings, path, key)
    assert again.success
    assert again.asset_materializations_for_node("orders_csv")[0].metadata["already_imported"].value is True
    assert scalar(get_engine(settings.database_url), "SELECT count(*) FROM order_lines") == 2


def test_a_file_outside_the_inbox_stays_where_it_is(settings, instance, tmp_path):
    path = write(tmp_path, "mine.csv", GOOD)
    assert materialize(instance, settings, path).success
    assert path.exists()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("order_ref,email\nA,a@example.com\n", "missing required column(s): quantity"),
        (HEADER + "A,2024-03-01,a@example.com,Ann,S,Mug,none,1\n", "every one of the 1 rows was rejected"),
    ],
)
def test_unreadable_or_wholly_rejected_files_fail_into_failed_with_a_reason(settings, instance, content, reason):
    path = write(settings.inbox, "bad.csv", content)
    result = materialize(instance, settings, path)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert reason in failure.step_failure_data.user_failure_data.description
    assert not path.exists()
    assert reason in (settings.inbox / "failed" / "bad.csv.reason").read_text()
    assert (settings.inbox / "failed" / "bad.csv").exists()


def test_the_catalog_asset_loads_an_inventory_file(settings, instance):
    path = write(settings.inbox, "stock.csv", "sku,name,price,stock\nS1,Mug,19.99,12\n")
    result = dg.materialize([product_catalog], instance=instance, resources=build_resources(settings),
                            run_config={"ops": {"product_catalog": {"config": {"path": str(path)}}}})
    metadata = result.asset_materializations_for_node("product_catalog")[0].metadata
    assert (metadata["products_created"].value, metadata["rejected"].value) == (1, 0)
    assert rows(get_engine(settings.database_url), "SELECT sku, stock FROM products") == [("S1", 12)]
    assert (settings.inbox / "processed" / "stock.csv").exists()


def tick(instance, settings, cursor):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=build_resources(settings))
    result = inbox_sensor(context)
    return result, result.cursor


def test_the_sensor_waits_for_finished_files_and_requests_each_once(settings, instance):
    inbox = settings.inbox
    orders_file = write(inbox, "orders.csv", GOOD)
    write(inbox, "upload.csv.part", GOOD)
    write(inbox, ".hidden.csv", GOOD)
    (inbox / "processed").mkdir()
    write(inbox / "processed", "old.csv", GOOD)
    catalog_file = write(inbox, "catalog.csv", "SKU,Name,Price,Stock\nS1,Mug,1.00,5\n")

    first, cursor = tick(instance, settings, None)
    assert first.run_requests == [] and first.dynamic_partitions_requests == []
    assert set(json.loads(cursor)) == {"orders.csv", "catalog.csv"}

    # A file still growing is left alone until it stops changing.
    growing = write(inbox, "growing.csv", HEADER)
    second, cursor = tick(instance, settings, cursor)
    digest = content_hash(orders_file)
    key = partition_key("orders.csv", digest)
    requests = {r.job_name: r for r in second.run_requests}
    assert set(requests) == {"orders_import", "inventory_load"}
    assert (requests["orders_import"].run_key, requests["orders_import"].partition_key) == (digest, key)
    assert requests["orders_import"].run_config == {"ops": {"orders_csv": {"config": {"path": str(orders_file)}}}}
    assert requests["orders_import"].tags == {"ordersys/stage": "import", "ordersys/file": "orders.csv"}
    assert requests["inventory_load"].run_key == f"inventory:{content_hash(catalog_file)}"
    assert requests["inventory_load"].run_config == {"ops": {"product_catalog": {"config": {"path": str(catalog_file)}}}}
    assert [r.partition_keys for r in second.dynamic_partitions_requests] == [[key]]

    with open(growing, "a") as handle:
        handle.write("G1,2024-03-01,g@example.com,Gil,S1,Mug,1,1.00\n")
    third, cursor = tick(instance, settings, cursor)
    assert third.run_requests == []  # changed since the last tick
    fourth, cursor = tick(instance, settings, cursor)
    assert [(r.job_name, r.run_key) for r in fourth.run_requests] == [("orders_import", content_hash(growing))]
    fifth, cursor = tick(instance, settings, cursor)
    assert fifth.run_requests == []  # nothing twice


def test_a_file_unchanged_for_a_tick_interval_is_taken_at_first_sight(settings, instance):
    """Renamed into the inbox when complete (its modification time a while back), a file needs no
    second look; one written just now still waits for the next tick."""
    old = write(settings.inbox, "renamed-in.csv", GOOD)
    settled = time.time() - SETTLED_SECONDS - 1
    os.utime(old, (settled, settled))
    write(settings.inbox, "just-written.csv", GOOD.replace("2024", "2023"))
    first, cursor = tick(instance, settings, None)
    assert [r.run_key for r in first.run_requests] == [content_hash(old)]
    second, _ = tick(instance, settings, cursor)
    assert [r.tags["ordersys/file"] for r in second.run_requests] == ["just-written.csv"]


def test_the_sensor_does_not_request_content_already_imported(settings, instance):
    done = write(settings.inbox, "done.csv", GOOD)
    assert materialize(instance, settings, done).success  # moved to processed/
    write(settings.inbox, "same-again.csv", GOOD)
    _, cursor = tick(instance, settings, None)
    result, _ = tick(instance, settings, cursor)
    assert result.run_requests == []


def test_definitions_load_without_warnings():
    code = "from ordersys_pipelines.definitions import build_defs; defs = build_defs(); defs.resolve_all_job_defs(); defs.resolve_sensor_def('inbox_sensor')"
    completed = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True,
                               env={**os.environ, "DAGSTER_HOME": ""})
    assert completed.returncode == 0, completed.stderr[-2000:]
