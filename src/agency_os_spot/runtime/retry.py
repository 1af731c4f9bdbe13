"""Transient failures (a database restart, a Redis blip, a serialization conflict) are retried in
place, with exponential backoff and jitter (tenacity), instead of counting as a failed attempt.

A job's handler resumes from the ledger's checkpoint, so running it again after a transient error
neither loses nor repeats a record. Only errors that retrying can cure are retried; anything else
(a bad file, a bug, a refused setting) fails the attempt at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import redis
import sqlalchemy.exc
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    stop_any,
    wait_exponential_jitter,
)

from agency_os_spot import settings
from agency_os_spot.runtime.ledger import ProgressMoved
from agency_os_spot.runtime.termination import Termination

log = logging.getLogger("agency_os.retry")
T = TypeVar("T")

# PostgreSQL SQLSTATE classes/codes that a retry can cure: connection exceptions (08), transaction
# rollbacks (40: serialization failure, deadlock), insufficient resources (53), operator
# intervention (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now), lock not
# available (55P03: our lock_timeout).
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "40", "53", "57P", "55P03")
_TRANSIENT_SQLITE_WORDS = ("database is locked", "database is busy", "disk i/o error")


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same work later can succeed."""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, ProgressMoved)):
        return True  # ProgressMoved: the handler resumes from the ledger's true checkpoint
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        return _transient_database_error(exc)
    return isinstance(exc, (ConnectionError, TimeoutError))


def _transient_database_error(exc: sqlalchemy.exc.DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate:
        return sqlstate.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
    if "sqlite" in type(exc.orig).__module__:
        return any(word in str(exc.orig).lower() for word in _TRANSIENT_SQLITE_WORDS)
    return True  # a psycopg OperationalError without SQLSTATE: the connection itself failed


def retry_budget_s() -> float:
    """How long a job keeps retrying transient errors before the attempt counts as failed."""
    return settings.current().transient_retry_s


def call_with_retries(
    call: Callable[[], T],
    term: Termination,
    *,
    budget_s: float | None = None,
    what: str = "job",
    initial_s: float = 0.5,
    max_wait_s: float = 15.0,
) -> T:
    """`call()`, again after each transient error, until it returns, raises something else, the
    budget is spent (the last error is raised) or termination is requested (the last error is
    raised at once: the caller hands the job back)."""

    def log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "%s: transient error (try %d, next in %.1f s): %s: %s",
            what,
            state.attempt_number,
            state.upcoming_sleep,
            type(exc).__name__,
            str(exc).splitlines()[0] if exc else "",
        )

    retrying = Retrying(
        retry=retry_if_exception(is_transient),
        wait=wait_exponential_jitter(initial=initial_s, max=max_wait_s),
        stop=stop_any(stop_after_delay(retry_budget_s() if budget_s is None else budget_s), lambda _s: term.requested),
        sleep=term.wait,  # a termination request ends the wait at once
        before_sleep=log_retry,
        reraise=True,
    )
    errors: list[BaseException] = []

    def attempt() -> T:
        if errors and term.requested:  # woken by a termination request: do not start again
            raise errors[-1]
        try:
            return call()
        except BaseException as exc:
            errors.append(exc)
            raise

    return retrying(attempt)
