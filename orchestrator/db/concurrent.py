"""Applying a release that holds non-transactional migrations (``--allow-concurrent``).

The rule, in journal order:

1. the transactional migrations before a non-transactional one are applied and committed in
   one transaction, with drizzle's tracking rows, exactly as :func:`apply_pending` does;
2. the non-transactional migration then runs **all** its statements one by one in autocommit,
   in order (``CREATE INDEX CONCURRENTLY`` cannot share a transaction, and ``ADD VALUE`` must
   commit before its value is used), each retried on a lock timeout like the transaction
   is, under the migrator's advisory lock (a session lock here);
3. its tracking row is written only when every statement succeeded; then on to step 1.

A failure in step 2 leaves the statements before it applied and no tracking row; an
``INVALID`` index the failure left behind is dropped (``DROP INDEX CONCURRENTLY``) and
reported. A rerun resumes: before each statement the catalog is checked, and an index
already built and valid (or already dropped), or an enum value already there, is skipped;
an ``INVALID`` index from an interrupted build is dropped and built again. Other statements
run as written, so they should carry ``IF NOT EXISTS`` / ``IF EXISTS``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg import sql

from orchestrator.analysis.changes import Change, StatementEffects
from orchestrator.analysis.effects import analyse_migrations
from orchestrator.analysis.nontransactional import (
    NonTransactional,
    catalog_checked,
    enum_value_of,
    probe_sql,
)
from orchestrator.db.blockers import Blocker, find_blockers, statement_locks
from orchestrator.db.connect import database_error, describe, milliseconds
from orchestrator.db.lock_retry import LOCK_NOT_AVAILABLE, LockRetry, OnLockRetry, lock_retry_policy
from orchestrator.db.migrator import (
    MIGRATION_LOCK_SQL,
    AppliedMigration,
    MigrateOptions,
    MigrationFailed,
    Rehearsal,
    apply_pending,
    create_tracking_sql,
    excerpt,
    rehearse_pending,
    tracked_now,
    tracking_row_sql,
)
from orchestrator.db.retry import is_transient
from orchestrator.drizzle.journal import Journal, Migration
from orchestrator.errors import DatabaseError

OnNote = Callable[[str], None]

_INDEX_SQL = """
SELECT i.indisvalid FROM pg_index i
  JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %s AND c.relname = %s
"""
_ENUM_VALUE_SQL = """
SELECT 1 FROM pg_enum e
  JOIN pg_type t ON t.oid = e.enumtypid JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE n.nspname = %s AND t.typname = %s AND e.enumlabel = %s
"""
# Indexes a failed REINDEX CONCURRENTLY leaves: <name>_ccnew[N], INVALID.
_CCNEW_SQL = """
SELECT n.nspname, c.relname FROM pg_index i
  JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE NOT i.indisvalid AND c.relname ~ '_ccnew[0-9]*$'
