"""The `ordersys` command. Each area's commands live in a module of this package.

A command's module is imported only when that command runs: most of them import Dagster and
the definitions (seconds), and `ordersys status` must answer without either.
"""

from __future__ import annotations

import importlib

import click

# command name → (module of this package, attribute)
COMMANDS = {
    "db": ("db", "db"),
    "status": ("status", "status"),
    "runs": ("runs", "runs"),
    "refund": ("refunds", "refund"),
    "refunds": ("refunds", "refunds"),
    "notifications": ("notifications", "notifications"),
    "kpi": ("analytics", "kpi"),
    "leaderboard": ("analytics", "leaderboard"),
    "import": ("imports", "import_command"),
    "imports": ("imports", "imports"),
    "generate-orders": ("imports", "generate_orders_command"),
    "catalog": ("imports", "catalog"),
    "demo": ("demo", "demo"),
    "orders": ("orders", "orders"),
    "payments": ("payments", "payments"),
    "webhook": ("payments", "webhook"),
    "process": ("process", "process"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute = COMMANDS[cmd_name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """ordersys: order-management back office on Dagster."""
