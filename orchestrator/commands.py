"""The command layer: the verbs, returning values, knowing nothing of the CLI.

The CLI reaches the runtime through this module alone (besides the leaves
:mod:`orchestrator.errors` and :mod:`orchestrator.redaction`, and the renderers): it calls
these functions with plain arguments and renders what comes back; errors are the typed ones
of :mod:`orchestrator.errors`. Most commands call one verb. A command that changes production
after a confirmation calls a plan first and then the act: ``deploy`` shows the
:func:`checklist` and then calls :func:`deploy`; ``rollback --restore-database`` calls
:func:`restore_plan`, asks for production's branch name (:func:`check_restore_confirmation`),
then :func:`rollback` and :func:`restore_database`. Input checks the CLI runs before any
verb (:func:`check_database_url`, :func:`read_migrations`, :func:`duration`) live here too.

Below this layer sit the runtimes, which know nothing of verbs: the database operations
(:mod:`orchestrator.database`), migration analysis (:mod:`orchestrator.analysis`), repair
and inspect, and the deploy engine (:mod:`orchestrator.engine`). The engine, git and the
analysers are imported inside the functions that need them.
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
from orchestrator.db.connect import check_database_url
from orchestrator.db.migrator import MigrateOptions
from orchestrator.db.retry import OnRetry, RetryPolicy
from orchestrator.drizzle.journal import Journal
from orchestrator.errors import DatabaseError, UsageError
from orchestrator.shadow import LOCAL_SHADOW, ShadowSpec
from orchestrator.validation import ValidationReport, Verdict

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from orchestrator.analysis.lint import LintFinding
    from orchestrator.analysis.plan import Plan
    from orchestrator.catalog import History
    from orchestrator.engine.dry_run import DryRun, RehearsalBounds
    from orchestrator.engine.dump_rollback import DumpRestorePlan, DumpRestoreResult
    from orchestrator.engine.run import Interaction, RollbackResult
    from orchestrator.inventory import Inventory
    from orchestrator.neon.restore import RestorePlan, RestoreResult
    from orchestrator.repair import RepairPlan, RepairResult
    from orchestrator.runs import RunListing, RunRecord

__all__ = [
    "DEFAULT_RETRY",
    "Journal",
    "MigrateOptions",
    "MigrateResult",
    "OnRetry",
    "RetryPolicy",
    "ShadowSpec",
    "ValidationReport",
    "Verdict",
    "abandon_run",
    "check_database_url",
    "check_restore_confirmation",
    "checklist",
    "deploy",
    "dump_restore_plan",
    "duration",
    "has_dump_backup",
    "inspect",
    "interaction",
    "lint",
    "lint_fix",
    "lint_has_errors",
    "migrate_database",
    "plan",
    "read_migrations",
    "rehearsal_bounds",
    "rehearse",
    "repair_database",
    "restore_database",
    "restore_database_from_dump",
    "restore_plan",
    "resume",
    "rollback",
    "run_listing",
    "run_plan",
    "run_timeline",
    "runs",
    "shadow_spec",
    "take_snapshot",
    "validate_database",
]


# -- input checks (before any verb: bad input is exit 2 and nothing happens) ------------------


def shadow_spec(url: str | None) -> ShadowSpec:
    """The shadow server named by ``--shadow-url`` (checked), else a throwaway local one."""
    if url is None:
        return ShadowSpec()
    from orchestrator.db.connect import check_url

    try:
        return ShadowSpec(check_url(url))
    except UsageError as exc:
        raise UsageError(f"--shadow-url: {exc}") from None


def read_migrations(folder: Path) -> tuple[Journal, list[str]]:
    """A migrations folder, read and checked (UsageError on bad input), and one warning per
    file drizzle would ignore (never a refusal)."""
    from orchestrator.drizzle.journal import read_journal, stray_file_message

    journal = read_journal(folder)
    return journal, [stray_file_message(name) for name in journal.stray_files]


def duration(value: str, name: str) -> float:
    """A duration option (``5s``, ``2min``) in seconds; UsageError naming the option."""
    from orchestrator.playbook import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"{name}: {exc}") from None


def interaction(
    *,
    confirm: Callable[[str], bool],
    backup_confirmed: bool,
    ask: Callable[[str], bool] | None,
    console: Callable[[dict[str, Any]], None] | None,
    on_progress: Callable[[str], None],
    warn: Callable[[str], None],
    retries: int | None = None,
    on_retry: OnRetry | None = None,
) -> Interaction:
    """How a run talks to its operator (see :class:`orchestrator.engine.run.Interaction`).

    ``retries``: attempts on transient database failures, instead of the playbook's
    ``retry.attempts`` (None: the playbook's); ``on_retry`` hears each retry of the first
    connection, before the run's audit trail can.
    """
    from orchestrator.engine.run import Interaction

    return Interaction(
        confirm=confirm,
        backup_confirmed=backup_confirmed,
        ask=ask,
        console=console,
        on_progress=on_progress,
        warn=warn,
        retries=retries,
        on_retry=on_retry,
    )


def rehearsal_bounds(lock_timeout: float, statement_timeout: float) -> RehearsalBounds:
    """The limits of a rehearsal on production (seconds)."""
    from orchestrator.engine.dry_run import RehearsalBounds

    return RehearsalBounds(lock_timeout=lock_timeout, statement_timeout=statement_timeout)


def check_restore_confirmation(plan: RestorePlan, typed: str) -> None:
    """UsageError unless ``typed`` names production's branch (nothing has changed yet)."""
    from orchestrator.neon.restore import check_confirmation

    check_confirmation(plan, typed)


def lint_has_errors(findings: list[LintFinding]) -> bool:
    """Whether any finding is an error (``lint`` then exits 21)."""
    from orchestrator.analysis.lint import has_errors

    return has_errors(findings)


def lint_fix(rule: str) -> str:
    """How to fix a finding of lint rule ``rule``."""
    from orchestrator.analysis.lint import rule_named

    return rule_named(rule).fix


# -- verbs ------------------------------------------------------------------------------------


def plan(
    url: str | None,
    journal: Journal,
    options: MigrateOptions,
    *,
    shadow: ShadowSpec = LOCAL_SHADOW,
    retry: RetryPolicy = DEFAULT_RETRY,
    on_retry: OnRetry | None = None,
) -> Plan:
    """Risk, compatibility and strategy of the migrations the database lacks (every
    migration when ``url`` is None), read with the folder's history from the shadow. The
    database's states come from ``validate``, so plan and validate never disagree on what
    is pending. Without a database and without a shadow: from the SQL alone, with a note."""
    from dataclasses import replace

    from orchestrator.analysis.plan import build_plan
    from orchestrator.database import folder_history
    from orchestrator.validation import MigrationState, Verdict

    if url is None:
        history, note = shadow_history(journal, shadow, options)
        if history is None:
            return replace(build_plan(journal), note=note)
        return build_plan(journal, None, history, locks_taken(journal, None, shadow))
    history = folder_history(journal, options, shadow)
    report = validate_database(
        url, journal, options, shadow=shadow, retry=retry, on_retry=on_retry, history=history
    )
    if report.status is Verdict.ERROR:
        errors = [f.message for f in report.findings if f.severity == "error"]
        raise DatabaseError(errors[0] if errors else "cannot tell the migration state")
    tags = {m.tag for m in report.migrations if m.state is not MigrationState.APPLIED}
    return build_plan(journal, tags, history, locks_taken(journal, tags, shadow))


def locks_taken(journal: Journal, tags: set[str] | None, shadow: ShadowSpec) -> Mapping[str, Any]:
    """The locks each statement of the migrations ``tags`` (all when None) takes on the
    shadow (see :mod:`orchestrator.shadow.locks`)."""
    from orchestrator.analysis.plan import statement_texts
    from orchestrator.shadow.locks import locks_taken as taken

    return taken(journal, statement_texts(journal, tags), shadow)


def shadow_history(
    journal: Journal, shadow: ShadowSpec, options: MigrateOptions | None = None
) -> tuple[History | None, str]:
    """The folder's history from the shadow, or None and a one-line note saying why not
    (no server to replay on, or PostgreSQL refused the folder): the analysis then reads
    the SQL alone."""
    from orchestrator.database import folder_history

    try:
        return folder_history(journal, options or MigrateOptions(), shadow), ""
    except (UsageError, DatabaseError) as exc:
        reason = " ".join(str(exc).split())
        return None, f"no facts from the shadow, static rules only: {reason}"


def lint(
    journal: Journal, *, allow_concurrent: bool = False, shadow: ShadowSpec = LOCAL_SHADOW
) -> tuple[list[LintFinding], str]:
    """Every lint finding of every migration of ``journal``, in order (the whole folder taken
    as one release; ``allow_concurrent``: non-transactional statements are warnings), read
    with the folder's history from the shadow; and a note when there is none."""
    from orchestrator.analysis.effects import analyse_migrations
    from orchestrator.analysis.lint import lint_migrations

    history, note = shadow_history(journal, shadow)
    folder = [(m.tag, m.statements) for m in journal.migrations]
    analysis = analyse_migrations(folder, history)
    findings = lint_migrations(
        analysis.migrations, release=folder, allow_concurrent=allow_concurrent
    )
    return findings, note


def inspect(
    url: str,
    journal: Journal,
    options: MigrateOptions,
    *,
    shadow: ShadowSpec = LOCAL_SHADOW,
    retry: RetryPolicy = DEFAULT_RETRY,
    on_retry: OnRetry | None = None,
) -> Inventory:
    """Every table with its columns and creating migration, and drift against the tracked
    migrations; read-only."""
    from orchestrator.database import folder_history
    from orchestrator.inventory import build_inventory

    snapshot = take_snapshot(url, options, retry=retry, on_retry=on_retry)
    history = folder_history(journal, options, shadow, production_major=snapshot.server_major)
    return build_inventory(journal, history, snapshot)


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
    """Write the tracking rows of migrations whose effect the database already holds, when
    that is unambiguous (see :func:`orchestrator.repair.repair_database`)."""
    from orchestrator.repair import repair_database as repair

    return repair(
        url,
        journal,
        options,
        confirm=confirm,
        shadow=shadow,
        dry_run=dry_run,
        retry=retry,
        on_retry=on_retry,
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
    announce: Callable[[str], None] | None = None,
    retries: int | None = None,
    on_retry: OnRetry | None = None,
) -> DryRun:
    """Walk the deploy in rehearsal form and predict its exit code; commits nothing.

    ``announce`` gets the rehearsal's kind and bounds before its first connection;
    ``retries``: attempts on transient database failures instead of the playbook's;
    ``on_retry`` hears each retry of the first connection."""
    from orchestrator.engine.rehearsal import rehearse as walk

    return walk(
        playbook_path,
        environ,
        rehearse_on=rehearse_on,
        bounds=bounds,
        announce=announce,
        retries=retries,
        on_retry=on_retry,
    )


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
    run_id: str,
    state_dir: Path,
    environ: Mapping[str, str],
    typed_branch: str,
    *,
    retries: int | None = None,
    on_retry: OnRetry | None = None,
) -> RestoreResult:
    """Restore production's Neon branch from the run's backup branch (``typed_branch`` must
    name production's branch), then validate it again (its first connection retried with
    ``retries`` attempts, or the playbook's; each retry told to ``on_retry``)."""
    from orchestrator.neon.restore import restore_production
    from orchestrator.runs import RunStore

    return restore_production(
        run_id, RunStore(state_dir), environ, typed_branch, retries=retries, on_retry=on_retry
    )


