"""One bad row never stops a stage.

Every stage works on a batch with a few set-based statements, so one row holding a value the
database, the driver or a template cannot take (a timestamp past year 9999, a zero date, a sum
that overflows, a dangling reference) fails the whole batch, and, left alone, the next run's
batch too. `isolate` runs the batch; when it fails with a data error it splits the batch in
halves and tries each, depth first, until the failing item stands alone. That item is
reported with a short reason (the stage's `fail` marks it failed, audited) and every other
sub-batch goes through. Without a bad row the batch runs once, exactly as before.

Bounded work: a batch of n items with k bad ones takes about 2·k·log2(n) extra attempts, and
after `max_failures` failed attempts a failing sub-batch is no longer split but handed back as
`deferred` (the next run takes it up where this one stopped), so even a batch of nothing but
bad rows ends in bounded time, and the first log2(n)+1 failures always isolate an item.

Errors that say nothing about the data (a lost connection, a deadlock, a lock timeout, an SQL
error of the code itself) are raised as before: a retry, not a row, is the cure for those.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

Item = TypeVar("Item", bound=Hashable)
Result = TypeVar("Result")

MAX_FAILURES = 200
MAX_REASON_CHARS = 300
log = logging.getLogger("ordersys.isolation")

# Python errors a bad value raises while a batch is read or rendered (a zero date is a str,
# a timestamp past 9999 does not parse, a reference points at nothing).
DATA_ERRORS = (ValueError, TypeError, ArithmeticError, LookupError, AttributeError)
# PostgreSQL SQLSTATE classes that are about the connection or the transaction, not the data:
# 08 connection, 40 rollback (deadlock, serialization), 53 resources, 57 operator, 58 system.
_TRANSIENT_SQLSTATE = {"08", "40", "53", "57", "58"}
# MySQL/MariaDB: lock wait timeout, deadlock, too many connections, server gone / lost / down.
_TRANSIENT_MYSQL = {1040, 1053, 1205, 1213, 2002, 2003, 2006, 2013, 2055}
_TRANSIENT_SQLITE = ("database is locked", "database table is locked", "disk i/o error")


def is_data_error(error: BaseException) -> bool:
    """Whether `error` can be the fault of one item's values (so isolating it helps)."""
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated or isinstance(
            error, (sa_exc.ProgrammingError, sa_exc.InterfaceError, sa_exc.NotSupportedError)
        ):
            return False
        orig = error.orig
        sqlstate = getattr(orig, "sqlstate", None)
        if sqlstate and sqlstate[:2] in _TRANSIENT_SQLSTATE:
            return False
        code = orig.args[0] if getattr(orig, "args", None) else None
        if isinstance(code, int) and code in _TRANSIENT_MYSQL:
            return False
        return not any(text in str(orig).lower() for text in _TRANSIENT_SQLITE)
    if isinstance(error, sa_exc.StatementError):  # a value a bind or result processor refused
        return isinstance(error.orig, DATA_ERRORS)
    return isinstance(error, DATA_ERRORS)


def describe(error: BaseException) -> str:
    """The error in one short line: the database's message without the statement and its
    parameters (which may be long, or hold what a log should not show)."""
    if isinstance(error, sa_exc.StatementError) and error.orig is not None:
        error = error.orig
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if not text or isinstance(error, (KeyError, TypeError, AttributeError)):
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    # A reason is stored as text: a NUL byte from the data would be refused (PostgreSQL) again.
    return text.replace("\x00", "\\x00")[:MAX_REASON_CHARS]


@dataclass
class Isolation(Generic[Item, Result]):
    """What `isolate` did with a batch."""

    results: list[Result] = field(default_factory=list)  # one per sub-batch that went through
    failed: dict[Item, str] = field(default_factory=dict)  # item → why it cannot be processed
    deferred: list[Item] = field(default_factory=list)  # left for the next run (budget spent)
    failed_attempts: int = 0

    def merged_into(self, total):
        """`total` with every part's result merged in (`total.merge(part)`), returned."""
        for part in self.results:
            total.merge(part)
        return total


def isolate(
    items: Sequence[Item],
    attempt: Callable[[list[Item]], Result],
    *,
    fail: Callable[[dict[Item, str]], object] | None = None,
    stage: str = "batch",
    max_failures: int = MAX_FAILURES,
) -> Isolation[Item, Result]:
    """Run `attempt` on `items`, isolating the items it fails on (see the module doc).

    `attempt(sub_batch)` must be all or nothing (its own transaction, or a savepoint: see
    `in_savepoint`) and keeps the order of the items it is given; sub-batches are tried oldest
    first. `fail(failed)` is called once at the end with every isolated item and its reason;
    it too must be all or nothing (a savepoint), as it is tried again item by item if it fails."""
    outcome: Isolation[Item, Result] = Isolation()
    pending = [list(items)] if items else []
    while pending:
        batch = pending.pop()
        try:
            outcome.results.append(attempt(batch))
            continue
        except Exception as error:  # noqa: BLE001 - classified right below, the rest re-raised
            if not is_data_error(error):
                raise
            outcome.failed_attempts += 1
            if len(batch) == 1:
                outcome.failed[batch[0]] = describe(error)
                log.warning("%s: isolated item %r: %s", stage, batch[0], outcome.failed[batch[0]])
            elif outcome.failed_attempts > max_failures:
                outcome.deferred += batch
            else:
                middle = len(batch) // 2
                pending += [batch[middle:], batch[:middle]]  # the older half is tried first
    if outcome.deferred:
        log.warning("%s: %d item(s) deferred after %d failed attempts", stage, len(outcome.deferred),
                    outcome.failed_attempts)
    if fail is not None and outcome.failed:
        _mark(outcome, fail, stage)
    return outcome


def _mark(outcome: Isolation, fail: Callable[[dict], object], stage: str) -> None:
    """Call `fail` for all isolated items at once; when that fails with a data error (marking
    the row is refused too), item by item, so one unmarkable row keeps the others marked. An
    item that cannot be marked stays as it was (its claim lapses; it is isolated again)."""
    try:
        fail(outcome.failed)
        return
    except Exception as error:  # noqa: BLE001
        if not is_data_error(error):
            raise
    for item, reason in outcome.failed.items():
        try:
            fail({item: reason})
        except Exception as error:  # noqa: BLE001
            if not is_data_error(error):
                raise
            log.error("%s: item %r could not be marked failed: %s", stage, item, describe(error))


def in_savepoint(
    conn: Connection, work: Callable[[Connection, list[Item]], Result]
) -> Callable[[list[Item]], Result]:
    """An attempt that runs `work(conn, sub_batch)` inside a SAVEPOINT of the caller's
    transaction: a failed sub-batch is rolled back alone, and the locks the transaction holds
    (the claim) stay held while the batch is split."""

    def attempt(batch: list[Item]) -> Result:
        with conn.begin_nested():
            return work(conn, batch)

    return attempt
