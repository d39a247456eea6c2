"""Retrying a migration after a lock timeout: the policy and what each retry reports.

A short ``lock_timeout`` keeps the migration from stalling traffic for long (every query on
a table queues behind a waiting ``ALTER TABLE``); retrying after a pause, with exponential
backoff and jitter, lets it through once the blocking transaction ends. Only lock timeouts
(SQLSTATE 55P03) are retried this way: connection failures keep their own transient retry
(:mod:`orchestrator.db.retry`), and other SQL errors are never retried.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.db.backoff import LOCK_RETRY_INITIAL_S, LOCK_RETRY_JITTER, LOCK_RETRY_MAX_WAIT_S
from orchestrator.db.blockers import Blocker, describe_all
from orchestrator.db.retry import RetryPolicy

LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout fired


def lock_retry_policy(retries: int) -> RetryPolicy:
    """``retries`` retries after the first attempt (0: one attempt, today's behaviour)."""
    return RetryPolicy(
        attempts=1 + max(0, retries),
        initial=LOCK_RETRY_INITIAL_S,
        max_wait=LOCK_RETRY_MAX_WAIT_S,
        jitter=LOCK_RETRY_JITTER,
    )


@dataclass(frozen=True)
class LockRetry:
    """One lock timeout about to be retried: which attempt, who blocked, how long we pause."""

    attempt: int  # the attempt that timed out (1-based)
    attempts: int  # how many attempts the policy allows in all
    wait_s: float
    where: str  # "0003_x, statement 2 (ALTER TABLE ...)" or ""
    blockers: tuple[Blocker, ...] = field(default=())

    def line(self) -> str:
        """The progress line: ``lock timeout (attempt 2/11) in ...: blocked by ...; retrying``."""
        at = f" in {self.where}" if self.where else ""
        who = describe_all(self.blockers) or "blocker unknown (it ended before we could look)"
        return (
            f"lock timeout (attempt {self.attempt}/{self.attempts}){at}: {who}; rolled back, "
            f"retrying in {self.wait_s:.1f}s"
        )

    def to_json(self) -> dict[str, object]:
        """The audit trail's event fields (``line`` is what the console prints)."""
        return {
            "line": self.line(),
            "attempt": self.attempt,
            "attempts": self.attempts,
            "wait_s": round(self.wait_s, 2),
            "where": self.where,
            "blockers": [b.to_json() for b in self.blockers],
        }


OnLockRetry = Callable[[LockRetry], None]
