"""The import area: orders_csv (and the order tables it fills), product_catalog, their jobs, the
inbox sensor, and the sensors that mark failed the file of an import run that ended unfinished."""

from __future__ import annotations

import dagster as dg

from ordersys_pipelines.assets.catalog import inventory_load, product_catalog
from ordersys_pipelines.assets.imports import order_tables, orders_csv, orders_import_job
from ordersys_pipelines.sensors.import_runs import import_run_canceled_sensor, import_run_failed_sensor
from ordersys_pipelines.sensors.inbox import inbox_sensor
from ordersys_pipelines.settings import Settings


def build_defs(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=[orders_csv, order_tables, product_catalog],
        jobs=[orders_import_job, inventory_load],
        sensors=[inbox_sensor, import_run_failed_sensor, import_run_canceled_sensor],
    )
