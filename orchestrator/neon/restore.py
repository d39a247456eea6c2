"""``rollback RUN_ID --restore-database``: put production's Neon branch back to the run's
backup branch, then validate again.

The restore is Neon's own (``POST /projects/{project_id}/branches/{branch_id}/restore`` with
``source_branch_id`` = the backup branch, ``source_lsn`` = the LSN it was taken at and
``preserve_under_name`` = ``pre-restore-<run-id>``, so the migrated state is kept as a branch
and the restore can itself be undone). It replaces production's data and schema, losing every
write since the backup: it runs only after the operator typed production's branch name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.db.retry import OnRetry
from orchestrator.engine.outcomes import BackupOutcome, DatabaseRestoreOutcome
from orchestrator.engine.rollback import database_steps
from orchestrator.engine.run import database_url, pinned_playbook
from orchestrator.engine.settings import source_journal, validate_per_playbook, with_retries
from orchestrator.errors import ExitCode, GuardError, UsageError
from orchestrator.neon.backup import neon_api
from orchestrator.redaction import Redactor, connection_passwords, secret_values
from orchestrator.runs import RunRecord, RunStore, utc_now_iso
from orchestrator.validation import ValidationReport


@dataclass(frozen=True)
class RestorePlan:
    """The exact restore a run's ``neon_branch`` backup allows (from the record alone)."""

    project_id: str
    production: str  # production's branch as the playbook names it (name or id)
    production_id: str
    backup_id: str
    backup_name: str
    lsn: str | None
    preserve_as: str
    applied: tuple[str, ...]  # the migrations the run applied (the restore undoes them)

    @property
    def lines(self) -> list[str]:
        """What the restore will do, for the operator to read before confirming."""
        return [
            f"Restore Neon branch {self.production} ({self.production_id}) of project "
            f"{self.project_id} from the backup branch {self.backup_name} ({self.backup_id}) "
            f"at LSN {self.lsn or 'its head'}.",
            f"  It undoes {', '.join(self.applied)} and loses every write to production since "
            f"the backup; the present state is kept as branch {self.preserve_as}.",
        ]


def restore_plan(record: RunRecord) -> RestorePlan:
    """The restore for ``record`` (pure); UsageError when there is none to perform: the backup is
    not a Neon branch (the message says what to do instead), or the run applied no migration."""
    backup = record.steps.backup or BackupOutcome()
    applied = record.steps.migrate.tags if record.steps.migrate is not None else []
    if backup.kind != "neon_branch":
        if not applied:
            instead = "it applied no migration, so there is nothing to restore"
        else:
            steps = [s.strip() for s in database_steps(record)[1:-1]]
            instead = f"restore by hand: {steps[0]}" if steps else "restore it by hand"
        kind = backup.kind or "no backup"
        raise UsageError(
            f"--restore-database restores Neon branch and pg_dump backups only; run "
            f"{record.run_id} has {kind}: {instead}"
        )
    if not applied:
        raise UsageError(
            f"run {record.run_id} applied no migration: there is nothing to restore "
            "(production is as the run found it)"
        )
    return RestorePlan(
        project_id=backup.project_id or "",
        production=backup.parent_branch or "",
        production_id=backup.parent_branch_id or "",
        backup_id=backup.branch_id or "",
        backup_name=backup.branch_name or "",
        lsn=backup.lsn,
        preserve_as=f"pre-restore-{record.run_id}",  # production's state before the restore
        applied=tuple(applied),
    )


def check_confirmation(plan: RestorePlan, typed: str) -> None:
    """The operator must type production's branch (its name, or its id): UsageError if not."""
    if not typed.strip() or typed.strip() not in (plan.production, plan.production_id):
        raise UsageError(
            f"{typed.strip()!r} is not the production branch {plan.production!r}: "
            "nothing was restored"
        )


