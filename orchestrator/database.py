"""Validate and migrate a database: the operations every verb and the deploy engine share.

``validate_database`` reads one catalog snapshot (retrying transient failures) while the
journal's history model is built, and judges it; ``migrate_database`` takes the database's
run lock, validates, refuses unreconciled states and non-commuting reorders, applies the
pending migrations in one transaction exactly as drizzle would, retries what is worth
retrying after validating again, and validates once more. Neither knows the command line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.allocation import cyclic_gc_paused, retain
from orchestrator.db.catalog import CatalogSnapshot
from orchestrator.db.connect import check_url, connect
from orchestrator.db.migrator import AppliedMigration, MigrateOptions, MigrationFailed
from orchestrator.db.reading import CatalogRead
from orchestrator.db.retry import OnRetry, RetryPolicy, call_with_retry
from orchestrator.errors import DatabaseError, PartialStateError, UsageError

# Only what the catalog read needs is imported above: ``validate_database`` starts that read
# first and imports the judgement (the validation package, the history model) while the
# connection and the server work. The rest is imported where it is used.
if TYPE_CHECKING:
    from orchestrator.db.lock_retry import OnLockRetry
    from orchestrator.drizzle.journal import Journal, Migration
    from orchestrator.drizzle.model import ObjectModel
    from orchestrator.validation import ValidationReport

DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class MigrateResult:
    """What ``migrate`` did: the state before, what it applied, the state after."""

    before: ValidationReport
    applied: tuple[AppliedMigration, ...]
    after: ValidationReport


def take_snapshot(url: str, options: MigrateOptions) -> CatalogSnapshot:
    """Connect, read one catalog snapshot, disconnect."""
    from orchestrator.db.catalog_read import read_snapshot

    with connect(url) as conn:
        return read_snapshot(conn, schema=options.schema, table=options.table)


def validate_database(
    url: str,
    journal: Journal | Callable[[], Journal],
    options: MigrateOptions,
    *,
    retry: RetryPolicy = DEFAULT_RETRY,
    on_retry: OnRetry | None = None,
    model: ObjectModel | None = None,
    started: CatalogRead | None = None,
) -> ValidationReport:
    """Read-only: judge the database at ``url`` against ``journal``.

    Bad input raises :class:`UsageError`; an unreachable or unreadable database yields a
    report with verdict ERROR rather than an exception, since "cannot tell" is a verdict.
    ``model`` is the journal's object model when the caller already built it (it is the
    costly part for a large folder, and does not depend on the database).

    ``journal`` may be a function reading it (the CLI's): it is called once the catalog
    read has started, so reading the folder overlaps the connection and the server's work.
    Its errors (a bad folder: UsageError) are raised as they are, without waiting for the
    database, and no retry notice reaches ``on_retry`` before the folder is read.

    ``started``: a catalog read already under way (the command line starts one before it
    parses its arguments); taken only when it reads this URL and tracking table with this
    retry policy, else a read starts here.
    """
    check_url(url)
    # The catalog round trip (network and server time) overlaps parsing the SQL (local CPU).
    with cyclic_gc_paused():
        schema, table = options.schema, options.table
        if started is not None and started.reads(url, schema=schema, table=table, retry=retry):
            reading = started
        else:
            reading = CatalogRead(url, schema=schema, table=table, retry=retry)
        from orchestrator.validation import error_report, validate

        journal, model = _history(journal, model)
        try:
            snapshot = reading.snapshot(on_retry)
        except DatabaseError as exc:
            return error_report(str(exc))
        report = validate(journal, model, snapshot)
        # Freed while the collector is still paused: its first pass after the pause walks
        # every object allocated during it, and the snapshot and the model are most of them.
        # Kept instead when the process ends right after the command (nothing to gain).
        retain(snapshot, model)
        del snapshot, model, reading
    return report


def _history(
    journal: Journal | Callable[[], Journal], model: ObjectModel | None
) -> tuple[Journal, ObjectModel]:
    """The journal (read now if given as a function) and its history model.

    A journal read without the statements' syntax check (the CLI's validate reads it so) is
    checked here, and only for the migrations the model could not parse: the model parsed
    every other statement with the same grammar. A journal already checked passes again.
    """
    from orchestrator.drizzle.journal import check_statements
    from orchestrator.drizzle.model import journal_model

    if callable(journal):
        journal = journal()
    if model is None:
        model = journal_model(journal)
    if model.unparsed:
        check_statements(journal, model.unparsed)
    # What the report needs from the model alone, made now: the catalog read is still
    # waiting for the server (see ObjectModel.effect_names).
    model.effect_names  # noqa: B018
    return journal, model


def migrate_database(
    url: str,
    journal: Journal,
    options: MigrateOptions,
    *,
    confirm: Callable[[ValidationReport], bool],
    retry: RetryPolicy = DEFAULT_RETRY,
    on_retry: OnRetry | None = None,
    on_migration: Callable[[Migration], None] | None = None,
    take_run_lock: bool = True,
    on_lock_retry: OnLockRetry | None = None,
    on_note: Callable[[str], None] | None = None,
) -> MigrateResult:
    """Validate, refuse unreconciled states, ask ``confirm``, apply, and validate again.

    A transient failure during the migration transaction is retried only after revalidating:
    if the commit landed before the connection dropped, there is nothing left to do; if the
    state became unreconciled, we stop. The migrator re-reads tracked hashes under an
    advisory lock, so a retry never applies anything twice.

    Unless the caller already holds it (``take_run_lock=False``: a deploy run), the database's
    run lock is taken first, so a migrate never runs beside a deploy (exit 2 at once).

    A lock timeout (55P03) is retried ``options.lock_retries`` times, with its own backoff
    (:mod:`orchestrator.db.lock_retry`), after validating again; ``on_lock_retry`` hears each
    one, naming the blocking sessions. Migrations that cannot run in a transaction are
    refused (UsageError, nothing changed) unless ``options.allow_concurrent``; then they run
    statement by statement (:mod:`orchestrator.db.concurrent`) and ``on_note`` hears what was
    skipped or cleaned up.
    """
    from orchestrator.db import runlock

    with ExitStack() as stack:
        if take_run_lock:
            lock = runlock.RunLock(
                url,
                schema=options.schema,
                table=options.table,
                owner=runlock.application_name(None, "migrate"),
            )
            # The first connection: a Neon compute may be waking up.
            call_with_retry(lambda: stack.enter_context(lock), retry, on_retry=on_retry)
        hooks = _Hooks(on_retry, on_migration, on_lock_retry, on_note)
        return _migrate(url, journal, options, confirm, retry, hooks)


@dataclass(frozen=True)
class _Hooks:
    """Who hears about what during a migrate."""

    on_retry: OnRetry | None
    on_migration: Callable[[Migration], None] | None
    on_lock_retry: OnLockRetry | None
    on_note: Callable[[str], None] | None


def _migrate(
    url: str,
    journal: Journal,
    options: MigrateOptions,
    confirm: Callable[[ValidationReport], bool],
    retry: RetryPolicy,
    hooks: _Hooks,
) -> MigrateResult:
    # Imported here, not at the top: they load the statement analysis (pglast's node
    # classes), which `validate` never needs, and validate's start-up is measured.
    from orchestrator.analysis.nontransactional import nontransactional_statements, refusal
    from orchestrator.db.concurrent import apply_release
    from orchestrator.db.lock_retry import LockRetry, lock_retry_policy
    from orchestrator.drizzle.model import journal_model
    from orchestrator.validation import MigrationState, Verdict

    model = journal_model(journal)  # once: every validation below judges the same journal
    on_retry = hooks.on_retry

    def judge() -> ValidationReport:
        return validate_database(url, journal, options, retry=retry, on_retry=on_retry, model=model)

    before = judge()
    untracked = [m for m in journal.migrations if m.hash not in before.tracked_hashes]
    nontransactional = (
        nontransactional_statements([(m.tag, m.statements) for m in untracked])
        if before.status is not Verdict.ERROR
        else []
    )
    if nontransactional and not options.allow_concurrent:
        raise UsageError(refusal(nontransactional[0]))
    resumable = frozenset(n.tag for n in nontransactional)
    _refuse_unmigratable(before, resumable)
    todo = [m for m in before.migrations if m.state is MigrationState.PENDING or m.tag in resumable]
    if not todo:
        return MigrateResult(before, (), before)
    _refuse_reordering(journal, model, before)
    if not confirm(before):
        raise UsageError("migration not confirmed: nothing was changed")

    applied: list[AppliedMigration] = []
    attempts = max(1, retry.attempts)
    lock_policy = lock_retry_policy(options.lock_retries)
    failures = lock_timeouts = 0
    while True:
        try:
            with connect(url) as conn:
                applied += apply_release(
                    conn,
                    journal,
                    options,
                    nontransactional,
                    on_migration=hooks.on_migration,
                    on_lock_retry=hooks.on_lock_retry,
                    on_note=hooks.on_note,
                )
            break
        except (DatabaseError, MigrationFailed) as exc:
            if _is_lock_timeout(exc) and lock_timeouts + 1 < lock_policy.attempts:
                assert isinstance(exc, MigrationFailed)
                lock_timeouts += 1
                wait = lock_policy.wait(lock_timeouts)
                if hooks.on_lock_retry is not None:
                    event = LockRetry(
                        lock_timeouts, lock_policy.attempts, wait, exc.where, exc.blockers
                    )
                    hooks.on_lock_retry(event)
            elif _worth_another_attempt(exc) and failures + 1 < attempts:
                failures += 1
                wait = retry.wait(failures)
                if on_retry is not None:
                    on_retry(failures, exc, wait)
            else:
                if _is_lock_timeout(exc) and options.lock_retries:
                    raise _out_of_lock_retries(exc, lock_policy.attempts) from exc
                raise
            _sleep(wait)
            now = judge()
            _refuse_unmigratable(now, resumable)
            if not any(
                m.state is MigrationState.PENDING or m.tag in resumable for m in now.migrations
            ):
                # The commit reached the server before the connection was lost.
                done = {a.hash for a in applied}
                applied += [
                    AppliedMigration(m.tag, m.hash, m.when) for m in todo if m.hash not in done
                ]
                break

    after = judge()
    return MigrateResult(before, tuple(applied), after)


def _is_lock_timeout(exc: Exception) -> bool:
    from orchestrator.db.lock_retry import LOCK_NOT_AVAILABLE

    return isinstance(exc, MigrationFailed) and exc.sqlstate == LOCK_NOT_AVAILABLE


def _out_of_lock_retries(exc: Exception, attempts: int) -> MigrationFailed:
    """The last lock timeout, saying the retries ran out (and who blocked, as it did)."""
    assert isinstance(exc, MigrationFailed)
    return MigrationFailed(
        exc.tag,
        f"gave up after {attempts} attempts, each stopped by a lock timeout: {exc}",
        sqlstate=exc.sqlstate,
        statement=exc.statement,
        blockers=exc.blockers,
        where=exc.where,
    )


def _refuse_unmigratable(report: ValidationReport, resumable: frozenset[str] = frozenset()) -> None:
    """Refuse ERROR and unreconciled states, except a non-transactional migration left
    half-applied (``resumable``, untracked): its rerun skips what is there and converges."""
    from orchestrator.validation import MigrationState, Verdict

    if report.status is Verdict.ERROR:
        errors = [f.message for f in report.findings if f.severity == "error"]
        raise DatabaseError(errors[0] if errors else "cannot tell the migration state")
    blocking = [
        m
        for m in report.unreconciled
        if not (m.tag in resumable and m.state is not MigrationState.TRACKED_MISSING)
    ]
    if blocking:
        states = "; ".join(f"{m.tag} is {m.state.value}" for m in blocking)
        raise PartialStateError(f"refusing to migrate a partial state: {states}")


#: Failures of the migration transaction that say nothing about its SQL: the connection went
#: away, or the server chose this transaction as a deadlock's or serialization's victim.
#: Each is retried only after validating again (the commit may have landed).
RETRIED_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure


def _worth_another_attempt(exc: Exception) -> bool:
    if isinstance(exc, MigrationFailed):
        return exc.sqlstate in RETRIED_SQLSTATES
    return isinstance(exc, DatabaseError) and exc.transient


def _refuse_reordering(journal: Journal, model: ObjectModel, report: ValidationReport) -> None:
    """Refuse to apply a skipped migration last when that builds another schema than drizzle."""
    from orchestrator.validation.matching import out_of_order_differences

    differences = out_of_order_differences(journal, model, report.tracked_hashes)
    if differences:
        shown = "; ".join(str(d) for d in differences[:3])
        raise PartialStateError(
            "refusing to migrate: the pending migrations sit before applied ones, and applying "
            f"them now (after those) builds another schema than the journal's order: {shown}. "
            "Write a new migration that brings the schema where the journal intends instead"
        )


def _sleep(seconds: float) -> None:
    time.sleep(seconds)
