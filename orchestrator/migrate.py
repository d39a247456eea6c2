"""Migrate a database: the operation the ``migrate`` verb and the deploy engine share.

``migrate_database`` takes the database's run lock, validates (:mod:`orchestrator.database`),
refuses ERROR and partial states, asks the shadow whether the pending migrations run in one
transaction, applies them exactly as drizzle would, retries what is worth retrying after
validating again, and validates once more with the same comparison. It does not know the
command line.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from typing import TypeGuard

from orchestrator.analysis.nontransactional import NonTransactional, nontransactional_statements
from orchestrator.analysis.nontransactional import refusal as allow_concurrent_hint
from orchestrator.catalog import History, differences
from orchestrator.database import DEFAULT_RETRY, folder_history, judge_database, replay_start
from orchestrator.db import runlock
from orchestrator.db.concurrent import apply_release
from orchestrator.db.connect import connect
from orchestrator.db.lock_retry import LOCK_NOT_AVAILABLE, LockRetry, OnLockRetry, lock_retry_policy
from orchestrator.db.migrator import AppliedMigration, MigrateOptions, MigrationFailed, excerpt
from orchestrator.db.retry import OnRetry, RetryPolicy, call_with_retry
from orchestrator.drizzle.journal import Journal, Migration
from orchestrator.errors import DatabaseError, PartialStateError, UsageError
from orchestrator.shadow import LOCAL_SHADOW, ShadowSpec, one_transaction_refusal
from orchestrator.validation import MigrationState, ValidationReport, Verdict


@dataclass(frozen=True)
class MigrateResult:
    """What ``migrate`` did: the state before, what it applied, the state after."""

    before: ValidationReport
    applied: tuple[AppliedMigration, ...]
    after: ValidationReport


def migrate_database(
    url: str,
    journal: Journal,
    options: MigrateOptions,
    *,
    confirm: Callable[[ValidationReport], bool],
    shadow: ShadowSpec = LOCAL_SHADOW,
    retry: RetryPolicy = DEFAULT_RETRY,
    on_retry: OnRetry | None = None,
    on_migration: Callable[[Migration], None] | None = None,
    take_run_lock: bool = True,
    on_lock_retry: OnLockRetry | None = None,
    on_note: Callable[[str], None] | None = None,
) -> MigrateResult:
    """Validate, refuse ERROR and partial states, ask ``confirm``, apply, validate again.

    A transient failure during the migration transaction is retried only after revalidating:
    if the commit landed before the connection dropped, there is nothing left to do; if the
    state became partial, we stop. The migrator re-reads tracked hashes under an advisory
    lock, so a retry never applies anything twice.

    Unless the caller already holds it (``take_run_lock=False``: a deploy run), the database's
    run lock is taken first, so a migrate never runs beside a deploy (exit 2 at once).

    A lock timeout (55P03) is retried ``options.lock_retries`` times, with its own backoff
    (:mod:`orchestrator.db.lock_retry`), after validating again; ``on_lock_retry`` hears each
    one, naming the blocking sessions. Whether the pending migrations run in one transaction
    is asked of the shadow (:func:`orchestrator.shadow.one_transaction_refusal`): a refusal
    stops the migrate before anything changes, unless ``options.allow_concurrent`` and the
    refused statements are ones that run outside a transaction
    (:mod:`orchestrator.db.concurrent`); ``on_note`` hears what was skipped or cleaned up.
    """
    with ExitStack() as stack:
        if take_run_lock:
            lock = runlock.run_lock(url, options.schema, options.table, "migrate")
            # The first connection: a Neon compute may be waking up.
            call_with_retry(lambda: stack.enter_context(lock), retry, on_retry=on_retry)
        history: History | None = None
        judging = partial(
            judge_database, url, journal, options, shadow=shadow, retry=retry, on_retry=on_retry
        )

        def judge() -> ValidationReport:  # by the history the first judgement replayed
            nonlocal history
            report, history = judging(history=history)
            return report

        before = judge()
        _, untracked = _split(journal, before)
        nontransactional = outside_transaction(untracked) if options.allow_concurrent else []
        resumable = frozenset(n.tag for n in nontransactional)
        refuse_unmigratable(before, resumable)
        todo = [
            m for m in before.migrations if m.state is MigrationState.PENDING or m.tag in resumable
        ]
        if not todo:
            return MigrateResult(before, (), before)
        _refuse_reordering(journal, options, shadow, before, history)
        refuse_what_postgres_refuses(journal, untracked, shadow, options, history=history)
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
                        on_migration=on_migration,
                        on_lock_retry=on_lock_retry,
                        on_note=on_note,
                    )
                break
            except (DatabaseError, MigrationFailed) as exc:
                if _is_lock_timeout(exc) and lock_timeouts + 1 < lock_policy.attempts:
                    lock_timeouts += 1
                    wait = lock_policy.wait(lock_timeouts)
                    if on_lock_retry is not None:
                        event = LockRetry(
                            lock_timeouts, lock_policy.attempts, wait, exc.where, exc.blockers
                        )
                        on_lock_retry(event)
                elif _worth_another_attempt(exc) and failures + 1 < attempts:
                    failures += 1
                    wait = retry.wait(failures)
                    if on_retry is not None:
                        on_retry(failures, exc, wait)
                else:
                    if _is_lock_timeout(exc) and options.lock_retries:
                        raise _out_of_lock_retries(exc, lock_policy.attempts) from exc
                    raise
                time.sleep(wait)
                now = judge()
                refuse_unmigratable(now, resumable)
                if not any(
                    m.state is MigrationState.PENDING or m.tag in resumable for m in now.migrations
                ):
                    # The commit reached the server before the connection was lost.
                    done_hashes = {a.hash for a in applied}
                    applied += [
                        AppliedMigration(m.tag, m.hash, m.when)
                        for m in todo
                        if m.hash not in done_hashes
                    ]
                    break

        after = judge()
        return MigrateResult(before, tuple(applied), after)


#: What PostgreSQL refuses in a transaction that ``--allow-concurrent`` runs outside one.
TRANSACTION_LIMITS = frozenset({"25001", "55P04"})  # active_sql_transaction, unsafe new value


def refuse_what_postgres_refuses(
    journal: Journal,
    untracked: list[Migration],
    shadow: ShadowSpec,
    options: MigrateOptions,
    *,
    history: History | None = None,
) -> None:
    """Run the untracked migrations on the shadow as migrate runs them (one transaction, after
    the tracking table and the tracked ones) and stop before production if PostgreSQL refuses:
    a transaction's limits are a usage matter (exit 2: ``--allow-concurrent``); anything else
    is the migration failing (exit 21), caught before it touched anything. With
    ``options.allow_concurrent`` and statements to run outside a transaction, the replay of
    ``history`` ran them as migrate will: its refusal is the answer. The deploy's migrate step
    and its rehearsal say the same words. ``history``'s server also finds the answer cached."""
    outside = outside_transaction(untracked)
    pending = {m.tag for m in untracked}
    if outside and options.allow_concurrent:
        failure = history.failure if history is not None else None
        refusal = failure if failure is not None and failure.tag in pending else None
    else:
        done = [m for m in journal.migrations if m.tag not in pending]
        major, seeded = (None, ()) if history is None else (history.server_major, history.seeded)
        ask = partial(one_transaction_refusal, major=major, seeded=seeded)
        refusal = ask(done, untracked, shadow, start=replay_start(options))
    if refusal is None:
        return
    said = f"{refusal.message} [{refusal.sqlstate}]"
    if refusal.sqlstate in TRANSACTION_LIMITS and outside:
        raise UsageError(f"{allow_concurrent_hint(outside[0])} (PostgreSQL: {said})")
    where = f"{refusal.tag}, statement {refusal.number}" if refusal.number else refusal.tag
    raise MigrationFailed(
        refusal.tag,
        f"migration would fail in {where} ({excerpt(refusal.statement)}): {said}, as "
        "PostgreSQL said when the release ran on the shadow; nothing was changed",
        sqlstate=refusal.sqlstate,
        statement=refusal.number or None,
        where=where,
    )