"""


def apply_release(
    conn: psycopg.Connection[Any],
    journal: Journal,
    options: MigrateOptions,
    nontransactional: Sequence[NonTransactional],
    *,
    on_migration: Callable[[Migration], None] | None = None,
    on_lock_retry: OnLockRetry | None = None,
    on_note: OnNote | None = None,
) -> list[AppliedMigration]:
    """Apply every pending migration of ``journal``: transactional runs in one transaction
    each, the migrations named in ``nontransactional`` statement by statement (see the
    module's rule). With none named, exactly :func:`apply_pending`."""
    tags = {n.tag for n in nontransactional}
    special = frozenset(m.hash for m in journal.migrations if m.tag in tags)
    applied: list[AppliedMigration] = []
    while True:
        applied += apply_pending(
            conn, journal, options, on_migration=on_migration, stop_before=special
        )
        if not special:
            return applied
        try:
            upcoming = journal.untracked(tracked_now(conn, options))
            conn.commit()
        except psycopg.Error as exc:
            conn.rollback()
            raise database_error("cannot read the tracking table", exc) from exc
        if not upcoming:
            return applied
        migration = upcoming[0]  # apply_pending stopped before it: non-transactional
        if on_migration is not None:
            on_migration(migration)
        done = apply_outside_transaction(
            conn, journal, migration, options, on_lock_retry=on_lock_retry, on_note=on_note
        )
        if done is not None:
            applied.append(done)


def apply_outside_transaction(
    conn: psycopg.Connection[Any],
    journal: Journal,
    migration: Migration,
    options: MigrateOptions,
    *,
    on_lock_retry: OnLockRetry | None = None,
    on_note: OnNote | None = None,
) -> AppliedMigration | None:
    """Run ``migration``'s statements one by one in autocommit, then write its tracking row.

    Returns None when another migrator tracked it meanwhile. Raises :class:`MigrationFailed`
    (the statements before the failing one stay applied; no tracking row) or
    :class:`DatabaseError` for a lost connection.
    """
    statements = analyse_migrations([(migration.tag, migration.statements)]).by_tag(migration.tag)
    conn.autocommit = True
    key = f"{options.schema}.{options.table}"
    try:
        conn.execute(
            sql.SQL("SET lock_timeout = {}; SET statement_timeout = {}").format(
                sql.Literal(milliseconds(options.lock_timeout)),
                sql.Literal(milliseconds(options.statement_timeout)),
            )
        )
        conn.execute(MIGRATION_LOCK_SQL.replace("xact_lock", "lock"), (key,))
        for ddl in create_tracking_sql(options.schema, options.table):
            conn.execute(ddl)
        # Counted: an earlier entry of the same text has a row that is not this one's.
        if migration not in journal.untracked(tracked_now(conn, options)):
            return None
        note = on_note or (lambda _line: None)
        for statement in statements.statements:
            _run_statement(conn, migration, statement, options, on_lock_retry, note)
        conn.execute(tracking_row_sql(options, migration.hash, migration.when))
        return AppliedMigration(migration.tag, migration.hash, migration.when)
    except psycopg.Error as exc:
        if is_transient(exc):
            raise DatabaseError(
                f"connection lost while applying {migration.tag} outside a transaction: "
                f"{describe(exc)}; rerun migrate --allow-concurrent to resume it",
                transient=True,
            ) from exc
        raise MigrationFailed(
            migration.tag, f"{migration.tag}: {describe(exc)}", sqlstate=exc.sqlstate
        ) from exc
    finally:
        if not conn.closed:
            try:
                conn.execute(MIGRATION_LOCK_SQL.replace("xact_lock", "unlock"), (key,))
                conn.execute("RESET lock_timeout; RESET statement_timeout")
            except psycopg.Error:
                pass  # the session ends with the connection, and its lock with it
            conn.autocommit = False


def _run_statement(
    conn: psycopg.Connection[Any],
    migration: Migration,
    statement: StatementEffects,
    options: MigrateOptions,
    on_lock_retry: OnLockRetry | None,
    on_note: OnNote,
) -> None:
    """One statement in autocommit: skipped when the catalog already has its effect,
    retried on lock timeouts, cleaned up (INVALID index) when it fails."""
    where = f"{migration.tag}, statement {statement.number} ({excerpt(statement.sql)})"
    if _already_done(conn, statement, on_note, where):
        return
    policy = lock_retry_policy(options.lock_retries)
    attempts = max(1, policy.attempts)
    for attempt in range(1, attempts + 1):
        try:
            conn.execute(statement.sql.encode("utf-8"))
            return
        except psycopg.Error as exc:
            if is_transient(exc):
                raise
            dropped = _drop_invalid_left_by(conn, statement)
            for name in dropped:
                on_note(f"dropped INVALID index {name} left by the failed statement ({where})")
            left = f"; dropped the INVALID index {', '.join(dropped)} it left" if dropped else ""
            blockers: tuple[Blocker, ...] = ()
            if exc.sqlstate == LOCK_NOT_AVAILABLE:
                blockers = find_blockers(conn, *statement_locks(statement.sql))
                if attempt < attempts:
                    wait = policy.wait(attempt)
                    if on_lock_retry is not None:
                        on_lock_retry(LockRetry(attempt, attempts, wait, where, blockers))
                    time.sleep(wait)
                    continue
                who = "; ".join(b.describe() for b in blockers[:3])
                why = f"lock timeout after {attempts} attempt(s)" + (
                    f"; blocked by {who}" if who else ""
                )
            else:
                why = describe(exc) + (f" [{exc.sqlstate}]" if exc.sqlstate else "")
            raise MigrationFailed(
                migration.tag,
                f"migration failed in {where}: {why}{left}; {_committed(statement)}",
                sqlstate=exc.sqlstate,
                statement=statement.number,
                blockers=blockers,
                where=where,
            ) from exc


def _committed(statement: StatementEffects) -> str:
    before = statement.number - 1
    done = f"statements 1-{before} stay applied" if before else "no statement was applied"
    return (
        f"ran outside a transaction: {done}, the tracking row was not written; rerun "
        "migrate --allow-concurrent to resume"
    )


def _name(change: Change) -> tuple[str, str] | None:
    """``(schema, name)`` of an index change's target ``index schema.name``."""
    parts = change.target.split(" ", 1)[-1].split(".", 1)
    return (parts[0], parts[1]) if len(parts) == 2 else None


def _already_done(
    conn: psycopg.Connection[Any], statement: StatementEffects, on_note: OnNote, where: str
) -> bool:
    """Whether the catalog already holds the statement's effect (a rerun after a crash).

    An INVALID index of the statement's name (an interrupted build) is dropped first.
    """
    if not catalog_checked(statement):
        return False
    change = statement.changes[0]
    kind = change.effective_kind
    if kind in ("create_index", "drop_index") and (name := _name(change)) is not None:
        row = conn.execute(_INDEX_SQL, name).fetchone()
        if kind == "drop_index":
            return row is None
        if row is None:
            return False
        if row[0]:
            on_note(f"skipped {where}: index {'.'.join(name)} already exists and is valid")
            return True
        _drop_index(conn, *name)
        on_note(f"dropped INVALID index {'.'.join(name)} of an interrupted build ({where})")
        return False
    if enum_value_of(change) is not None:  # target: enum_value <schema>.<enum>.<label>
        schema, enum, label = change.target.split(" ", 1)[-1].split(".", 2)
        if conn.execute(_ENUM_VALUE_SQL, (schema, enum, label)).fetchone() is not None:
            on_note(f"skipped {where}: enum value {label!r} already exists")
            return True
    return False


def _drop_invalid_left_by(conn: psycopg.Connection[Any], statement: StatementEffects) -> list[str]:
    """Drop the INVALID index a failed CREATE INDEX / REINDEX CONCURRENTLY left; their names."""
    dropped: list[str] = []
    for change in statement.changes:
        kind = change.effective_kind
        try:
            if kind == "create_index" and (name := _name(change)) is not None:
                if (row := conn.execute(_INDEX_SQL, name).fetchone()) is not None and not row[0]:
                    _drop_index(conn, *name)
                    dropped.append(".".join(name))
            elif kind == "reindex" and change.concurrently:
                for schema, index in conn.execute(_CCNEW_SQL).fetchall():
                    _drop_index(conn, schema, index)
                    dropped.append(f"{schema}.{index}")
        except psycopg.Error:
            pass  # best effort: the error being reported matters more
    return dropped


def _drop_index(conn: psycopg.Connection[Any], schema: str, name: str) -> None:
    conn.execute(
        sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}.{}").format(
            sql.Identifier(schema), sql.Identifier(name)
        )
    )


