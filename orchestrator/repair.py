"""``repair``: track migrations whose objects were applied by hand, exactly as drizzle would.

The runbook's fix for "relation already exists": when the schema is *exactly* the catalog
PostgreSQL builds from the tracked migrations plus some untracked ones (replayed on the
shadow database), insert the tracking rows drizzle's migrator would have written for those:
``("hash", "created_at") = (SHA-256 of the file, the journal's when)``, in journal order.
"Exactly" means the same comparison as ``validate``: every object and property the folder's
history holds. Never for a migration that changes nothing in the catalog (a seed): nothing
there proves it ran, so it stays pending, for ``migrate`` to run.

It refuses (and changes nothing) in every other case: a migration ``partially_present`` or
``tracked_missing``, a file edited after it was applied, or objects present but not as the
history defines them. Tracking rows would then hide a state only a person can fix, and a
later ``migrate`` would build on a schema drizzle never builds.

The write is one transaction that takes the migrator's advisory lock, creates the tracking
table with drizzle's DDL if needed, re-reads the state under the lock, and inserts only if
the rows are still those that were confirmed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from orchestrator.catalog import CatalogSnapshot, History
from orchestrator.database import DEFAULT_RETRY, folder_history, take_snapshot
from orchestrator.db import runlock
from orchestrator.db.catalog_reader import read_catalog
from orchestrator.db.connect import connect, database_error
from orchestrator.db.migrator import MigrateOptions, begin_tracking_transaction, tracking_row_sql
from orchestrator.db.retry import OnRetry, RetryPolicy, call_with_retry
from orchestrator.drizzle.journal import Journal
from orchestrator.errors import GuardError, PartialStateError, UsageError
from orchestrator.shadow import LOCAL_SHADOW, ShadowSpec
from orchestrator.validation import MigrationState, ValidationReport, validate
from orchestrator.validation.findings import first_few


@dataclass(frozen=True)
class RepairRow:
    """A tracking row to insert: exactly what drizzle's migrator writes for ``tag``."""

    tag: str
    hash: str
    created_at: int


@dataclass(frozen=True)
class Refusal:
    """Why a migration blocks the repair."""

    tag: str
    reason: str


@dataclass(frozen=True)
class RepairPlan:
    """The rows repair would insert, or why it refuses."""

    rows: tuple[RepairRow, ...]
    refusals: tuple[Refusal, ...]


@dataclass(frozen=True)
class RepairResult:
    """The state before, the plan, and the state after inserting its rows (None: not inserted)."""

    before: ValidationReport
    plan: RepairPlan
    after: ValidationReport | None


def plan_repair(report: ValidationReport) -> RepairPlan:
    """Which rows to insert, or the refusals (pure)."""
    refusals: list[Refusal] = []
    for status in report.migrations:
        missing = ", ".join(status.missing_summary[:3]) or "its objects"
        if status.state is MigrationState.PARTIALLY_PRESENT and status.tracked:
            why = (
                f"{status.tag} is tracked but only partially present (missing {missing}): "
                "repair only adds tracking rows; restore the missing objects by hand "
                "(or from a backup)"
            )
        elif status.state is MigrationState.PARTIALLY_PRESENT:
            why = (
                f"{status.tag} is partially present (missing {missing}): a tracking row "
                "would hide the missing objects and re-running it would fail on the "
                "present ones; finish or undo it by hand (or restore a backup)"
            )
        elif status.state is MigrationState.TRACKED_MISSING:
            why = (
                f"{status.tag} is tracked but its objects are gone (missing {missing}): "
                "repair only adds tracking rows; restore the objects from a backup"
            )
        else:
            continue
        refusals.append(Refusal(status.tag, why))
    for finding in report.findings:
        if finding.code == "edited_migration" and finding.migration:
            why = (
                f"{finding.migration}.sql was edited after it was applied: its old hash "
                "is tracked; decide by hand which version the database holds"
            )
            refusals.append(Refusal(finding.migration, why))
    unproven = [s for s in report.migrations if s.state is MigrationState.UNTRACKED_PRESENT]
    if unproven and not report.repairable:
        drift = next((f": {f.message}" for f in report.findings if f.code == "schema_drift"), "")
        why = (
            f"{', '.join(s.tag for s in unproven)} look applied, but the schema is not the state "
            f"PostgreSQL builds from the tracked migrations and them{drift}; a tracking row "
            "would hide the difference: reconcile by hand"
        )
        refusals.append(Refusal(unproven[0].tag, why))
    if refusals and report.repair_differences:  # the exact difference: object, property, found
        why = "tracked, the database would still differ: " + first_few(report.repair_differences)
        refusals.append(Refusal(refusals[0].tag, why))
    if refusals:
        return RepairPlan((), tuple(refusals))
    return RepairPlan(tuple(RepairRow(s.tag, s.hash, s.when) for s in unproven), ())


