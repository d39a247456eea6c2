"""Which table locks each statement of a migration takes, as PostgreSQL takes them.

The folder is replayed on a new shadow database; each migration asked about runs its
statements one by one in one transaction (as ``migrate`` runs it), and after each statement
the locks its own backend holds are read from ``pg_locks`` before going on; the transaction
then commits, so the next migration finds what this one built. A migration PostgreSQL
refuses to run in a transaction (``CREATE INDEX CONCURRENTLY``) has no answer here: its
locks are those of the documented lock table (:mod:`orchestrator.analysis.locks`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from orchestrator.db.connect import connect
from orchestrator.drizzle.journal import Journal
from orchestrator.shadow.replay import apply_migration
from orchestrator.shadow.server import ShadowServer, ShadowSpec

#: Per statement, the (table, pg_locks mode) pairs the transaction holds after it.
HeldLocks = tuple[tuple[tuple[str, str], ...], ...]

_HELD = """
SELECT n.nspname || '.' || c.relname, l.mode
  FROM pg_locks l
  JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted
   AND c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
 ORDER BY 1, 2
"""


def locks_taken(
    journal: Journal, statements: Mapping[str, Sequence[str]], shadow: ShadowSpec
) -> dict[str, HeldLocks | None]:
    """For each migration named in ``statements`` (its tag -> its statements, one SQL
    statement each), the locks held after each statement; None when it cannot run in a
    transaction or after a migration PostgreSQL refuses. Raises
    :class:`~orchestrator.shadow.replay.ReplayError` when the shadow lacks an extension."""
    result: dict[str, HeldLocks | None] = {}
    with (
        ShadowServer(shadow) as server,
        server.database() as url,
        connect(url, autocommit=True) as conn,
    ):
        for migration in journal.migrations:
            texts = statements.get(migration.tag)
            held = None if texts is None else _held_after_each(conn, texts)
            if texts is not None:
                result[migration.tag] = held
            if held is None and apply_migration(conn, migration, server.description) is not None:
                break  # the rest cannot be asked about
    return result


def _held_after_each(conn: psycopg.Connection[Any], texts: Sequence[str]) -> HeldLocks | None:
    held = []
    try:
        with conn.transaction():
            for text in texts:
                conn.execute(text.encode("utf-8"))
                held.append(tuple((str(t), str(m)) for t, m in conn.execute(_HELD).fetchall()))
    except psycopg.Error as exc:
        if exc.sqlstate is None:
            raise
        return None  # rolled back: applied as the replay applies it
    return tuple(held)
