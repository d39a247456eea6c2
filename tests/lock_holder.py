"""Another session holding a table lock while the code under test runs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

#: A backstop, not a time limit: code that wrongly waits for the lock gets it when the
#: holder is made to go, and its test then fails on what it sees instead of hanging.
BACKSTOP_S = 60.0


@contextmanager
def table_locked(
    url: str, table: str, application_name: str, mode: str = "ACCESS EXCLUSIVE"
) -> Iterator[None]:
    """A session named ``application_name`` holds ``mode`` on ``table`` for the block: ACCESS
    EXCLUSIVE as a long ALTER TABLE or a migration left idle in its transaction would, ACCESS
    SHARE as a report reading the table in an open transaction would."""
    with psycopg.connect(url, application_name=application_name) as holder:
        holder.execute(f"LOCK TABLE {table} IN {mode} MODE")
        backstop = threading.Timer(BACKSTOP_S, _end_session, (url, holder.info.backend_pid))
        backstop.start()
        try:
            yield
        finally:
            backstop.cancel()


def _end_session(url: str, pid: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
