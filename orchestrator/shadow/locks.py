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

from orchestrator.analysis.locks import HeldLocks
from orchestrator.db.connect import connect
from orchestrator.drizzle.journal import Journal
from orchestrator.shadow.replay import apply_migration, create_extensions
from orchestrator.shadow.server import ShadowServer, ShadowSpec

_TABLES = """
SELECT c.oid, n.nspname || '.' || c.relname
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""
_HELD = """
SELECT relation, mode FROM pg_locks
 WHERE pid = pg_backend_pid() AND locktype = 'relation' AND granted
"""


def locks_taken(
    journal: Journal,
    statements: Mapping[str, Sequence[str]],
    shadow: ShadowSpec,
    seeded: Sequence[tuple[str, str]] = (),
) -> dict[str, HeldLocks | None]:
    """For each migration named in ``statements`` (its tag -> its statements, one SQL
    statement each), the locks held after each statement; None when it cannot run in a
    transaction or after a migration PostgreSQL refuses. ``seeded``: production's
    extensions the folder needs (:attr:`~orchestrator.catalog.History.seeded`). Raises
    :class:`~orchestrator.shadow.replay.ReplayError` when the shadow lacks an extension."""
    result: dict[str, HeldLocks | None] = {}
    with (
        ShadowServer(shadow) as server,
        server.database() as url,
        connect(url, autocommit=True) as conn,
    ):
        wanted = dict(seeded)
        create_extensions(conn, wanted, wanted)  # a migration measured needs them, as applied
        for migration in journal.migrations:
            held = None
            if (texts := statements.get(migration.tag)) is not None:
                held = result[migration.tag] = _held_after_each(conn, texts)
            if held is None and apply_migration(conn, migration, server.description, wanted):
                break  # the rest cannot be asked about
    return result


def _held_after_each(conn: psycopg.Connection[Any], texts: Sequence[str]) -> HeldLocks | None:
    held = []
    try:
        with conn.transaction():
            # the tables before the migration, by oid (a renamed one keeps it), named as then:
            # a lock on one it creates, an index or a sequence stalls no traffic of its own
            tables = dict(conn.execute(_TABLES).fetchall())
            for text in texts:
                conn.execute(text.encode("utf-8"))
                rows = conn.execute(_HELD).fetchall()
                held.append(tuple(sorted((tables[r], str(m)) for r, m in rows if r in tables)))
    except psycopg.Error as exc:
        if exc.sqlstate is None:
            raise
        return None  # rolled back: applied as the replay applies it
    return tuple(held)
