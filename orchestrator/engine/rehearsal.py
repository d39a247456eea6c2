"""``deploy --dry-run``: walk the deploy's route and predict how it would end, committing
nothing. It is not read-only: where the migrations are tried depends on ``--rehearse-on``.

- default (production): the migration DDL runs on production inside a transaction that is
  always rolled back. It takes the locks the real migration takes (ACCESS EXCLUSIVE for most
  ALTER TABLE), so it is bounded: lock waits of at most 1 s and statements of at most 60 s
  unless told otherwise, printed before it starts.
- ``--rehearse-on URL``: another database (a staging copy) gets the migrations for real;
  production is not touched at all.
- ``--rehearse-on local``: production's schema and tracking rows are copied
  (``pg_dump --schema-only``) into a throwaway local PostgreSQL, which gets the migrations
  for real. Production is only read.
- ``--rehearse-on neon-branch``: a temporary Neon branch of production (schema *and* data)
  with a read-write compute gets the migrations for real, and is deleted at the end (also
  on Ctrl-C and SIGTERM). Production gets no connection at all.

Each step is rehearsed as far as it can be without leaving a trace on production:

- pre-flight: the working tree is checked, and the branches are fetched into a throwaway
  repository (the operator's clone gains no ref and no object) where a trial merge says
  fast-forward, merge commit or conflict (naming the files);
- backup: the tools and the database are checked, and the restore point that would be
  recorded is read; no dump is written;
- validate: the real validator, in a READ ONLY transaction;
- migrate: on production, the pending migrations are applied inside a transaction, then
  revalidated in that same transaction (it must say SAFE) and rolled back; elsewhere they
  are applied for real and validated again;
- merge: the trial merge's outcome; nothing is pushed and no branch moves;
- monitor: every check runs once (SQL checks inside the rehearsal transaction, so they are
  tried against the new schema).

The rehearsal stops where the real deploy would halt. Its exit code is the deploy's would-be
outcome: 0 if the deploy would go ahead, else the code it would halt with.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from orchestrator.database import migrate_database, validate_database
from orchestrator.db.connect import (
    check_url,
    connect,
    describe,
    pooler_problem,
    redact_url,
    with_application_name,
)
from orchestrator.db.migrator import MigrateOptions, MigrationFailed, excerpt
from orchestrator.drizzle.journal import Journal, Migration, parse_journal
from orchestrator.drizzle.model import ObjectModel, journal_model
from orchestrator.engine.dry_run import DryRun, RehearsalBounds
from orchestrator.engine.machine import LIVE, TERMINAL, RunModel, build_machine, edges_from
from orchestrator.engine.outcomes import MergeOutcome, ValidationOutcome
from orchestrator.engine.platform_rehearsal import (
    look_at_platforms,
    predict_pull_request,
    predict_release,
)
from orchestrator.engine.run import database_url, hold_database, transport_warning
from orchestrator.engine.settings import migrate_options, migrations_path, retry_policy
from orchestrator.engine.steps.backup import restore_point
from orchestrator.engine.steps.base import Outcome
from orchestrator.engine.steps.migrate import summarize
from orchestrator.errors import DatabaseError, ExitCode, GuardError, OrchestratorError, UsageError
from orchestrator.gitrepo import (
    MissingBranch,
    TrialMerge,
    open_repo,
    read_files_at,
    refuse_dirty,
    scratch_repository,
    trial_merge,
)
from orchestrator.monitor import CheckResult, http_check, judge_row, sql_check
from orchestrator.neon.backup import neon_api
from orchestrator.neon.rehearsal import (
    REHEARSE_ON_NEON_BRANCH,
    rehearsal_branch,
    rehearsal_branch_name,
)
from orchestrator.playbook import Playbook, load_playbook
from orchestrator.runs import RunRecord, new_run_id
from orchestrator.schema_copy import CANNOT_CATCH, local_copy
from orchestrator.validation import Verdict, validate

STATEMENT_EXCERPT = 100
DEFAULT_BOUNDS = RehearsalBounds()


def rehearse(
    playbook_path: Path,
    environ: Mapping[str, str],
    *,
    rehearse_on: str | None = None,
    bounds: RehearsalBounds = DEFAULT_BOUNDS,
) -> DryRun:
    """Rehearse the deploy of ``playbook_path``; bad input raises UsageError (exit 2).

    ``rehearse_on``: None for production (rolled back, within ``bounds``), ``"local"`` for a
    local schema-only copy, ``"neon-branch"`` for a temporary branch of production's Neon
    branch, else the URL of another database to migrate for real.
    """
    playbook = load_playbook(playbook_path)
    plain_url = database_url(playbook, environ, writes=False)
    neon = None
    if rehearse_on == REHEARSE_ON_NEON_BRANCH:
        neon = neon_api(playbook, environ, "--rehearse-on neon-branch")  # exit 2 without it
    elif rehearse_on not in (None, "local"):
        _refuse_production_as_copy(str(rehearse_on), plain_url)
    warning = transport_warning(playbook, plain_url, environ)
    pooled = pooler_problem(plain_url)
    url = with_application_name(plain_url, "orchestrator rehearsal")
    repo = open_repo(playbook.git.repo)
    folder = migrations_path(repo, playbook.migrations.dir)
    spec = playbook.git
    run = DryRun(warnings=[w for w in (warning, pooled) if w])
    try:
        refuse_dirty(repo)
        with scratch_repository(repo, spec.remote, [spec.source, spec.target]) as scratch:
            merge = trial_merge(scratch, spec.remote, spec.source, spec.target)
            files = read_files_at(scratch, merge.source_commit, folder)
    except MissingBranch as exc:
        raise UsageError(str(exc)) from None  # bad input, as for the deploy itself
    except GuardError as exc:
        return run.halt("preflight", ExitCode.GUARD_FAILED, str(exc))
    run.merge = merge
    if merge.conflicts:
        return run.halt(
            "preflight",
            ExitCode.GUARD_FAILED,
            f"merging {spec.remote}/{spec.source} into {spec.remote}/{spec.target} conflicts",
            [f"conflict: {path}" for path in merge.conflicts],
        )
    journal = parse_journal(files, origin=f"{spec.source}@{merge.source_commit[:12]}:{folder}")
    run.step(
        "preflight",
        f"{spec.remote}/{spec.source} {merge.source_commit[:12]} merges into "
        f"{spec.remote}/{spec.target} {merge.target_commit[:12]} ({merge.outcome}); "
        f"{len(journal.migrations)} migrations at the source commit",
    )
    run.platforms = look_at_platforms(
        playbook, environ, merge.source_commit, already_merged=merge.already_merged
    )
    try:
        if rehearse_on is None:
            run.kind = "production, rolled back"
            return _rehearse_database(run, playbook, url, journal, merge, bounds, real=False)
        if rehearse_on == "local":
            schema, table = playbook.migrations.schema_, playbook.migrations.table
            with local_copy(url, schema=schema, table=table) as copy_url:
                run.kind = f"a local schema-only copy of production ({CANNOT_CATCH})"
                return _rehearse_database(
                    run, playbook, copy_url, journal, merge, bounds, real=True
                )
        if neon is not None:
            name = rehearsal_branch_name(new_run_id())
            with rehearsal_branch(neon, playbook, plain_url, name=name) as (branch, branch_url):
                production = playbook.neon.branch if playbook.neon else "production"
                run.kind = (
                    f"Neon branch {branch.name} of {production} (migrated for real, then deleted)"
                )
                _refuse_production_as_copy(branch_url, plain_url)  # never migrate production
                target = with_application_name(check_url(branch_url), "orchestrator rehearsal")
                return _rehearse_database(run, playbook, target, journal, merge, bounds, real=True)
        target = with_application_name(check_url(rehearse_on), "orchestrator rehearsal")
        run.kind = f"another database, {redact_url(rehearse_on)} (migrated for real)"
        return _rehearse_database(run, playbook, target, journal, merge, bounds, real=True)
    except DatabaseError as exc:
        return run.halt("database", ExitCode.ERROR, str(exc))


def _refuse_production_as_copy(copy: str, production: str) -> None:
    """``--rehearse-on`` must name another database than production (exit 2)."""
    mine, theirs = conninfo_to_dict(check_url(copy)), conninfo_to_dict(production)
    keys = ("host", "port", "dbname")
    if all(str(mine.get(k) or "") == str(theirs.get(k) or "") for k in keys):
        raise UsageError("--rehearse-on names the production database itself: give a copy")


@dataclass
class _Rehearsal:
    """What the rehearsal forms of the steps share: the rehearsal's run context."""

    run: DryRun
    playbook: Playbook
    url: str
    journal: Journal
    merge: TrialMerge
    bounds: RehearsalBounds
    real: bool  # url is a copy, migrated for real; else production, rolled back
    record: RunRecord
    options: MigrateOptions
    model: ObjectModel
    tracked_after: frozenset[str] = frozenset()  # the tracking rows once migrated
    sql_results: list[CheckResult] = field(default_factory=list)


