"""``deploy --dry-run``: walk the same route read-only and say what the deploy would do.

Nothing changes: no run record, no migration, no merge, no push. The rehearsal proves what
can be proved without acting (pre-flight's trial merge, the backup prerequisites, the
validation verdict) and describes the rest. Its exit code is the deploy's would-be outcome:
0 if it would go ahead, else the code it would halt with.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.commands import validate_database
from orchestrator.deploy import database_url
from orchestrator.errors import ExitCode, GuardError
from orchestrator.gitrepo import open_repo, preflight
from orchestrator.playbook import Playbook, load_playbook
from orchestrator.steps.base import journal_at, migrate_options, retry_policy
from orchestrator.validation import ValidationReport, Verdict


@dataclass
class DryRun:
    """The rehearsal's narrative and the exit code the real deploy would end with."""

    lines: list[str] = field(default_factory=list)
    exit_code: ExitCode = ExitCode.OK
    report: ValidationReport | None = None

    def halt(self, code: ExitCode, line: str) -> DryRun:
        """Record that the real run would stop here."""
        self.lines.append(f"would HALT (exit {int(code)}): {line}")
        self.exit_code = code
        return self


def rehearse(playbook_path: Path, environ: Mapping[str, str]) -> DryRun:
    """Everything the deploy would check, read-only; bad input raises UsageError."""
    playbook = load_playbook(playbook_path)
    url = database_url(playbook, environ)
    repo = open_repo(playbook.git.repo)
    spec = playbook.git
    run = DryRun()

    try:
        pre = preflight(repo, spec.remote, spec.source, spec.target)
    except GuardError as exc:
        return run.halt(ExitCode.GUARD_FAILED, f"pre-flight: {exc}")
    merge_kind = (
        "nothing to merge (already on target)"
        if pre.already_merged
        else "fast-forward"
        if pre.fast_forward
        else "merge commit"
    )
    run.lines.append(
        f"pre-flight: {spec.remote}/{spec.source} {pre.source_commit[:12]} merges cleanly into "
        f"{spec.remote}/{spec.target} {pre.target_commit[:12]} ({merge_kind})"
    )
    journal = journal_at(repo, pre.source_commit, playbook.migrations.dir, spec.source)
    run.lines.append(f"backup: {_backup_plan(playbook)}")
    missing = _missing_backup_tools(playbook)
    if missing:
        return run.halt(ExitCode.GUARD_FAILED, f"backup kind pg_dump needs {missing} on PATH")

    options = migrate_options(playbook)
    report = validate_database(url, journal, options, retry=retry_policy(playbook))
    run.report = report
    run.lines.append(f"validate: {report.status.value}")
    run.lines.extend(f"  finding [{f.code}] {f.message}" for f in report.findings)
    if report.status is Verdict.SAFE:
        run.lines.append("migrate: skipped, every migration is applied")
    elif report.status is Verdict.NEEDS_MIGRATION:
        run.lines.append(
            f"migrate: would apply {', '.join(m.tag for m in report.pending)} in one transaction "
            f"(lock_timeout {options.lock_timeout:g}s, statement_timeout "
            f"{options.statement_timeout:g}s), then revalidate (must be SAFE)"
        )
    else:
        code = ExitCode.ERROR if report.status is Verdict.ERROR else ExitCode.PARTIAL
        return run.halt(code, report.recommendation)
    run.lines.append(
        f"merge: {merge_kind} of {spec.source} into {spec.target}, pushed to {spec.remote}"
    )
    monitor = playbook.monitor
    run.lines.append(
        f"monitor: {len(monitor.http)} HTTP and {len(monitor.sql)} SQL check(s) every "
        f"{monitor.interval:g}s for {monitor.duration:g}s, {monitor.failures_allowed} "
        "failure(s) allowed"
    )
    run.lines.append("dry run: nothing was changed")
    return run


def _backup_plan(playbook: Playbook) -> str:
    backup = playbook.backup
    if backup.kind == "restore_point":
        return "would record a restore point (time and WAL position)"
    if backup.kind == "pg_dump":
        return f"would write a dump to {backup.path} and verify it with pg_restore --list"
    return "would ask the operator to confirm a backup (or --backup-confirmed)"


def _missing_backup_tools(playbook: Playbook) -> str:
    if playbook.backup.kind != "pg_dump":
        return ""
    return ", ".join(t for t in ("pg_dump", "pg_restore") if shutil.which(t) is None)
