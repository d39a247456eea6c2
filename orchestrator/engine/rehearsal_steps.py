"""The rehearsal form of each step of the deploy (:data:`REHEARSALS`), and what they share.

The walk (:mod:`orchestrator.engine.rehearsal`) runs these in the order the deploy's own
declaration gives; each does as much of its step as can be done without leaving a trace on
production and records what it found in the :class:`DryRun`:

- pre-flight: done before the database is chosen (the deploy's fetch, and its trial merge in
  a throwaway worktree); with github_pr, the pull request as GitHub judged it;
- backup: the tools and the database are checked, and the restore point that would be
  recorded is read; no dump is written;
- validate: the real validator, in a READ ONLY transaction;
- migrate: on production, the pending migrations are applied inside a transaction, then
  revalidated in that same transaction (it must say SAFE) and rolled back; on a copy they
  are applied for real and validated again;
- merge: the trial merge's outcome; nothing is pushed and no branch moves;
- monitor: every check runs once (SQL checks inside the rehearsal transaction, so they are
  tried against the new schema; on a schema-only copy their values are not predictive and
  are shown, never counted).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

from orchestrator.catalog import History
from orchestrator.database import folder_history, judge_database
from orchestrator.db.connect import connect, describe
from orchestrator.db.migrator import MigrateOptions, MigrationFailed, excerpt
from orchestrator.drizzle.journal import Journal, Migration
from orchestrator.engine.dry_run import DryRun
from orchestrator.engine.outcomes import (
    AppliedMigration,
    BackupOutcome,
    FailedCheck,
    MergeOutcome,
    MigrateOutcome,
    MonitorOutcome,
    Outcome,
    PreflightOutcome,
    ReleaseOutcome,
    ValidationOutcome,
)
from orchestrator.engine.platform_rehearsal import predict_pull_request, predict_release
from orchestrator.engine.settings import retry_policy
from orchestrator.engine.steps.backup import restore_point
from orchestrator.engine.steps.migrate import summarize
from orchestrator.engine.steps.preflight import baseline_checks, unhealthy_before
from orchestrator.errors import GuardError, UsageError
from orchestrator.gitrepo import TrialMerge
from orchestrator.migrate import migrate_database, outside_transaction, refuse_what_postgres_refuses
from orchestrator.monitor import CheckResult, judge_row, sql_check
from orchestrator.neon.backup import neon_api, production_branch
from orchestrator.playbook import Playbook
from orchestrator.runs import PlannedMigration, RunRecord
from orchestrator.shadow import ShadowSpec
from orchestrator.validation import Verdict, validate

__all__ = ["REHEARSALS", "Rehearsal", "RehearsedWorld"]

STATEMENT_EXCERPT = 100
NOT_PREDICTIVE = "ran on an empty copy: not predictive"
EMPTY_COPY_CAVEAT = (
    "the monitor's SQL checks ran on the schema-only copy, which has no rows: they show the "
    "queries run on the new schema, not what they would read on production (a check that "
    "fails on production's data is not predicted)"
)


@dataclass
class Rehearsal:
    """What the rehearsal forms of the steps share: the rehearsal's run context."""

    run: DryRun
    playbook: Playbook
    url: str
    journal: Journal
    merge: TrialMerge
    real: bool  # url is a copy, migrated for real; else production, rolled back
    schema_only: bool  # url is a copy of production's schema without its rows
    record: RunRecord
    options: MigrateOptions
    shadow: ShadowSpec
    environ: Mapping[str, str]  # the platforms' tokens
    history: History | None = None  # the journal's, once replayed
    tracked_after: tuple[str, ...] = ()  # each tracking row's hash once migrated
    sql_results: list[CheckResult] = field(default_factory=list)