@dataclass
class _RehearsedWorld:
    """:class:`Observations` as the rehearsal predicts them, for the same guards."""

    rehearsal: _Rehearsal

    def tracked_hashes(self) -> frozenset[str]:
        return self.rehearsal.tracked_after

    def remote_contains(self, commit: str) -> bool:
        return not self.rehearsal.merge.conflicts  # the trial merge would push it

    def commit_exists(self, commit: str) -> bool:
        return commit == self.rehearsal.merge.source_commit

    def dump_intact(self, outcome: Mapping[str, Any]) -> bool:
        return True  # written and verified by pg_restore --list before the guard looks

    def backup_branch_exists(self, outcome: Mapping[str, Any]) -> bool:
        return True  # created (and waited for) before the guard looks

    def pull_request_merged(self, number: int) -> bool:
        return True  # merged through the API before the guard looks

    def release_live(self, commit: str) -> bool:
        return True  # the gate's endpoint answers (else its rehearsal halted before)


def _rehearse_database(
    run: DryRun,
    playbook: Playbook,
    url: str,
    journal: Journal,
    merge: TrialMerge,
    bounds: RehearsalBounds,
    *,
    real: bool,
) -> DryRun:
    """Walk the deploy's own declaration (machine.LIVE and TRANSITIONS) in rehearsal form.

    Each state's steps run in their rehearsal form (:data:`REHEARSALS`), then the same
    guards decide the route from the rehearsal's record and :class:`_RehearsedWorld`; a
    dead end predicts the deploy's halt with the code the declaration gives it. All of it
    under the database's run lock, taken as a deploy takes it (retried: a Neon compute may
    be waking up).
    """
    options = migrate_options(playbook)
    if not real:
        options = replace(
            options,
            lock_timeout=min(options.lock_timeout, bounds.lock_timeout),
            statement_timeout=min(options.statement_timeout, bounds.statement_timeout),
        )
    record = RunRecord(run_id="rehearsal", playbook="", name=playbook.name)
    record.source_commit = merge.source_commit
    rehearsal = _Rehearsal(
        run,
        playbook,
        url,
        journal,
        merge,
        bounds,
        real,
        record,
        options,
        journal_model(journal),
    )
    model = RunModel(record, _RehearsedWorld(rehearsal))
    build_machine(model, "pending")
    with hold_database(playbook, url, None, "rehearsal"):
        while model.state not in TERMINAL:
            state = model.state
            for step in LIVE[state].steps:
                try:
                    record.steps[step.name] = REHEARSALS[step.name](rehearsal)
                except OrchestratorError as exc:
                    return run.halt(step.name, exc.exit_code, str(exc), run.details_of(step.name))
            if not any(getattr(model, edge.trigger)() for edge in edges_from(state)):
                code, reason = LIVE[state].dead_end(record)
                last = LIVE[state].steps[-1].name if LIVE[state].steps else state
                return run.halt(last, code, reason, run.details_of(last))
    return run


