"""Processes of a test, as /proc shows them (ordersys_pipelines.run_launcher reads it)."""

from __future__ import annotations

from pathlib import Path

from ordersys_pipelines.run_launcher import proc_stat


def child_pids(pid: int) -> list[int]:
    """Processes whose parent is `pid` (fields[1] of /proc/N/stat is the parent pid)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := proc_stat(int(entry.name))) and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found
