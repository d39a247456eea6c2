"""Replay a migrations folder on a shadow database, as drizzle applies it, and read back
what PostgreSQL built after each migration.

Each migration runs in a transaction of its own, its statements split at drizzle's
breakpoints and sent one by one (so a refusal names its statement), then the catalog is
read with the reader production is read with. A migration PostgreSQL refuses to run in a
transaction (``CREATE INDEX CONCURRENTLY``) is run statement by statement, as ``migrate
--allow-concurrent`` runs it. The shadow starts empty, so a role that production has and a
policy names is created on the shadow when PostgreSQL says it is missing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from orchestrator.catalog import History, ReplayFailure, delta
from orchestrator.catalog.snapshot import CatalogSnapshot
from orchestrator.db.catalog_reader import read_catalog
from orchestrator.db.connect import connect
from orchestrator.drizzle.journal import Journal, Migration
from orchestrator.errors import UsageError

NOT_IN_TRANSACTION = "25001"  # active_sql_transaction: "cannot run inside a transaction block"
UNDEFINED_OBJECT = "42704"
_MISSING_ROLE = re.compile(r'role "([^"]+)" does not exist')
_MISSING_EXTENSION = re.compile(r'extension "([^"]+)"')
_ROLES_CREATED_AT_MOST = 20


class ReplayError(UsageError):
    """The folder does not replay on the shadow: PostgreSQL refused one of its statements."""

    def __init__(self, failure: ReplayFailure, server: str) -> None:
        self.failure = failure
        super().__init__(_explain(failure, server))


def _explain(failure: ReplayFailure, server: str) -> str:
    missing = _MISSING_EXTENSION.search(failure.message)
    if missing and failure.sqlstate in ("0A000", "58P01"):
        return (
            f"{failure.tag} needs the extension {missing.group(1)!r}, which the shadow "
            f"({server}) does not have: name a shadow server that has it (--shadow-url, "
            "or the playbook's shadow: {url_env: NAME})"
        )
    return f"the migrations do not replay on an empty database ({server}): {failure}"


def replay_history(url: str, journal: Journal, *, schema: str, table: str, server: str) -> History:
    """Replay every migration of ``journal`` on the empty database at ``url``."""
    with connect(url, autocommit=True) as conn:
        before = read_catalog(conn, schema=schema, table=table)
        initial, deltas, rewrites = before.objects, [], []
        for migration in journal.migrations:
            failure = apply_migration(conn, migration)
            if failure is not None:
                raise ReplayError(failure, server)
            after = read_catalog(conn, schema=schema, table=table)
            deltas.append(delta(before.objects, after.objects))
            rewrites.append(_rewritten(before, after))
            before = after
    return History(
        hashes=tuple(m.hash for m in journal.migrations),
        initial=initial,
        deltas=tuple(deltas),
        server=server,
        server_major=before.server_major,
        rewrites=tuple(rewrites),
    )


def _rewritten(before: CatalogSnapshot, after: CatalogSnapshot) -> tuple[str, ...]:
    """Tables that existed before and whose storage is new after: the migration rewrote them."""
    return tuple(
        sorted(
            name
            for name, node in after.storage.items()
            if name in before.storage and before.storage[name] != node
        )
    )


def apply_migration(conn: psycopg.Connection[Any], migration: Migration) -> ReplayFailure | None:
    """Run one migration in a transaction of its own (committed); its failure, if any."""
    for _ in range(_ROLES_CREATED_AT_MOST):
        failure = run_in_transaction(conn, [migration], commit=True)
        if failure is None:
            return None
        if failure.sqlstate == NOT_IN_TRANSACTION:
            return _run_outside_transaction(conn, migration)
        if not _create_missing_role(conn, failure):
            return failure
    return failure


def run_in_transaction(
    conn: psycopg.Connection[Any], migrations: Sequence[Migration], *, commit: bool
) -> ReplayFailure | None:
    """Run ``migrations`` in one transaction, committed or rolled back; the first refusal."""
    current: tuple[Migration, str] | None = None
    try:
        with conn.transaction(force_rollback=not commit):
            for migration in migrations:
                for statement in _statements(migration):
                    current = (migration, statement)
                    conn.execute(statement.encode("utf-8"))
    except psycopg.Error as exc:
        if current is None or exc.sqlstate is None:
            raise
        return _failure(current, exc)
    return None


def _run_outside_transaction(
    conn: psycopg.Connection[Any], migration: Migration
) -> ReplayFailure | None:
    for statement in _statements(migration):
        try:
            conn.execute(statement.encode("utf-8"))
        except psycopg.Error as exc:
            if exc.sqlstate is None:
                raise
            return _failure((migration, statement), exc)
    return None


def _create_missing_role(conn: psycopg.Connection[Any], failure: ReplayFailure) -> bool:
    """Create the role a statement named if PostgreSQL said it is missing."""
    found = _MISSING_ROLE.search(failure.message)
    if failure.sqlstate != UNDEFINED_OBJECT or found is None:
        return False
    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(found.group(1))))
    return True


def _statements(migration: Migration) -> list[str]:
    return [piece for piece in migration.statements if piece.strip()]


def _failure(current: tuple[Migration, str], exc: psycopg.Error) -> ReplayFailure:
    migration, statement = current
    message = exc.diag.message_primary or str(exc).splitlines()[0]
    return ReplayFailure(migration.tag, statement.strip(), message, exc.sqlstate)