def _rehearse_preflight(r: _Rehearsal) -> Outcome:
    """Done before the database is chosen (the journal comes from the trial merge); with
    github_pr, the pull request as GitHub judged it (an unmergeable one halts here)."""
    if r.run.platforms is not None:
        pull = predict_pull_request(r.run.platforms, r.playbook)
        if pull is not None:
            r.run.step("pull_request", pull)
    return {"ok": True, "source_commit": r.merge.source_commit, "outcome": r.merge.outcome}


def _rehearse_backup_step(r: _Rehearsal) -> Outcome:
    outcome = _rehearse_backup(r.run, r.playbook, r.url, copy=r.real)
    if not r.real:
        r.run.step(
            "bounds",
            "on production, in a transaction that is rolled back: lock waits at most "
            f"{r.options.lock_timeout:g}s, statements at most {r.options.statement_timeout:g}s",
            [
                "the DDL takes the locks the real migration takes (ACCESS EXCLUSIVE for most "
                "ALTER TABLE) for as long as it runs; --rehearse-on local touches nothing"
            ],
        )
    return outcome


def _rehearse_validate(r: _Rehearsal) -> Outcome:
    report = validate_database(
        r.url, r.journal, r.options, retry=retry_policy(r.playbook), model=r.model
    )
    r.run.report = report
    r.record.planned = [{"tag": m.tag, "hash": m.hash} for m in report.pending]
    r.tracked_after = report.tracked_hashes
    findings = [f"[{f.code}] {f.message}" for f in report.findings]
    r.run.step("validate", f"verdict {report.status.value}", findings)
    return summarize(report)


