"""The terminal commands print to."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text


def console() -> Console:
    # Made per use, not at import: rich fixes the width (COLUMNS) when a Console is created.
    return Console()


def plain_text(text: str, width: int | None = None) -> Text:
    """Data from files and databases as plain text: control bytes shown as escapes, never read as
    rich markup (a reason may contain "[/]"), cut to `width` characters."""
    shown = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in str(text))
    if width is not None and len(shown) > width:
        shown = shown[: width - 1] + "…"
    return Text(shown)
