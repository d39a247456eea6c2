"""The one backoff every command and playbook uses for transient failures, in numbers.

Kept apart from :mod:`orchestrator.db.retry` (which imports psycopg and tenacity) so the CLI
can show the default in ``--help`` without loading either.
"""

#: A Neon compute waking from suspend takes a few seconds, which 5 attempts cover
#: (about 0.5 + 1 + 2 + 4 s of waiting).
DEFAULT_ATTEMPTS = 5
DEFAULT_INITIAL_S = 0.5
DEFAULT_MAX_WAIT_S = 20.0
JITTER = 0.25  # each wait is drawn within +-25% of its exponential value
