"""The `ordersys` command. Each area's commands live in a module of this package."""

from __future__ import annotations

import click

from ordersys_pipelines.cli import (
    analytics,
    db,
    demo,
    imports,
    notifications,
    orders,
    payments,
    process,
    refunds,
    runs,
    status,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """ordersys: order-management back office on Dagster."""


main.add_command(db.db)
main.add_command(status.status)
main.add_command(runs.runs)
main.add_command(refunds.refund)
main.add_command(refunds.refunds)
main.add_command(notifications.notifications)
main.add_command(analytics.kpi)
main.add_command(analytics.leaderboard)
for command in (imports.import_command, imports.generate_orders_command, imports.catalog, demo.demo):
    main.add_command(command)
main.add_command(orders.orders)
main.add_command(payments.payments)
main.add_command(payments.webhook)
main.add_command(process.process)