def outside_transaction(untracked: list[Migration]) -> list[NonTransactional]:
    """The statements of ``untracked`` that ``--allow-concurrent`` runs outside a transaction."""
    return nontransactional_statements([(m.tag, m.statements) for m in untracked])


def _is_lock_timeout(exc: Exception) -> TypeGuard[MigrationFailed]:
    return isinstance(exc, MigrationFailed) and exc.sqlstate == LOCK_NOT_AVAILABLE


def _out_of_lock_retries(exc: MigrationFailed, attempts: int) -> MigrationFailed:
    """The last lock timeout, saying the retries ran out (and who blocked, as it did)."""
    return MigrationFailed(
        exc.tag,
        f"gave up after {attempts} attempts, each stopped by a lock timeout: {exc}",
        sqlstate=exc.sqlstate,
        statement=exc.statement,
        blockers=exc.blockers,
        where=exc.where,
    )


def refuse_unmigratable(report: ValidationReport, resumable: frozenset[str]) -> None:
    """Refuse ERROR and partial states before anything changes.

    The one partial state let through: a non-transactional migration left half-applied
    (``resumable``, untracked), whose rerun skips what is there and converges; then every
    difference must be among the objects those migrations change.
    """
    report.refuse_unjudged()
    if report.status is not Verdict.PARTIAL_MIGRATION:
        return
    unreconciled = [
        m
        for m in report.unreconciled
        if not (m.tag in resumable and m.state is not MigrationState.TRACKED_MISSING)
    ]
    problems = [f"{m.tag} is {m.state.value}" for m in unreconciled]
    explained = {k for m in report.migrations if m.tag in resumable for k in m.expected_objects}
    drifted = not set(report.drifted) <= explained
    problems += [
        f.message
        for f in report.findings
        if f.code == "edited_migration" or (drifted and f.code == "schema_drift")
    ]
    if any(m.state is MigrationState.UNTRACKED_PRESENT for m in unreconciled):
        problems.append("`orchestrator repair` tracks what ran by hand, if exactly that ran")
    if problems:
        raise PartialStateError(
            "refusing to migrate a partial state (nothing was changed): " + "; ".join(problems)
        )