@dataclass(frozen=True)
class Probe:
    """One statement of a non-transactional migration, checked in a rehearsal without
    running it: what was asked of the catalog and what it answered."""

    found: NonTransactional
    ok: bool
    detail: str


@dataclass(frozen=True)
class ReleaseRehearsal:
    """A release rehearsed inside a rolled-back transaction, its non-transactional
    migrations left out (``skipped``: never run on the database) and probed instead."""

    rehearsal: Rehearsal
    journal: Journal  # the journal without the skipped migrations: what was rehearsed
    skipped: tuple[Migration, ...]
    probes: tuple[Probe, ...]

    @property
    def failed_probe(self) -> Probe | None:
        """The first statement whose names did not resolve: the deploy would fail there."""
        return next((p for p in self.probes if not p.ok), None)

    def lines(self) -> list[str]:
        """For the plan: each migration left out, why, and what was checked instead."""
        lines: list[str] = []
        for migration in self.skipped:
            lines.append(
                f"{migration.tag} NOT rehearsed on production: it runs outside a transaction "
                "(migrations.concurrent), and building an index inside the rehearsal "
                "transaction would block the table's writes for the whole build; the deploy "
                "runs it statement by statement, its tracking row last"
            )
            lines += [
                f"  {p.found.location}: {p.found.reason}: checked without running it: {p.detail}"
                for p in self.probes
                if p.found.tag == migration.tag
            ]
        return lines

    def caveat(self) -> str | None:
        """The prediction's caveat (None when nothing was left out)."""
        if not self.skipped:
            return None
        tags = ", ".join(m.tag for m in self.skipped)
        return (
            f"{tags} was not run by this rehearsal (non-transactional); success is predicted "
            "from its statements' names resolving, not from a build: data-dependent failures "
            "(a unique index over duplicates, a build past statement_timeout) show only when "
            "it runs; --rehearse-on local or a staging copy runs it for real"
        )