@dataclass
class RehearsedWorld:
    """:class:`Observations` as the rehearsal predicts them, for the same guards."""

    rehearsal: Rehearsal

    def untracked(self) -> frozenset[str]:
        r = self.rehearsal
        return frozenset(m.tag for m in r.journal.untracked(r.tracked_after))

    def remote_ships(self, commit: str) -> bool:
        return not self.rehearsal.merge.conflicts  # the trial merge would push it

    def commit_exists(self, commit: str) -> bool:
        return commit == self.rehearsal.merge.source_commit

    def dump_intact(self, outcome: BackupOutcome) -> bool:
        return True  # written and verified by pg_restore --list before the guard looks

    def backup_branch_exists(self, outcome: BackupOutcome) -> bool:
        return True  # created (and waited for) before the guard looks

    def pull_request_merged(self, number: int) -> bool:
        return True  # merged through the API before the guard looks

    def release_live(self, commit: str) -> bool:
        return True  # the gate's endpoint answers (else its rehearsal halted before)

    def release_verdict(self) -> str:
        # What production would hold after the migrations: the rehearsed revalidate's (or,
        # nothing to migrate, validate's) verdict; nobody changes it during a rehearsal.
        steps = self.rehearsal.record.steps
        verdict = steps.revalidate or steps.validation or ValidationOutcome()
        return str(verdict.status)


def _rehearse_preflight(r: Rehearsal) -> PreflightOutcome:
    """Done before the database is chosen (the journal comes from the trial merge); with
    github_pr, the pull request as GitHub judged it (an unmergeable one halts here)."""
    if r.run.platforms is not None:
        pull = predict_pull_request(r.run.platforms, r.playbook)
        if pull is not None:
            r.run.step("pull_request", pull)
    for result in baseline_checks(r.playbook):  # production already down halts the deploy
        if not result.ok:
            raise GuardError(unhealthy_before(result))
    return PreflightOutcome(ok=True, source_commit=r.merge.source_commit)


def _rehearse_validate(r: Rehearsal) -> ValidationOutcome:
    report, r.history = judge_database(
        r.url,
        r.journal,
        r.options,
        shadow=r.shadow,
        retry=retry_policy(r.playbook),
        on_retry=None,
        history=r.history,
    )
    r.run.report = report
    r.record.planned = [PlannedMigration(tag=m.tag, hash=m.hash) for m in report.pending]
    r.tracked_after = report.row_hashes
    findings = [f"[{f.code}] {f.message}" for f in report.findings]
    r.run.step("validate", f"verdict {report.status.value}", findings)
    return summarize(report)


def _rehearse_migrate(r: Rehearsal) -> MigrateOutcome:
    if (r.record.steps.validation or ValidationOutcome()).status == Verdict.SAFE.value:
        r.run.skip("migrate", "every migration is already applied")
        r.run.predicted = r.run.report
        r.sql_results = _sql_checks_now(r)
        return MigrateOutcome(skipped="validate said SAFE")
    pending_tags = [p.tag for p in r.record.planned]
    pending = [m for m in r.journal.migrations if m.tag in pending_tags]
    r.run.details["migrate"] = _statements(pending)
    from orchestrator.db.concurrent import rehearse_release

    outside = outside_transaction(pending)
    # Refused as the deploy's migrate step refuses.
    refuse_what_postgres_refuses(r.journal, pending, r.shadow, r.options, history=r.history)
    notes: list[str] = []
    unrun: tuple[str, ...] = ()  # tracking rows the deploy writes, not rehearsed
    if r.real:
        result = migrate_database(
            r.url,
            r.journal,
            r.options,
            confirm=lambda _r: True,
            shadow=r.shadow,
            retry=retry_policy(r.playbook),
            take_run_lock=False,  # the rehearsal holds the copy's run lock
        )
        after = result.after
        applied = [a.tag for a in result.applied]
        summary = f"{len(applied)} migration(s) applied for real on the copy"
        r.sql_results = _sql_checks_now(r)
    else:
        with connect(r.url) as conn:
            # Non-transactional migrations are left out and probed (never run on production).
            release = rehearse_release(
                conn, r.journal, r.options, outside, inspect=lambda c: _sql_checks_in(r.playbook, c)
            )
        rehearsed, notes = release.rehearsal, release.lines()
        history = r.history
        if release.skipped or history is None:
            extensions = dict(history.seeded) if history else None
            history = folder_history(release.journal, r.options, r.shadow, extensions=extensions)
        after = validate(release.journal, history, rehearsed.snapshot_after)
        applied = [a.tag for a in rehearsed.applied]
        summary = (
            f"{len(applied)} migration(s) applied and rolled back in one transaction "
            f"(lock_timeout {r.options.lock_timeout:g}s)"
        )
        failed = release.failed_probe
        if failed is not None:  # the deploy's concurrent phase would fail on it
            raise MigrationFailed(
                failed.found.tag,
                f"{failed.found.location} would fail (checked without running it): {failed.detail}",
                sqlstate=None,
            )
        if release.skipped:
            summary += f"; {len(release.skipped)} non-transactional migration(s) not run"
            r.run.caveats.append(str(release.caveat()))
        r.sql_results = list(rehearsed.inspected or [])
        unrun = tuple(m.hash for m in release.skipped)
    r.run.predicted = after
    r.tracked_after = after.row_hashes + unrun
    details = _statements(pending) + notes + _locks(r.journal, pending_tags)
    r.run.step("migrate", summary, details)
    return MigrateOutcome(
        applied=[AppliedMigration(tag=tag) for tag in applied], after=after.status.value
    )


