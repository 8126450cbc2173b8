"""Step retries for what can heal, and only for that.

A step that fails because a server did not answer (the database, Redis, the SMTP server, the
Celery broker) is tried again in the same run after a growing pause; a step that fails because
of its data or a business rule (a file without price columns, a refused refund, a bug) fails at
once: running it again would fail the same way. Dagster's `RetryPolicy` retries every exception,
so the ops and assets are wrapped in `retry_transient`, which turns a transient cause into
`dg.RetryRequested` with the pause `STEP_RETRY_POLICY`'s exponential backoff gives, and lets
everything else through. Run retries (dagster.yaml `run_retries`) are kept for run workers that
died; `retry_on_asset_or_op_failure: false` there leaves step failures to this module.

ORDERSYS_STEP_RETRIES and ORDERSYS_STEP_RETRY_DELAY set the number and the base pause.
"""

from __future__ import annotations

import functools
import inspect
import smtplib
from collections.abc import Callable, Iterator

import dagster as dg
import sqlalchemy.exc

from ordersys_pipelines.domain.failures import DATA_FAILURE, FAILURE_KIND
from ordersys_pipelines.settings import get_settings


@functools.cache
def transient_classes() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the other side did not answer", whatever the statement or the data.

    The Redis and Celery client libraries are imported when a step has failed, not when the
    code location loads: every run worker loads it, and most runs never fail."""
    import kombu.exceptions
    import redis.exceptions

    return (
        sqlalchemy.exc.DisconnectionError,
        sqlalchemy.exc.TimeoutError,  # no pool connection in time
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        smtplib.SMTPConnectError,
        smtplib.SMTPServerDisconnected,
        kombu.exceptions.OperationalError,  # the broker
        ConnectionError,  # refused, reset, broken pipe (OSError subclasses)
        TimeoutError,
    )

# SQLite reports both "database is locked" and "no such table" as OperationalError: only the
# first heals by waiting.
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "unable to open database")
_CHAIN_DEPTH = 8


def _transient_dbapi_error(exc: sqlalchemy.exc.DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
        return False
    if type(exc.orig).__module__.startswith("sqlite3"):
        return any(text in str(exc.orig).lower() for text in _SQLITE_TRANSIENT)
    # PostgreSQL and MariaDB drivers raise OperationalError for connection failures, dropped
    # connections, lock timeouts and deadlocks: all of them heal by trying again.
    return True


def transient_cause(exc: BaseException) -> BaseException | None:
    """The transient exception behind `exc` (itself or one it was raised from), or None.

    A `dg.Failure` that forbids retries is a verdict on the data: never transient, whatever it
    was raised from."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < _CHAIN_DEPTH:
        if isinstance(current, dg.Failure) and not current.allow_retries:
            return None
        if isinstance(current, transient_classes()):
            return current
        if isinstance(current, sqlalchemy.exc.DBAPIError) and _transient_dbapi_error(current):
            return current
        current = current.__cause__ or current.__context__
        seen += 1
    return None


def step_retry_policy() -> dg.RetryPolicy:
    """How many times and after which pauses a transient failure is tried again."""
    settings = get_settings()
    return dg.RetryPolicy(
        max_retries=settings.step_retries,
        delay=settings.step_retry_delay_seconds,
        backoff=dg.Backoff.EXPONENTIAL,
        jitter=dg.Jitter.PLUS_MINUS,
    )


def retry_request(retry_number: int, cause: BaseException) -> dg.RetryRequested:
    """The request for the next attempt (attempt `retry_number + 1` of the policy's backoff)."""
    policy = step_retry_policy()
    seconds = max(0.0, policy.calculate_delay(retry_number + 1)) if policy.delay else 0.0
    request = dg.RetryRequested(max_retries=policy.max_retries, seconds_to_wait=round(seconds, 2))
    request.add_note(f"transient: {type(cause).__name__}: {cause}")
    return request


def _retry_number(args: tuple, kwargs: dict) -> int | None:
    context = kwargs.get("context")
    if context is None and args and hasattr(args[0], "retry_number"):
        context = args[0]
    return getattr(context, "retry_number", None)


def retry_transient(fn: Callable) -> Callable:
    """Wrap an op's or asset's function (under its decorator): a transient failure raises
    `dg.RetryRequested`, a `dg.Failure` without retries is marked a data failure
    (`failure_kind: data`), any other failure passes unchanged. The function needs its context."""

    def retry_or_raise(exc: Exception, args: tuple, kwargs: dict):
        if isinstance(exc, dg.Failure) and not exc.allow_retries:
            # Shown with the failure (UI) and read by the operator alert: fix the input, not the run.
            exc.metadata = {**exc.metadata, FAILURE_KIND: dg.MetadataValue.text(DATA_FAILURE)}
            raise exc
        cause = transient_cause(exc)
        retry_number = _retry_number(args, kwargs)
        if cause is None or retry_number is None:
            raise exc
        raise retry_request(retry_number, cause) from exc

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator_step(*args, **kwargs) -> Iterator:
            try:
                yield from fn(*args, **kwargs)
            except dg.RetryRequested:
                raise
            except Exception as exc:  # noqa: BLE001 - classified, then raised again
                retry_or_raise(exc, args, kwargs)

        return generator_step

    @functools.wraps(fn)
    def step(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except dg.RetryRequested:
            raise
        except Exception as exc:  # noqa: BLE001 - classified, then raised again
            retry_or_raise(exc, args, kwargs)

    return step
