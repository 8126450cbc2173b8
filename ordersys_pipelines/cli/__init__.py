"""The `ordersys` command. Each area's commands live in a module of this package."""

from __future__ import annotations

import click

from ordersys_pipelines.cli import db, demo, imports


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """ordersys: order-management back office on Dagster."""


main.add_command(db.db)
for command in (imports.import_command, imports.generate_orders_command, imports.catalog, demo.demo):
    main.add_command(command)