def _locks(journal: Journal, tags: list[str]) -> list[str]:
    """Which existing tables the pending migrations lock, and in which mode."""
    from orchestrator.analysis.plan import build_plan

    plan = build_plan(journal, set(tags))
    return [f"{m.tag} locks {lock.description}" for m in plan.migrations for lock in m.locks]


def _rehearse_revalidate(r: Rehearsal) -> ValidationOutcome:
    after = r.run.predicted
    assert after is not None  # migrate rehearsed before
    where = "on the copy" if r.real else "inside the rehearsal transaction"
    unrun = ["judged without the migrations this rehearsal did not run (see the caveat)"]
    details = [after.recommendation] + (unrun if r.run.caveats else [])
    r.run.step("revalidate", f"verdict {after.status.value} ({where})", details)
    return summarize(after)


def _rehearse_merge(r: Rehearsal) -> MergeOutcome:
    spec = r.playbook.git
    if spec.via == "github_pr":
        r.run.step(
            "merge",
            f"would merge the pull request {spec.source} -> {spec.target} through GitHub, "
            f"pinned to {r.merge.source_commit[:12]} ({r.merge.outcome} in a throwaway "
            "worktree; nothing merged)",
        )
        return MergeOutcome(pushed_commit=None if r.merge.conflicts else "(rehearsal: not merged)")
    r.run.step(
        "merge",
        f"would {r.merge.outcome} {spec.source} into {spec.target} and push to {spec.remote} "
        "(rehearsed in a throwaway worktree; nothing pushed)",
    )
    return MergeOutcome(pushed_commit=None if r.merge.conflicts else "(rehearsal: not pushed)")


def _rehearse_release(r: Rehearsal) -> ReleaseOutcome:
    """The release gate: its endpoint or API must answer now (else the gate would halt)."""
    commit = (r.record.steps.merge or MergeOutcome()).pushed_commit
    if r.run.platforms is not None and r.playbook.release is not None:
        r.run.step("release", predict_release(r.run.platforms, r.playbook))
    return ReleaseOutcome(live=True, commit=commit, gate="rehearsal")


def _rehearse_backup(r: Rehearsal) -> BackupOutcome:
    """Check what the backup step needs; raise (a halt) when it could not succeed."""
    run, playbook = r.run, r.playbook
    backup = playbook.backup
    if backup.kind == "pg_dump":
        missing = [t for t in ("pg_dump", "pg_restore") if shutil.which(t) is None]
        if missing:
            raise UsageError(f"backup kind pg_dump needs {', '.join(missing)}")
    if backup.kind == "neon_branch":  # the step's first request (a GET): the key, the branch
        production_branch(neon_api(playbook, r.environ), playbook)
    point = restore_point(r.url)
    where = f"{point.database} at {point.taken_at}, WAL {point.wal_lsn}"
    if r.real:
        run.step(
            "backup",
            "not rehearsed on production (this rehearsal does not touch it); "
            f"the copy's restore point: {where}",
        )
    elif backup.kind == "restore_point":
        run.step("backup", f"would record a restore point: {where}")
    elif backup.kind == "pg_dump":
        run.step("backup", f"would write a dump to {backup.path} and verify it; database {where}")
    elif backup.kind == "neon_branch" and playbook.neon is not None:
        run.step(
            "backup",
            f"would branch Neon branch {playbook.neon.branch} at WAL {point.wal_lsn} "
            f"(project {playbook.neon.project_id}); database {where}",
        )
    else:
        run.step("backup", f"would ask the operator to confirm a backup; database {where}")
    if backup.kind == "manual":
        return BackupOutcome(kind="manual", confirmed_at="(rehearsal: the operator would be asked)")
    return point.model_copy(update={"kind": backup.kind, "lsn": point.wal_lsn})