def has_dump_backup(run_id: str, state_dir: Path) -> bool:
    """Whether run ``run_id``'s backup is a pg_dump (``--restore-database`` restores it)."""
    from orchestrator.engine.outcomes import BackupOutcome
    from orchestrator.runs import RunStore

    return BackupOutcome.of(RunStore(state_dir).load(run_id)).kind == "pg_dump"


def dump_restore_plan(
    run_id: str, state_dir: Path, environ: Mapping[str, str], typed: str | None = None
) -> DumpRestorePlan:
    """The restore of run ``run_id``'s dump; with ``typed``, checked against the database's
    name, the dump, the client programs and the run lock (UsageError or GuardError, nothing
    changed)."""
    from orchestrator.engine.dump_rollback import plan_for_run
    from orchestrator.runs import RunStore

    return plan_for_run(run_id, RunStore(state_dir), environ, typed)


def restore_database_from_dump(
    run_id: str,
    state_dir: Path,
    environ: Mapping[str, str],
    typed: str,
    *,
    retries: int | None = None,
) -> DumpRestoreResult:
    """Restore production from run ``run_id``'s dump exactly, compare it with the dump and
    validate again (``typed`` must be the database's name)."""
    from orchestrator.engine.dump_rollback import restore_from_dump
    from orchestrator.runs import RunStore

    return restore_from_dump(run_id, RunStore(state_dir), environ, typed, retries=retries)


