"""The one backoff every command and playbook uses for transient failures, and the lock
retries' defaults, in numbers.

Kept apart from :mod:`orchestrator.db.retry` (which imports psycopg and tenacity) so the CLI
can show the default in ``--help`` without loading either.
"""

#: A Neon compute waking from suspend takes a few seconds, which 5 attempts cover
#: (about 0.5 + 1 + 2 + 4 s of waiting).
DEFAULT_ATTEMPTS = 5
DEFAULT_INITIAL_S = 0.5
DEFAULT_MAX_WAIT_S = 20.0
JITTER = 0.25  # each wait is drawn within +-25% of its exponential value

# -- lock timeouts (see orchestrator.db.lock_retry and docs/live-traffic.md) ---------------

#: A statement waiting for its lock makes every later query on the table wait behind it, so
#: the default wait is short: no query stalls much longer than this (pgroll's default too).
DEFAULT_LOCK_TIMEOUT_S = 0.5
#: How long a read of production (the catalog read, pg_dump) waits for a table lock, so that
#: a session holding ACCESS EXCLUSIVE does not stall it for as long as that lasts. Longer:
#: a waiting read makes only DDL queue behind it.
READ_LOCK_TIMEOUT_S = 5.0
#: The first pause after a lock timeout, doubling each time up to the maximum. Short: the
#: point is to come back soon after the blocking transaction ends.
LOCK_RETRY_INITIAL_S = 0.5
LOCK_RETRY_MAX_WAIT_S = 10.0
LOCK_RETRY_JITTER = 0.25
#: How long, by default, a migration keeps trying to get its locks: the attempts (each up to
#: a lock_timeout) and the pauses between them add up to no more than this.
DEFAULT_LOCK_BUDGET_S = 60.0


def lock_retries_within(budget_s: float, lock_timeout_s: float) -> int:
    """The most retries whose attempts and longest pauses fit in ``budget_s`` (pure)."""
    retries, spent = 0, lock_timeout_s  # the first attempt
    while True:
        base = min(LOCK_RETRY_MAX_WAIT_S, LOCK_RETRY_INITIAL_S * 2**retries)
        longest = min(LOCK_RETRY_MAX_WAIT_S, base * (1 + LOCK_RETRY_JITTER))
        if spent + longest + lock_timeout_s > budget_s:
            return retries
        spent += longest + lock_timeout_s
        retries += 1


#: The default retries: as many as the budget holds with the default lock_timeout.
DEFAULT_LOCK_RETRIES = lock_retries_within(DEFAULT_LOCK_BUDGET_S, DEFAULT_LOCK_TIMEOUT_S)
