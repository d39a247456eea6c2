"""Apply pending migrations exactly as drizzle-orm's migrator does, minus its blind spot.

Same SQL, same tracking rows: the schema and table are created with drizzle's own DDL, each
file's pieces (split on ``--> statement-breakpoint``) run in journal order, and each is
followed by ``insert into ... ("hash", "created_at") values ($1, $2)`` with drizzle's hash
and the journal's ``when``. So ``drizzle-kit migrate`` afterwards finds nothing to do.

Where we differ, on purpose:
- a migration is pending when its *hash* is not tracked. drizzle instead applies only
  entries whose ``when`` is newer than the newest tracked ``created_at``, silently skipping
  an older pending one (the out-of-order journal);
- everything, including creating the tracking table, is one transaction, so a failure
  leaves no trace at all (drizzle creates the schema and table outside its transaction);
- ``lock_timeout`` and ``statement_timeout`` bound the transaction, so a migration never
  queues behind production traffic indefinitely;
- a transaction-scoped advisory lock keeps two migrators from interleaving, and the
  tracked hashes are re-read under that lock, so nothing is ever applied twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from orchestrator.catalog import CatalogSnapshot
from orchestrator.db.backoff import (
    DEFAULT_LOCK_RETRIES,
    DEFAULT_LOCK_TIMEOUT_S,
    READ_LOCK_TIMEOUT_S,
)
from orchestrator.db.blockers import (
    Blocker,
    LockWatch,
    describe_all,
    find_blockers,
    relations_in,
    statement_locks,
)
from orchestrator.db.catalog_reader import read_catalog
from orchestrator.db.connect import describe, milliseconds
from orchestrator.db.lock_retry import LOCK_NOT_AVAILABLE
from orchestrator.db.retry import is_transient
from orchestrator.drizzle.journal import Journal, Migration
from orchestrator.errors import DatabaseError, ExitCode, OrchestratorError

# The advisory lock key: one per tracking table, shared by every orchestrator process.
MIGRATION_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('orchestrator.migrate:' || %s))"


@dataclass(frozen=True)
class MigrateOptions:
    """Where drizzle tracks migrations, the timeouts of the migration transaction, and how
    long a read of the catalog outside it waits for a table lock."""

    schema: str = "drizzle"
    table: str = "__drizzle_migrations"
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S  # seconds
    statement_timeout: float = 300.0  # seconds
    # Re-run the whole migration after a lock timeout this many times (0: give up at once).
    lock_retries: int = DEFAULT_LOCK_RETRIES
    # Run migrations with CONCURRENTLY (or ADD VALUE used later) outside a transaction.
    allow_concurrent: bool = False
    read_lock_timeout: float = READ_LOCK_TIMEOUT_S  # seconds


@dataclass(frozen=True)
class AppliedMigration:
    """One migration our transaction applied."""

    tag: str
    hash: str
    created_at: int


class MigrationFailed(OrchestratorError):
    """A migration's SQL failed (or hit a timeout); rolled back, nothing changed.

    The database answered, so this is not ERROR (unreachable); the run stops like any
    other failed check (exit 21).
    """

    exit_code = ExitCode.GUARD_FAILED

    def __init__(
        self,
        tag: str | None,
        message: str,
        *,
        sqlstate: str | None,
        statement: int | None = None,
        blockers: tuple[Blocker, ...] = (),
        where: str = "",
    ) -> None:
        super().__init__(message)
        self.tag = tag
        self.sqlstate = sqlstate
        self.statement = statement  # 1-based index of the failing statement in ``tag``
        self.blockers = blockers  # on a lock timeout: who held the conflicting locks
        self.where = where  # "<tag>, statement <n> (<excerpt>)", or ""


def create_tracking_sql(schema: str, table: str) -> list[sql.Composed]:
    """drizzle-orm's DDL for the tracking schema and table, verbatim."""
    return [
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.{} (\n"
            "\t\t\tid SERIAL PRIMARY KEY,\n"
            "\t\t\thash text NOT NULL,\n"
            "\t\t\tcreated_at bigint\n"
            "\t\t)"
        ).format(sql.Identifier(schema), sql.Identifier(table)),
    ]


