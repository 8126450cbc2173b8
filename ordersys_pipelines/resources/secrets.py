"""Credentials as Dagster holds them: environment references, resolved only in the process that
uses them."""

from __future__ import annotations

import os

import dagster as dg


def secret(env_name: str, value: str | None) -> str | None:
    """When `value` came from the environment variable `env_name`, a `dg.EnvVar`: Dagster resolves
    it in the run's (or sensor's) process and the repository snapshot the UI serves names only
    the variable. Otherwise (a built-in development default, a value set in code) the value."""
    if value and os.environ.get(env_name) == value:
        return dg.EnvVar(env_name)
    return value


def secret_list(env_name: str, values: tuple[str, ...]) -> str:
    """A list of secrets as one comma-separated value, `secret()`'s way: a `dg.EnvVar` when the
    list is what the environment variable `env_name` says."""
    raw = os.environ.get(env_name, "")
    if values and tuple(item.strip() for item in raw.split(",") if item.strip()) == values:
        return dg.EnvVar(env_name)
    return ",".join(values)
