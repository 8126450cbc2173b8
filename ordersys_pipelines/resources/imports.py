"""Import settings as a Dagster resource: where the inbox is and how files are read."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from ordersys_pipelines.domain.imports.files import FAILED, PROCESSED

if TYPE_CHECKING:  # the importer (pyarrow, numpy) is imported where a file is imported
    from ordersys_pipelines.domain.imports.importer import ImportOptions


class ImportsResource(dg.ConfigurableResource):
    """ORDERSYS_INBOX, ORDERSYS_CHUNK_ROWS, ORDERSYS_DEFAULT_STOCK and ORDERSYS_TIMEZONE."""

    inbox: str = "data/inbox"
    chunk_rows: int = 50_000
    default_stock: int = 0
    timezone: str = "UTC"

    @property
    def inbox_path(self) -> Path:
        return Path(self.inbox)

    @property
    def search_folders(self) -> list[Path]:
        """Where a partition's file may be: still in the inbox, or moved aside after its run."""
        return [self.inbox_path, self.inbox_path / PROCESSED, self.inbox_path / FAILED]

    def options(self, *, date_format: str | None = None, columns: str | None = None, encoding: str = "utf-8") -> ImportOptions:
        from ordersys_pipelines.domain.imports.importer import ImportOptions

        return ImportOptions(
            chunk_rows=self.chunk_rows,
            default_stock=self.default_stock,
            timezone=self.timezone,
            date_format=date_format or None,
            columns=columns or None,
            encoding=encoding or "utf-8",
        )