def _judge(
    journal: Journal, history: History, snapshot: CatalogSnapshot
) -> tuple[ValidationReport, RepairPlan]:
    """The report and the rows to insert; raises when the state cannot be repaired."""
    report = validate(journal, history, snapshot)
    report.refuse_unjudged()
    plan = plan_repair(report)
    if plan.refusals:
        raise PartialStateError(
            "refusing to repair, nothing was changed: " + "; ".join(r.reason for r in plan.refusals)
        )
    return report, plan


def repair_database(
    url: str,
    journal: Journal,
    options: MigrateOptions,
    *,
    confirm: Callable[[RepairPlan, ValidationReport], bool],
    shadow: ShadowSpec = LOCAL_SHADOW,
    dry_run: bool = False,
    retry: RetryPolicy = DEFAULT_RETRY,
    on_retry: OnRetry | None = None,
) -> RepairResult:
    """Plan read-only, refuse unrepairable states, ask ``confirm``, insert in one transaction.

    ``dry_run`` stops after the read-only plan. Raises :class:`PartialStateError` (exit 20)
    on refusals, :class:`UsageError` when not confirmed, :class:`GuardError` when the state
    changed between confirmation and the write, :class:`DatabaseError` on database trouble.
    """

    shadow.check_not(url)
    # Transient failures (a compute waking up) are retried on every connection but the
    # write itself, which runs once: its outcome is read again, not guessed.
    snapshot = take_snapshot(url, options, retry=retry, on_retry=on_retry)
    history = folder_history(journal, options, shadow, production=snapshot)
    before, plan = _judge(journal, history, snapshot)
    if dry_run or not plan.rows:
        return RepairResult(before, plan, None)
    if not confirm(plan, before):
        raise UsageError("repair not confirmed: nothing was changed")

    # Never beside a deploy or migrate: refused at once (exit 2) naming the run.
    run_lock = runlock.run_lock(url, options.schema, options.table, "repair")
    call_with_retry(run_lock.acquire, retry, on_retry=on_retry)
    try:
        with connect(url) as conn, conn.transaction():
            begin_tracking_transaction(conn, options)
            # Under the lock: the state may have moved since the read-only plan.
            locked = read_catalog(conn, schema=options.schema, table=options.table)
            _, locked_plan = _judge(journal, history, locked)
            if locked_plan.rows != plan.rows:
                raise GuardError(
                    "the database changed since the repair was planned; nothing was changed: "
                    "run repair again"
                )
            for row in plan.rows:  # drizzle's own statement
                conn.execute(tracking_row_sql(options, row.hash, row.created_at))
    except psycopg.Error as exc:
        raise database_error("repair failed, rolled back", exc) from exc
    finally:
        run_lock.release()
    after, _ = _judge(journal, history, take_snapshot(url, options, retry=retry, on_retry=on_retry))
    return RepairResult(before, plan, after)
