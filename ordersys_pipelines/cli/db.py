"""`ordersys db ...`: schema migrations."""

from __future__ import annotations

import click

from ordersys_pipelines.db import migrate
from ordersys_pipelines.settings import get_settings


@click.group()
def db() -> None:
    """Database schema."""


@db.command()
def upgrade() -> None:
    """Create or update the schema (safe to run twice)."""
    url = get_settings().database_url
    migrate.upgrade(url)
    click.echo(f"schema at revision {migrate.current_revision(url)} ({_safe(url)})")


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