def tracking_row_sql(options: MigrateOptions, hash: str, created_at: int) -> sql.Composed:
    """drizzle-orm's statement recording a migration as applied, verbatim."""
    return sql.SQL('insert into {} ("hash", "created_at") values ({}, {})').format(
        sql.Identifier(options.schema, options.table), sql.Literal(hash), sql.Literal(created_at)
    )


def begin_tracking_transaction(
    conn: psycopg.Connection[Any], options: MigrateOptions, *, renumber: bool = True
) -> None:
    """In the caller's open transaction: set its timeouts, take the migrator's advisory lock
    and create drizzle's tracking table if missing, in one message.

    Everything that writes tracking rows (migrate, its rehearsal, repair) starts this way, so
    they all wait for one another and never queue behind traffic for longer than allowed.
    ``renumber``: the next id follows the last row again where a rolled-back attempt (a lock
    timeout) drew ids that nextval does not give back: drizzle numbers its rows 1..n.
    """
    table = sql.Identifier(options.schema, options.table)
    renumbering = sql.SQL(
        "SELECT setval(seq, last + 1, false) FROM (SELECT pg_get_serial_sequence({}, 'id') "
        "AS seq, coalesce(max(id), 0) AS last FROM {}) AS t "
        "WHERE pg_sequence_last_value(seq::regclass) > last"
    ).format(sql.Literal(table.as_string(conn)), table)
    setup = [
        sql.SQL("SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {}").format(
            sql.Literal(milliseconds(options.lock_timeout)),
            sql.Literal(milliseconds(options.statement_timeout)),
        ),
        sql.SQL(MIGRATION_LOCK_SQL.replace("%s", "{}")).format(
            sql.Literal(f"{options.schema}.{options.table}")
        ),
        *create_tracking_sql(options.schema, options.table),
        *([renumbering] if renumber else []),
    ]
    conn.execute(sql.SQL(";\n").join(setup).as_bytes(conn))


def tracked_now(conn: psycopg.Connection[Any], options: MigrateOptions) -> tuple[str, ...]:
    """The hash of each row of the tracking table (which exists), read on ``conn``."""
    query = sql.SQL("SELECT hash FROM {}").format(sql.Identifier(options.schema, options.table))
    return tuple(str(row[0]) for row in conn.execute(query).fetchall())


def apply_pending(
    conn: psycopg.Connection[Any],
    journal: Journal,
    options: MigrateOptions,
    *,
    on_migration: Callable[[Migration], None] | None = None,
    stop_before: frozenset[str] = frozenset(),
) -> list[AppliedMigration]:
    """Apply every untracked migration of ``journal`` in one transaction.

    ``stop_before`` holds hashes of migrations that must not run in the transaction: it
    ends (and commits) just before the first pending one of them.

    Returns what was applied (empty when nothing was pending). A failing statement rolls
    everything back and raises :class:`MigrationFailed` (or :class:`DatabaseError` when the
    connection itself failed, with ``transient`` set).

    Each migration goes to the server as one message (its statements and its tracking row),
    so a release costs one round trip per migration rather than one per statement. When one
    fails, the server does not say which of its statements did. After a lock timeout the
    lock watch (:class:`orchestrator.db.blockers.LockWatch`) saw which table the backend
    waited for, which names the statement; after any other failure the release is replayed
    statement by statement in a transaction that is rolled back, to name it.
    """
    try:
        with (
            LockWatch(conn, watch_interval(options.lock_timeout)) as watch,
            _translated_errors(conn, watch) as where,
            conn.transaction(),
        ):
            return _apply(
                conn, journal, options, on_migration, where, rehearsal=False, stop=stop_before
            )
    except MigrationFailed as exc:
        # A lock timeout is never replayed: the replay would queue for the same lock and
        # stall the table's traffic a second time. The watch named its statement if it could.
        if exc.tag is None or exc.statement is not None or exc.sqlstate == LOCK_NOT_AVAILABLE:
            raise
        raise _locate(conn, journal, options, exc) from exc


