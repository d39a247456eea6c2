"""The command layer: one function per verb, returning values, knowing nothing of the CLI.

Every command of ``orchestrator`` calls exactly one function here, with plain arguments, and
renders what comes back; errors are the typed ones of :mod:`orchestrator.errors`. Below this
layer sit the runtimes, which know nothing of verbs: the database operations
(:mod:`orchestrator.database`), migration analysis (:mod:`orchestrator.analysis`), repair
and inspect, and the deploy engine (:mod:`orchestrator.engine`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.database import (
    DEFAULT_RETRY,
    MigrateResult,
    migrate_database,
    take_snapshot,
    validate_database,
)
from orchestrator.db.migrator import MigrateOptions
from orchestrator.db.retry import OnRetry, RetryPolicy, call_with_retry
from orchestrator.drizzle.journal import Journal
from orchestrator.errors import DatabaseError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from orchestrator.analysis.lint import LintFinding
    from orchestrator.analysis.plan import Plan
    from orchestrator.engine.dry_run import DryRun, RehearsalBounds
    from orchestrator.engine.run import Interaction, RollbackResult
    from orchestrator.inventory import Inventory
    from orchestrator.neon.restore import RestorePlan, RestoreResult
    from orchestrator.repair import RepairPlan, RepairResult
    from orchestrator.runs import RunRecord
    from orchestrator.validation import ValidationReport

__all__ = [
    "DEFAULT_RETRY",
    "MigrateResult",
    "checklist",
    "deploy",
    "inspect",
    "lint",
    "migrate_database",
    "plan",
    "rehearse",
    "repair_database",
    "restore_database",
    "restore_plan",
    "resume",
    "rollback",
    "run_timeline",
    "runs",
    "take_snapshot",
    "validate_database",
]


def plan(
    url: str | None,
    journal: Journal,
    options: MigrateOptions,
    *,
    retry: RetryPolicy = DEFAULT_RETRY,
    on_retry: OnRetry | None = None,
) -> Plan:
    """Risk, compatibility and strategy of the migrations the database lacks (every
    migration when ``url`` is None). The database's states come from ``validate``, so plan
    and validate never disagree on what is pending."""
    from orchestrator.analysis.plan import build_plan
    from orchestrator.validation import MigrationState, Verdict

    tags: set[str] | None = None
    if url is not None:
        report = validate_database(url, journal, options, retry=retry, on_retry=on_retry)
        if report.status is Verdict.ERROR:
            errors = [f.message for f in report.findings if f.severity == "error"]
            raise DatabaseError(errors[0] if errors else "cannot tell the migration state")
        tags = {m.tag for m in report.migrations if m.state is not MigrationState.APPLIED}
    return build_plan(journal, tags)


def lint(journal: Journal, *, allow_concurrent: bool = False) -> list[LintFinding]:
    """Every lint finding of every migration of ``journal``, in order (the whole folder taken
    as one release; ``allow_concurrent``: non-transactional statements are warnings)."""
    from orchestrator.analysis.effects import analyse_migrations
    from orchestrator.analysis.lint import lint_migrations

    folder = [(m.tag, m.statements) for m in journal.migrations]
    analysis = analyse_migrations(folder)
    return lint_migrations(analysis.migrations, release=folder, allow_concurrent=allow_concurrent)


def inspect(
    url: str,
    journal: Journal,
    *,
    schema: str,
    table: str,
    retry: RetryPolicy = DEFAULT_RETRY,
    on_retry: OnRetry | None = None,
) -> Inventory:
    """Every table with its columns and creating migration, and drift against the tracked
    migrations; read-only."""
    from orchestrator.inventory import inspect_database

    return call_with_retry(
        lambda: inspect_database(url, journal, schema=schema, table=table),
        retry,
        on_retry=on_retry,
    )


def repair_database(
    url: str,
    journal: Journal,
    options: MigrateOptions,
    *,
    confirm: Callable[[RepairPlan, ValidationReport], bool],
    dry_run: bool = False,
    retry: RetryPolicy = DEFAULT_RETRY,
    on_retry: OnRetry | None = None,
) -> RepairResult:
    """Write the tracking rows of migrations whose effect the database already holds, when
    that is unambiguous (see :func:`orchestrator.repair.repair_database`)."""
    from orchestrator.repair import repair_database as repair

    return repair(
        url, journal, options, confirm=confirm, dry_run=dry_run, retry=retry, on_retry=on_retry
    )


def checklist(playbook_path: Path) -> list[str]:
    """The runbook's pre-deployment checklist for the playbook's release."""
    from orchestrator.checklist import checklist as build
    from orchestrator.playbook import load_playbook

    return build(load_playbook(playbook_path))


def deploy(playbook_path: Path, state_dir: Path, interaction: Interaction) -> RunRecord:
    """Start a run of Strategy A and walk it until it succeeds, halts or fails."""
    from orchestrator.engine.run import start
    from orchestrator.runs import RunStore

    return start(playbook_path, RunStore(state_dir), interaction)


def rehearse(
    playbook_path: Path,
    environ: Mapping[str, str],
    *,
    rehearse_on: str | None,
    bounds: RehearsalBounds,
) -> DryRun:
    """Walk the deploy in rehearsal form and predict its exit code; commits nothing."""
    from orchestrator.engine.rehearsal import rehearse as walk

    return walk(playbook_path, environ, rehearse_on=rehearse_on, bounds=bounds)


def resume(run_id: str | None, state_dir: Path, interaction: Interaction) -> RunRecord:
    """Continue an interrupted or halted run after re-reading the world."""
    from orchestrator.engine.run import resume as walk
    from orchestrator.runs import RunStore

    return walk(run_id, RunStore(state_dir), interaction)


def rollback(run_id: str, state_dir: Path, interaction: Interaction) -> RollbackResult:
    """Revert a run's pushed merge and return the database steps left to the operator."""
    from orchestrator.engine.run import rollback as revert
    from orchestrator.runs import RunStore

    return revert(run_id, RunStore(state_dir), interaction)


def restore_plan(run_id: str, state_dir: Path) -> RestorePlan:
    """The Neon restore ``rollback --restore-database`` would perform for run ``run_id``;
    UsageError when the run's backup is not a Neon branch (saying what to do instead)."""
    from orchestrator.neon.restore import restore_plan as plan_of
    from orchestrator.playbook import load_playbook
    from orchestrator.runs import RunStore

    record = RunStore(state_dir).load(run_id)
    return plan_of(record, load_playbook(Path(record.playbook)).database.url_env)


def restore_database(
    run_id: str, state_dir: Path, environ: Mapping[str, str], typed_branch: str
) -> RestoreResult:
    """Restore production's Neon branch from the run's backup branch (``typed_branch`` must
    name production's branch), then validate it again."""
    from orchestrator.neon.restore import restore_production
    from orchestrator.runs import RunStore

    return restore_production(run_id, RunStore(state_dir), environ, typed_branch)


def runs(state_dir: Path) -> list[RunRecord]:
    """The recorded runs, newest first."""
    from orchestrator.runs import RunStore

    return RunStore(state_dir).list()


def run_timeline(state_dir: Path, run_id: str) -> tuple[RunRecord, list[dict[str, Any]]]:
    """One run's record and its audit trail's events."""
    from orchestrator.audit import read_events
    from orchestrator.runs import RunStore

    store = RunStore(state_dir)
    record = store.load(run_id)
    return record, read_events(store.audit_path(record.run_id))
