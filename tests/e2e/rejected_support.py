"""The file the stack tests reject on purpose (conftest.py, `rejected_file`): a file without price
columns. Its runs fail by design, so the flow test's "nothing failed" leaves them out."""

from __future__ import annotations

REJECTED_NAME = "no-prices.csv"
NO_PRICES = ("order_ref,order_date,customer_email,customer_name,sku,product_name,quantity\n"
             "N1,2025-03-10,n@example.com,Nan,SKU-1,Mug,2\n")


def failed_by_design(run) -> bool:
    return run.tags.get("ordersys/file") == REJECTED_NAME