def watch_interval(lock_timeout: float) -> float:
    """How often the lock watch looks (seconds): several times within one lock_timeout."""
    return max(0.02, min(0.1, lock_timeout / 5))


def _locate(
    conn: psycopg.Connection[Any], journal: Journal, options: MigrateOptions, exc: MigrationFailed
) -> MigrationFailed:
    """The same failure, naming its statement, found by a rolled-back replay (best effort).

    Only for failures other than a lock timeout (a syntax error, a constraint violated by
    the data): the replay takes the same locks again, each bounded by ``lock_timeout``."""
    try:
        rehearse_pending(conn, journal, options)
    except MigrationFailed as located:
        if located.tag == exc.tag and located.statement is not None:
            return located
    except DatabaseError:
        pass
    return exc


@dataclass(frozen=True)
class Rehearsal:
    """What applying the pending migrations did inside a transaction that was rolled back."""

    applied: tuple[AppliedMigration, ...]
    snapshot_after: CatalogSnapshot  # the catalog as the migrations left it, before rollback
    inspected: Any = None  # what the caller's ``inspect`` returned, inside the transaction


def rehearse_pending(
    conn: psycopg.Connection[Any],
    journal: Journal,
    options: MigrateOptions,
    *,
    on_migration: Callable[[Migration], None] | None = None,
    inspect: Callable[[psycopg.Connection[Any]], Any] | None = None,
) -> Rehearsal:
    """Apply the pending migrations exactly as :func:`apply_pending`, then roll back.

    Proves the SQL applies to the real schema, with the same timeouts and locks. Before the
    rollback the catalog is read inside the same transaction, so the caller can revalidate
    the result, and ``inspect`` (if given) runs there too, e.g. to try queries against the
    new schema. Tracking rows are inserted with explicit ids so that the rollback leaves the
    tracking table's id sequence untouched. Failures raise like :func:`apply_pending`.
    """
    with (
        LockWatch(conn, watch_interval(options.lock_timeout)) as watch,
        _translated_errors(conn, watch) as where,
        conn.transaction(),
    ):
        applied = _apply(conn, journal, options, on_migration, where, rehearsal=True)
        snapshot = read_catalog(conn, schema=options.schema, table=options.table)
        inspected = inspect(conn) if inspect is not None else None
        raise psycopg.Rollback()  # leaves the block quietly, after rolling back
    return Rehearsal(tuple(applied), snapshot, inspected)


@dataclass
class _Position:
    """The migration and statement being executed, for error messages."""

    migration: Migration | None = None
    statement: int = 0  # 1-based index among the migration's non-empty statements
    text: str = ""


def _apply(
    conn: psycopg.Connection[Any],
    journal: Journal,
    options: MigrateOptions,
    on_migration: Callable[[Migration], None] | None,
    where: _Position,
    *,
    rehearsal: bool,
    stop: frozenset[str] = frozenset(),
) -> list[AppliedMigration]:
    """The body of the migration transaction (the caller opens and ends it)."""
    target = sql.Identifier(options.schema, options.table)
    applied: list[AppliedMigration] = []
    begin_tracking_transaction(conn, options, renumber=not rehearsal)
    for migration in journal.untracked(tracked_now(conn, options)):
        if migration.hash in stop:
            break
        where.migration = migration
        if on_migration is not None:
            on_migration(migration)
        pieces = [piece for piece in migration.statements if piece.strip()]
        if rehearsal:
            # An explicit id: nextval() is not transactional, and a rehearsal leaves no trace.
            numbered_row = sql.SQL(
                'insert into {t} ("id", "hash", "created_at") '
                "values ((select coalesce(max(id), 0) + 1 from {t}), {h}, {c})"
            ).format(t=target, h=sql.Literal(migration.hash), c=sql.Literal(migration.when))
            # One statement per message, so a failure names its statement.
            for number, piece in enumerate(pieces, 1):
                where.statement, where.text = number, piece
                conn.execute(piece.encode("utf-8"))
            where.statement, where.text = 0, ""
            conn.execute(numbered_row)
        else:
            # The simple-query protocol runs several statements from one message, each under
            # its own statement_timeout (PostgreSQL 13+); the newline ends a trailing comment.
            row = tracking_row_sql(options, migration.hash, migration.when).as_bytes(conn)
            conn.execute(b"\n;\n".join([p.encode("utf-8") for p in pieces] + [row]))
        applied.append(AppliedMigration(migration.tag, migration.hash, migration.when))
    where.migration = None
    return applied