def _rehearse_monitor(r: Rehearsal) -> MonitorOutcome:
    """Every check once: HTTP against production now, SQL as gathered before. A result that
    says nothing of production (an SQL check on an empty copy) is shown, never counted."""
    run, spec = r.run, r.playbook.monitor
    results = baseline_checks(r.playbook) + r.sql_results
    details = [f"{_mark(r)} {r.name}: {r.detail}" for r in results]
    failed = [r for r in results if r.predictive and not r.ok]
    counted = sum(1 for r in results if r.predictive)
    summary = f"{counted} check(s) pass once now"
    if counted < len(results):
        summary += f", {len(results) - counted} not predictive (run on the empty copy)"
        run.caveats.append(EMPTY_COPY_CAVEAT)
    window = f"then {spec.duration:g}s of checks every {spec.interval:g}s"
    run.step("monitor", f"{summary}; {window}", details)
    # What the deploy's monitor would conclude from the same answers.
    return MonitorOutcome(
        healthy=len(failed) <= spec.failures_allowed,
        failures=len(failed),
        failures_allowed=spec.failures_allowed,
        failed_checks=[FailedCheck(check=r.name, detail=r.detail) for r in failed],
    )


#: The rehearsal form of each step of the declaration, by step name.
REHEARSALS: Mapping[str, Callable[[Rehearsal], Outcome]] = {
    "preflight": _rehearse_preflight,
    "backup": _rehearse_backup,
    "validate": _rehearse_validate,
    "migrate": _rehearse_migrate,
    "revalidate": _rehearse_revalidate,
    "merge": _rehearse_merge,
    "release": _rehearse_release,
    "monitor": _rehearse_monitor,
}


def _mark(result: CheckResult) -> str:
    if not result.predictive:
        return "n/a "
    return "ok  " if result.ok else "FAIL"


def _sql_checks_in(
    playbook: Playbook, conn: psycopg.Connection[Any], *, empty: bool = False
) -> list[CheckResult]:
    """Run each SQL check once inside the caller's transaction (each in a savepoint).

    ``empty``: the database is a schema-only copy. A query that fails there fails on the
    new schema, which predicts the deploy's check; a value read there counts rows that are
    not there, so it is reported as not predictive.
    """
    results: list[CheckResult] = []
    for check in playbook.monitor.sql:
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(check.query, prepare=True)
                row = cur.fetchone()
        except psycopg.Error as exc:
            results.append(_result(check.name, False, describe(exc)))
            continue
        ok, detail, _value = judge_row(row, min=check.min, max=check.max)
        if empty:
            results.append(_result(check.name, True, f"{NOT_PREDICTIVE} ({detail})", False))
        else:
            results.append(_result(check.name, ok, f"{detail} (on the rehearsed schema)"))
    return results


def _sql_checks_now(r: Rehearsal) -> list[CheckResult]:
    """Each SQL check once on the rehearsal's database as it is (read-only)."""
    if r.schema_only:
        with connect(r.url) as conn:
            conn.read_only = True
            return _sql_checks_in(r.playbook, conn, empty=True)
    return [
        sql_check(r.url, name=s.name, query=s.query, max=s.max, min=s.min)()
        for s in r.playbook.monitor.sql
    ]


def _result(name: str, ok: bool, detail: str, predictive: bool = True) -> CheckResult:
    return CheckResult(
        name=name, kind="sql", ok=ok, detail=detail, at=time.time(), predictive=predictive
    )


def _statements(migrations: list[Migration]) -> list[str]:
    """Each pending migration and its numbered statements, abbreviated."""
    lines: list[str] = []
    for migration in migrations:
        pieces = [p for p in migration.statements if p.strip()]
        lines.append(f"{migration.tag} ({len(pieces)} statement(s))")
        for number, piece in enumerate(pieces, 1):
            lines.append(f"  {number}. {excerpt(piece, STATEMENT_EXCERPT)}")
    return lines