def runs(state_dir: Path) -> list[RunRecord]:
    """The recorded runs, newest first."""
    from orchestrator.runs import RunStore

    return RunStore(state_dir).list()


def run_listing(state_dir: Path) -> RunListing:
    """Every recorded run, the unreadable and the abandoned ones too."""
    from orchestrator.runs import RunStore

    return RunStore(state_dir).listing()


def abandon_run(state_dir: Path, run_id: str, reason: str) -> str:
    """Close run ``run_id`` for good (resume refuses it); its full id."""
    from orchestrator.runs import RunStore

    return RunStore(state_dir).abandon(run_id, reason)


def run_plan(state_dir: Path, run_id: str) -> tuple[RunRecord, list[str]]:
    """Run ``run_id`` and its rollback plan, whatever state it is in; nothing is done."""
    from orchestrator.engine.run import plan_of
    from orchestrator.runs import RunStore

    record = RunStore(state_dir).load(run_id)
    return record, plan_of(record)


def run_timeline(state_dir: Path, run_id: str) -> tuple[RunRecord, list[dict[str, Any]]]:
    """One run's record and its audit trail's events."""
    from orchestrator.audit import read_events
    from orchestrator.runs import RunStore

    store = RunStore(state_dir)
    record = store.load(run_id)
    return record, read_events(store.audit_path(record.run_id))
