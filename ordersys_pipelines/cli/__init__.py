"""The `ordersys` command. Each area's commands live in a module of this package."""

from __future__ import annotations

import click

from ordersys_pipelines.cli import analytics, db


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """ordersys: order-management back office on Dagster."""


main.add_command(db.db)
main.add_command(analytics.kpi)
main.add_command(analytics.leaderboard)
