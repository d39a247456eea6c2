"""Which database failures are transient, and the tenacity policy that retries them.

Serverless Postgres (Neon) suspends idle computes: the first connection may be refused or
dropped while the compute wakes up, and a proxy may cut idle connections. Those failures
say nothing about our SQL and are worth retrying. SQL errors, constraint violations, lock
and statement timeouts are answers from the database: retrying them blindly would only
repeat the mistake or pile onto a locked table, so they are never retried here.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import psycopg
import tenacity

from orchestrator.db.backoff import DEFAULT_ATTEMPTS, DEFAULT_INITIAL_S, DEFAULT_MAX_WAIT_S, JITTER
from orchestrator.errors import DatabaseError

T = TypeVar("T")

# SQLSTATEs that mean "the server or the path to it went away", not "your SQL is wrong".
TRANSIENT_SQLSTATES = frozenset(
    {
        "57P01",  # admin_shutdown: server restarting, or Neon suspending the compute
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now: the server is starting up
        "57P05",  # idle_session_timeout
        "53300",  # too_many_connections
        "08000",  # connection_exception
        "08001",  # sqlclient_unable_to_establish_sqlconnection
        "08003",  # connection_does_not_exist
        "08004",  # sqlserver_rejected_establishment_of_sqlconnection
        "08006",  # connection_failure
        "08P01",  # protocol_violation, seen when a proxy cuts a connection mid-message
    }
)

# Phrases of connection-level failures that carry no SQLSTATE (raised by libpq itself).
TRANSIENT_MESSAGES = (
    "connection refused",
    "could not connect",
    "server closed the connection",
    "connection reset",
    "connection timed out",
    "timeout expired",
    "terminating connection",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is not yet accepting connections",  # crash recovery after a restart
    "the database system is in recovery mode",
    "couldn't connect to compute node",  # Neon proxy while the compute wakes
    "compute is starting",
    "ssl syscall error",
    "eof detected",
    "consuming input failed",
    "no connection to the server",
    "connection is lost",
    "the connection is closed",
    "failed: no such file or directory",  # a Unix socket not there yet: the server is down
)


def is_transient_message(message: str) -> bool:
    """Whether libpq's words (from psycopg or a client program such as ``pg_dump``) say
    the connection failed rather than the SQL it carried."""
    lowered = message.lower()
    return any(phrase in lowered for phrase in TRANSIENT_MESSAGES)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure of the connection rather than of the SQL it carried."""
    if isinstance(exc, DatabaseError):
        return exc.transient
    if not isinstance(exc, psycopg.Error):
        return False
    if sqlstate := getattr(exc, "sqlstate", None):
        return sqlstate in TRANSIENT_SQLSTATES
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return is_transient_message(str(exc))
    return False


_random = random.Random()


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a transient failure."""

    attempts: int = DEFAULT_ATTEMPTS
    initial: float = DEFAULT_INITIAL_S  # seconds before the first retry; doubles each time
    max_wait: float = DEFAULT_MAX_WAIT_S
    jitter: float = JITTER

    def wait(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based): exponential, jittered.

        The jitter spreads the retries of several clients that lost the same server at the
        same moment (a restart, a compute waking up), so they do not all return at once.
        """
        base = min(self.max_wait, self.initial * 2 ** (attempt - 1))
        spread = base * self.jitter
        return float(max(0.0, min(self.max_wait, base + _random.uniform(-spread, spread))))

    @classmethod
    def none(cls) -> RetryPolicy:
        """A policy that tries once."""
        return cls(attempts=1)


OnRetry = Callable[[int, BaseException, float], None]  # (attempt that failed, error, wait)


def call_with_retry(
    func: Callable[[], T],
    policy: RetryPolicy,
    *,
    on_retry: OnRetry | None = None,
    sleep: Callable[[float], None] | None = None,
) -> T:
    """Call ``func``; retry it on transient failures per ``policy``; re-raise the last error.

    ``sleep`` waits between attempts (tenacity's own by default).
    """

    def before_sleep(state: tenacity.RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            error = state.outcome.exception()
            wait = state.next_action.sleep if state.next_action else 0.0
            if error is not None:
                on_retry(state.attempt_number, error, wait)

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max(1, policy.attempts)),
        wait=lambda state: policy.wait(state.attempt_number),
        retry=tenacity.retry_if_exception(is_transient),
        before_sleep=before_sleep,
        sleep=sleep or tenacity.nap.sleep,
        reraise=True,
    )
    return retrying(func)