@dataclass
class RestoreResult:
    """The restore done and the verdict of validating production again."""

    plan: RestorePlan
    before: str | None  # the verdict the run's validate step recorded before migrating
    report: ValidationReport

    @property
    def exit_code(self) -> ExitCode:
        """The verdict's code (NEEDS_MIGRATION, 10, when the release is undone)."""
        return self.report.exit_code

    @property
    def lines(self) -> list[str]:
        """The restore and the verdict, for the terminal."""
        status = self.report.status.value
        same = "as before the run" if status == self.before else f"before the run: {self.before}"
        return [
            f"restored Neon branch {self.plan.production} from {self.plan.backup_name} "
            f"(LSN {self.plan.lsn}); the migrated state is kept as branch {self.plan.preserve_as}",
            f"validate now says {status} ({same})",
            *(f"  {line}" for line in self.report.recommendation.splitlines()),
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "restored_branch": self.plan.production_id,
            "source_branch": self.plan.backup_id,
            "source_lsn": self.plan.lsn,
            "preserved_as": self.plan.preserve_as,
            "verdict_before_run": self.before,
            "validation": self.report.to_json(),
        }


def restore_production(
    run_id: str,
    store: RunStore,
    environ: Mapping[str, str],
    typed: str,
    *,
    retries: int | None = None,
    on_retry: OnRetry | None = None,
) -> RestoreResult:
    """Restore production's branch from run ``run_id``'s backup branch (``typed`` must be
    production's branch name), wait for Neon, validate again; each step in the audit trail.

    Neon restarts production's compute to restore it, so the validation's connection is
    retried (``retries`` attempts, or the playbook's ``retry.attempts``); each retry is told
    to ``on_retry`` and written to the audit trail.

    Bad input (no such run, not a Neon backup, a wrong name, no key, no URL) raises
    UsageError before anything changes.
    """
    record = store.load(run_id)
    playbook = with_retries(pinned_playbook(record), retries)
    plan = restore_plan(record)
    check_confirmation(plan, typed)
    url = database_url(playbook, environ, writes=False)
    api = neon_api(playbook, environ, "rollback --restore-database")
    assert record.source_commit is not None  # the run migrated, so pre-flight pinned it
    journal = source_journal(playbook, record.source_commit)
    store.redactor = Redactor([api.api_key, *secret_values(environ), *connection_passwords(url)])
    with store.lock(record.run_id), store.audit_trail(record.run_id) as trail:
        log = trail.log
        log.info(
            "database_restore_confirmed",
            branch=plan.production,
            branch_id=plan.production_id,
            source_branch=plan.backup_name,
            source_lsn=plan.lsn,
        )
        if api.get_branch(plan.backup_id) is None:
            log.error("database_restore_refused", reason="the backup branch is gone")
            raise GuardError(
                f"the backup branch {plan.backup_name} ({plan.backup_id}) no longer exists: "
                "nothing was restored"
            )
        if api.find_branch(plan.preserve_as) is not None:
            log.error("database_restore_refused", reason=f"{plan.preserve_as} exists")
            raise GuardError(
                f"branch {plan.preserve_as} exists: production was restored from this run "
                "before (that branch holds the migrated state and production's child branches, "
                "so Neon will not delete it); restore again in the Neon console if you must"
            )
        log.info("database_restore_started", preserve_under_name=plan.preserve_as)
        try:
            api.restore_branch(
                plan.production_id,
                source_branch_id=plan.backup_id,
                source_lsn=plan.lsn,
                preserve_as=plan.preserve_as,
            )
        except Exception as exc:
            log.error("database_restore_failed", reason=str(exc))
            raise
        record.steps.database_restore = DatabaseRestoreOutcome(
            branch_id=plan.production_id,
            source_branch_id=plan.backup_id,
            source_lsn=plan.lsn,
            preserved_as=plan.preserve_as,
            at=utc_now_iso(),
        )
        store.save(record)
        log.info("database_restore_finished", preserved_as=plan.preserve_as)

        def retried(attempt: int, error: BaseException, wait: float) -> None:
            if on_retry is not None:
                on_retry(attempt, error, wait)
            log.warning("retry", attempt=attempt, error=str(error), wait_s=round(wait, 2))

        report = validate_per_playbook(playbook, environ, url, journal, on_retry=retried)
        before = record.steps.validation.status if record.steps.validation else None
        log.info("database_revalidated", status=report.status.value, before_run=before)
    return RestoreResult(plan, before, report)
