"""The `ordersys` command. Each area's commands live in a module of this package."""

from __future__ import annotations

import click

from ordersys_pipelines.cli import db, orders, payments, process


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """ordersys: order-management back office on Dagster."""


main.add_command(db.db)
main.add_command(orders.orders)
main.add_command(payments.payments)
main.add_command(payments.webhook)
main.add_command(process.process)