def _rehearse_migrate(r: _Rehearsal) -> Outcome:
    if ValidationOutcome.of(r.record).status == Verdict.SAFE.value:
        r.run.skip("migrate", "every migration is already applied")
        r.run.predicted = r.run.report
        r.sql_results = _sql_checks_now(r.playbook, r.url)
        return {"applied": [], "skipped": "validate said SAFE"}
    pending_tags = [p["tag"] for p in r.record.planned]
    pending = [m for m in r.journal.migrations if m.tag in pending_tags]
    r.run.details["migrate"] = _statements(pending)
    from orchestrator.analysis.nontransactional import nontransactional_statements, refusal
    from orchestrator.db.concurrent import rehearse_release

    outside = nontransactional_statements([(m.tag, m.statements) for m in pending])
    if outside and not r.options.allow_concurrent:
        raise UsageError(refusal(outside[0]))  # what the deploy's migrate step refuses with
    notes: list[str] = []
    unrun: frozenset[str] = frozenset()  # tracking rows the deploy writes, not rehearsed
    if r.real:
        result = migrate_database(
            r.url,
            r.journal,
            r.options,
            confirm=lambda _r: True,
            retry=retry_policy(r.playbook),
            take_run_lock=False,  # the rehearsal holds the copy's run lock
        )
        after = result.after
        applied = [a.tag for a in result.applied]
        summary = f"{len(applied)} migration(s) applied for real on the copy"
        r.sql_results = _sql_checks_now(r.playbook, r.url)
    else:
        with connect(r.url) as conn:
            # Non-transactional migrations are left out and probed (never run on production).
            release = rehearse_release(
                conn,
                r.journal,
                r.options,
                outside,
                inspect=lambda c: _sql_checks_in(r.playbook, c),
            )
        rehearsed, notes = release.rehearsal, release.lines()
        model = journal_model(release.journal) if release.skipped else r.model
        after = validate(release.journal, model, rehearsed.snapshot_after)
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
        unrun = frozenset(m.hash for m in release.skipped)
    r.run.predicted = after
    r.tracked_after = after.tracked_hashes | unrun
    details = _statements(pending) + notes + _locks(r.journal, pending_tags)
    r.run.step("migrate", summary, details)
    return {"applied": [{"tag": tag} for tag in applied], "after": after.status.value}


def _locks(journal: Journal, tags: list[str]) -> list[str]:
    """Which existing tables the pending migrations lock, and in which mode."""
    from orchestrator.analysis.plan import build_plan

    plan = build_plan(journal, set(tags))
    return [f"{m.tag} locks {lock.description}" for m in plan.migrations for lock in m.locks]


def _rehearse_revalidate(r: _Rehearsal) -> Outcome:
    after = r.run.predicted
    assert after is not None  # migrate rehearsed before
    where = "on the copy" if r.real else "inside the rehearsal transaction"
    unrun = ["judged without the migrations this rehearsal did not run (see the caveat)"]
    details = [after.recommendation] + (unrun if r.run.caveats else [])
    r.run.step("revalidate", f"verdict {after.status.value} ({where})", details)
    return summarize(after)


def _rehearse_merge(r: _Rehearsal) -> Outcome:
    spec = r.playbook.git
    if spec.via == "github_pr":
        r.run.step(
            "merge",
            f"would merge the pull request {spec.source} -> {spec.target} through GitHub, "
            f"pinned to {r.merge.source_commit[:12]} ({r.merge.outcome} in a scratch "
            "repository; nothing merged)",
        )
        return {"pushed_commit": None if r.merge.conflicts else "(rehearsal: not merged)"}
    r.run.step(
        "merge",
        f"would {r.merge.outcome} {spec.source} into {spec.target} and push to {spec.remote} "
        "(rehearsed in a scratch repository; nothing pushed)",
    )
    return {"pushed_commit": None if r.merge.conflicts else "(rehearsal: not pushed)"}


