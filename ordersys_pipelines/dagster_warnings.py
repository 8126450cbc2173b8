"""The Dagster warnings this project accepts, in one place; any other warning stays visible.

- `backfill_policy=` is marked beta (BetaWarning) in Dagster 1.13, but it is the documented way
  to backfill a range of daily partitions in one run (DESIGN: one run per backfill).
- `owners=` of SensorDefinition is marked beta: Dagster 1.13.27 re-creates a sensor whose
  `target=` job still needs its resources bound, passing the sensor's (empty) owners along, and
  so warns about a parameter this project never sets.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

ACCEPTED = (
    (r"Parameter `backfill_policy` of .* is currently in beta", dg.BetaWarning),
    (r"Parameter `owners` of initializer `SensorDefinition.__init__` is currently in beta", dg.BetaWarning),
)


@contextmanager
def accepted_dagster_warnings() -> Iterator[None]:
    """Silence exactly the accepted warnings while definitions are built."""
    with warnings.catch_warnings():
        for message, category in ACCEPTED:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield
