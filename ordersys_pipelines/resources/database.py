"""The database as a Dagster resource."""

from __future__ import annotations

import dagster as dg
from sqlalchemy import Engine

from ordersys_pipelines.db.engine import get_engine


class DatabaseResource(dg.ConfigurableResource):
    """SQLAlchemy engine for ORDERSYS_DATABASE_URL (PostgreSQL or SQLite)."""

    url: str

    @property
    def engine(self) -> Engine:
        return get_engine(self.url)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name