def rehearse_release(
    conn: psycopg.Connection[Any],
    journal: Journal,
    options: MigrateOptions,
    nontransactional: Sequence[NonTransactional],
    *,
    inspect: Callable[[psycopg.Connection[Any]], Any] | None = None,
) -> ReleaseRehearsal:
    """:func:`rehearse_pending` for a release holding non-transactional migrations.

    They are not run at all: ``CREATE INDEX CONCURRENTLY`` cannot run in the rehearsal's
    transaction, and the same statement without CONCURRENTLY would block the table's writes
    while it builds. The other migrations are applied in journal order and rolled back, as
    always. Each non-transactional statement is probed instead, at its place in the order
    (just before the next rehearsed migration): a read-only query resolves the table,
    columns, expressions or type it names (:func:`probe_sql`), in a savepoint.
    """
    tags = {n.tag for n in nontransactional}
    skipped = tuple(m for m in journal.migrations if m.tag in tags)
    rehearsed = replace(
        journal, migrations=tuple(m for m in journal.migrations if m.tag not in tags)
    )
    order = {m.tag: index for index, m in enumerate(journal.migrations)}
    waiting = list(nontransactional)
    probes: list[Probe] = []

    def probe_before(position: int) -> None:
        while waiting and order[waiting[0].tag] < position:
            probes.append(_probe(conn, waiting.pop(0)))

    def before_each(migration: Migration) -> None:
        probe_before(order[migration.tag])

    def at_the_end(c: psycopg.Connection[Any]) -> Any:
        probe_before(len(order))
        return inspect(c) if inspect is not None else None

    result = rehearse_pending(
        conn, rehearsed, options, on_migration=before_each, inspect=at_the_end
    )
    return ReleaseRehearsal(result, rehearsed, skipped, tuple(probes))


def _probe(conn: psycopg.Connection[Any], found: NonTransactional) -> Probe:
    query = probe_sql(found.sql)
    if query is None:
        return Probe(found, True, "nothing to resolve without running it")
    try:
        with conn.transaction():  # a savepoint: a failed probe leaves the rehearsal intact
            conn.execute(query.encode("utf-8"))
    except psycopg.Error as exc:
        if is_transient(exc):
            raise DatabaseError(
                f"connection lost while probing {found.location}: {describe(exc)}", transient=True
            ) from exc
        return Probe(found, False, describe(exc))
    return Probe(found, True, "what it names resolves on the rehearsed schema")