def _rehearse_release(r: _Rehearsal) -> Outcome:
    """The release gate: its endpoint or API must answer now (else the gate would halt)."""
    commit = MergeOutcome.of(r.record).pushed_commit
    if r.run.platforms is not None and r.playbook.release is not None:
        r.run.step("release", predict_release(r.run.platforms, r.playbook))
    return {"live": True, "commit": commit, "gate": "rehearsal"}


def _rehearse_monitor_step(r: _Rehearsal) -> Outcome:
    return _rehearse_monitor(r.run, r.playbook, r.sql_results)


#: The rehearsal form of each step of the declaration, by step name.
REHEARSALS: Mapping[str, Callable[[_Rehearsal], Outcome]] = {
    "preflight": _rehearse_preflight,
    "backup": _rehearse_backup_step,
    "validate": _rehearse_validate,
    "migrate": _rehearse_migrate,
    "revalidate": _rehearse_revalidate,
    "merge": _rehearse_merge,
    "release": _rehearse_release,
    "monitor": _rehearse_monitor_step,
}


def _rehearse_backup(run: DryRun, playbook: Playbook, url: str, *, copy: bool) -> Outcome:
    """Check what the backup step needs; raise (a halt) when it could not succeed."""
    backup = playbook.backup
    if backup.kind == "pg_dump":
        missing = [t for t in ("pg_dump", "pg_restore") if shutil.which(t) is None]
        if missing:
            raise UsageError(f"backup kind pg_dump needs {', '.join(missing)}")
    point = restore_point(url)
    where = f"{point['database']} at {point['taken_at']}, WAL {point['wal_lsn']}"
    if copy:
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
            f"would branch Neon branch {playbook.neon.branch} at WAL {point['wal_lsn']} "
            f"(project {playbook.neon.project_id}); database {where}",
        )
    else:
        run.step("backup", f"would ask the operator to confirm a backup; database {where}")
    if backup.kind == "manual":
        return {"kind": "manual", "confirmed_at": "(rehearsal: the operator would be asked)"}
    return {**point, "kind": backup.kind, "lsn": point["wal_lsn"]}


def _rehearse_monitor(run: DryRun, playbook: Playbook, sql_results: list[CheckResult]) -> Outcome:
    """Every check once: HTTP against production now, SQL as gathered before."""
    spec = playbook.monitor
    results = [
        http_check(h.url, expect_status=h.expect_status, timeout=h.timeout, name=h.label)()
        for h in spec.http
    ]
    results += sql_results
    details = [f"{'ok  ' if r.ok else 'FAIL'} {r.name}: {r.detail}" for r in results]
    failed = [r for r in results if not r.ok]
    window = f"then {spec.duration:g}s of checks every {spec.interval:g}s"
    run.step("monitor", f"{len(results)} check(s) pass once now; {window}", details)
    # What the deploy's monitor would conclude from the same answers.
    return {
        "healthy": len(failed) <= spec.failures_allowed,
        "failures": len(failed),
        "failures_allowed": spec.failures_allowed,
        "failed_checks": [{"check": r.name, "detail": r.detail} for r in failed],
    }


def _sql_checks_in(playbook: Playbook, conn: psycopg.Connection[Any]) -> list[CheckResult]:
    """Run each SQL check once inside the caller's transaction (each in a savepoint)."""
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
        results.append(_result(check.name, ok, f"{detail} (on the rehearsed schema)"))
    return results


def _sql_checks_now(playbook: Playbook, url: str) -> list[CheckResult]:
    """Each SQL check once on the database as it is (read-only)."""
    return [
        sql_check(url, name=s.name, query=s.query, max=s.max, min=s.min)()
        for s in playbook.monitor.sql
    ]


def _result(name: str, ok: bool, detail: str) -> CheckResult:
    return CheckResult(name=name, kind="sql", ok=ok, detail=detail, at=time.time())


def _statements(migrations: list[Migration]) -> list[str]:
    """Each pending migration and its numbered statements, abbreviated."""
    lines: list[str] = []
    for migration in migrations:
        pieces = [p for p in migration.statements if p.strip()]
        lines.append(f"{migration.tag} ({len(pieces)} statement(s))")
        for number, piece in enumerate(pieces, 1):
            lines.append(f"  {number}. {excerpt(piece, STATEMENT_EXCERPT)}")
    return lines