#: Failures of the migration transaction that say nothing about its SQL: the connection went
#: away, or the server chose this transaction as a deadlock's or serialization's victim.
#: Each is retried only after validating again (the commit may have landed).
RETRIED_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure


def _split(journal: Journal, report: ValidationReport) -> tuple[list[Migration], list[Migration]]:
    """The journal's migrations with and without their tracking row, as ``report`` says."""
    tracked = {s.tag for s in report.migrations if s.tracked}
    done = [m for m in journal.migrations if m.tag in tracked]
    return done, [m for m in journal.migrations if m.tag not in tracked]


def _worth_another_attempt(exc: Exception) -> bool:
    if isinstance(exc, MigrationFailed):
        return exc.sqlstate in RETRIED_SQLSTATES
    return isinstance(exc, DatabaseError) and exc.transient


def _refuse_reordering(
    journal: Journal,
    options: MigrateOptions,
    shadow: ShadowSpec,
    report: ValidationReport,
    history: History | None,
) -> None:
    """Refuse to apply a skipped migration last when that builds another schema than the
    journal's order: both orders are replayed on the shadow (with the extensions ``history``
    took from production) and their catalogs compared."""
    done, todo = _split(journal, report)
    order = journal.migrations.index
    if not todo or not done or order(todo[0]) > order(done[-1]):
        return  # no hole: the order is the journal's
    replay = partial(folder_history, extensions=dict(history.seeded) if history else None)
    intended = replay(journal, options, shadow)
    actual = replay(dataclasses.replace(journal, migrations=tuple(done + todo)), options, shadow)
    want, have = intended.state_after(len(journal.migrations)), actual.state_after(len(todo + done))
    if found := differences(want, have, want.keys() | have.keys()):
        shown = "; ".join(str(d) for d in found[:3])
        raise PartialStateError(
            "refusing to migrate: the pending migrations sit before applied ones, and applying "
            f"them now (after those) builds another schema than the journal's order: {shown}. "
            "Write a new migration that brings the schema where the journal intends instead"
        )