@contextmanager
def _translated_errors(conn: psycopg.Connection[Any], watch: LockWatch) -> Iterator[_Position]:
    """psycopg errors of the migration transaction as our typed errors, naming the statement.

    A lock timeout also names the sessions that blocked it: those ``watch`` saw blocking
    the statement's lock wait, else those holding conflicting locks on its tables now.
    """
    where = _Position()
    try:
        yield where
    except psycopg.Error as exc:
        found: tuple[Blocker, ...] = ()
        if exc.sqlstate == LOCK_NOT_AVAILABLE and where.migration is not None:
            found = _lock_timeout_blockers(conn, watch, where)
        current = where.migration
        if current is None:
            at = ""
        elif where.statement:
            at = f" in {current.tag}, statement {where.statement} ({excerpt(where.text)})"
        else:
            at = f" in {current.tag}"
        if is_transient(exc):
            raise DatabaseError(
                f"connection lost during migration{at}: {describe(exc)}; rolled back",
                transient=True,
            ) from exc
        blockers = describe_all(found)
        raise MigrationFailed(
            current.tag if current else None,
            f"migration failed{at}: {describe(exc)}"
            + (f" [{exc.sqlstate}]" if exc.sqlstate else "")
            + (f"; {blockers}" if blockers else "")
            + "; the transaction was rolled back, nothing was applied",
            sqlstate=exc.sqlstate,
            statement=where.statement if current and where.statement else None,
            blockers=found,
            where=at.removeprefix(" in "),
        ) from exc


def _lock_timeout_blockers(
    conn: psycopg.Connection[Any], watch: LockWatch, where: _Position
) -> tuple[Blocker, ...]:
    """Who blocked the statement that hit ``lock_timeout``; names the statement in
    ``where`` when the watch saw which table it waited for (a migration sent as one message
    does not say which of its statements failed)."""
    assert where.migration is not None
    pieces = [piece for piece in where.migration.statements if piece.strip()]
    seen = watch.last
    if seen is not None:
        number = where.statement or statement_waiting(pieces, seen.table)
        if number is not None:
            where.statement, where.text = number, pieces[number - 1]
            return seen.blockers
    if where.text:
        return find_blockers(conn, *statement_locks(where.text))
    # Not seen waiting: the first statement whose tables someone holds in a conflicting mode.
    for number, piece in enumerate(pieces, 1):
        found = find_blockers(conn, *statement_locks(piece))
        if found:
            where.statement, where.text = number, piece
            return found
    return ()


def statement_waiting(pieces: list[str], table: str) -> int | None:
    """The 1-based number of the first of ``pieces`` that locks ``table`` (``schema.name``),
    as the statement analysis or the table names written in it say (best effort)."""
    bare = table.split(".", 1)[-1]
    for number, piece in enumerate(pieces, 1):
        if table in statement_locks(piece)[0]:
            return number
        named = (name.replace('"', "").split(".")[-1] for name in relations_in(piece))
        if bare in named:
            return number
    return None


def excerpt(statement: str, limit: int = 60) -> str:
    """The first ``limit`` characters of a statement on one line."""
    flat = " ".join(statement.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
