"""The terminal commands print to."""

from __future__ import annotations

from rich.console import Console


def console() -> Console:
    # Made per use, not at import: rich fixes the width (COLUMNS) when a Console is created.
    return Console()
