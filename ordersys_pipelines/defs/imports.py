"""The import area: orders_csv (and the order tables it fills), product_catalog, their jobs, and
the inbox sensor."""

from __future__ import annotations

import dagster as dg

from ordersys_pipelines.assets.catalog import inventory_load, product_catalog
from ordersys_pipelines.assets.imports import order_tables, orders_csv, orders_import_job
from ordersys_pipelines.sensors.inbox import inbox_sensor
from ordersys_pipelines.settings import Settings


def build_defs(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=[orders_csv, order_tables, product_catalog],
        jobs=[orders_import_job, inventory_load],
        sensors=[inbox_sensor],
    )
