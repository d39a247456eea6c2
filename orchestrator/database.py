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
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

from orchestrator.allocation import cyclic_gc_paused
from orchestrator.db import runlock
from orchestrator.db.catalog import CatalogSnapshot, read_snapshot
from orchestrator.db.connect import check_url, connect
from orchestrator.db.migrator import (
    AppliedMigration,
    MigrateOptions,
    MigrationFailed,
    apply_pending,
)
from orchestrator.db.retry import OnRetry, RetryPolicy, call_with_retry
from orchestrator.drizzle.journal import Journal, Migration
from orchestrator.drizzle.objects import ObjectModel, journal_model
from orchestrator.errors import DatabaseError, PartialStateError, UsageError
from orchestrator.validation import ValidationReport, Verdict, error_report, validate
from orchestrator.validation.matching import out_of_order_differences

DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class MigrateResult:
    """What ``migrate`` did: the state before, what it applied, the state after."""

    before: ValidationReport
    applied: tuple[AppliedMigration, ...]
    after: ValidationReport


def take_snapshot(url: str, options: MigrateOptions) -> CatalogSnapshot:
    """Connect, read one catalog snapshot, disconnect."""
    with connect(url) as conn:
        return read_snapshot(conn, schema=options.schema, table=options.table)


def validate_database(
    url: str,
    journal: Journal,
    options: MigrateOptions,
    *,
    retry: RetryPolicy = DEFAULT_RETRY,
    on_retry: OnRetry | None = None,
    model: ObjectModel | None = None,
) -> ValidationReport:
    """Read-only: judge the database at ``url`` against ``journal``.

    Bad input raises :class:`UsageError`; an unreachable or unreadable database yields a
    report with verdict ERROR rather than an exception, since "cannot tell" is a verdict.
    ``model`` is the journal's object model when the caller already built it (it is the
    costly part for a large folder, and does not depend on the database).
    """
    check_url(url)
    # The catalog round trip (network and server time) overlaps parsing the SQL (local CPU).
    with (
        cyclic_gc_paused(),
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot") as pool,
    ):
        reading = pool.submit(
            call_with_retry, lambda: take_snapshot(url, options), retry, on_retry=on_retry
        )
        if model is None:
            model = journal_model(journal)
        try:
            snapshot = reading.result()
        except DatabaseError as exc:
            return error_report(str(exc))
        return validate(journal, model, snapshot)


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
) -> MigrateResult:
    """Validate, refuse unreconciled states, ask ``confirm``, apply, and validate again.

    A transient failure during the migration transaction is retried only after revalidating:
    if the commit landed before the connection dropped, there is nothing left to do; if the
    state became unreconciled, we stop. The migrator re-reads tracked hashes under an
    advisory lock, so a retry never applies anything twice.

    Unless the caller already holds it (``take_run_lock=False``: a deploy run), the database's
    run lock is taken first, so a migrate never runs beside a deploy (exit 2 at once).
    """
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
        return _migrate(url, journal, options, confirm, retry, on_retry, on_migration)


def _migrate(
    url: str,
    journal: Journal,
    options: MigrateOptions,
    confirm: Callable[[ValidationReport], bool],
    retry: RetryPolicy,
    on_retry: OnRetry | None,
    on_migration: Callable[[Migration], None] | None,
) -> MigrateResult:
    model = journal_model(journal)  # once: every validation below judges the same journal

    def judge() -> ValidationReport:
        return validate_database(url, journal, options, retry=retry, on_retry=on_retry, model=model)

    before = judge()
    _refuse_unmigratable(before)
    if not before.pending:
        return MigrateResult(before, (), before)
    _refuse_reordering(journal, model, before)
    if not confirm(before):
        raise UsageError("migration not confirmed: nothing was changed")

    applied: list[AppliedMigration] = []
    attempts = max(1, retry.attempts)
    for attempt in range(1, attempts + 1):
        try:
            with connect(url) as conn:
                applied = apply_pending(conn, journal, options, on_migration=on_migration)
            break
        except (DatabaseError, MigrationFailed) as exc:
            if not _worth_another_attempt(exc) or attempt == attempts:
                raise
            wait = retry.wait(attempt)
            if on_retry is not None:
                on_retry(attempt, exc, wait)
            _sleep(wait)
            now = judge()
            _refuse_unmigratable(now)
            if not now.pending:
                # The commit reached the server before the connection was lost.
                applied = [AppliedMigration(m.tag, m.hash, m.when) for m in before.pending]
                break

    after = judge()
    return MigrateResult(before, tuple(applied), after)


def _refuse_unmigratable(report: ValidationReport) -> None:
    if report.status is Verdict.ERROR:
        errors = [f.message for f in report.findings if f.severity == "error"]
        raise DatabaseError(errors[0] if errors else "cannot tell the migration state")
    if report.unreconciled:
        states = "; ".join(f"{m.tag} is {m.state.value}" for m in report.unreconciled)
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
