"""The import area: orders_csv and product_catalog with their jobs, and the inbox sensor."""

from __future__ import annotations

import dagster as dg

from ordersys_pipelines.assets.catalog import inventory_load, product_catalog
from ordersys_pipelines.assets.imports import orders_csv, orders_import_job
from ordersys_pipelines.sensors.inbox import inbox_sensor

defs = dg.Definitions(assets=[orders_csv, product_catalog], jobs=[orders_import_job, inventory_load], sensors=[inbox_sensor])
