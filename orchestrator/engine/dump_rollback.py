"""``rollback RUN_ID --restore-database`` for a run whose backup is a ``pg_dump``: put
production back to exactly the dump, in one transaction, prove it, then validate again.

How the restore itself works (and why not ``pg_restore --clean``) is in
:mod:`orchestrator.db.dump_restore`. It replaces production's schema and rows with the
dump's, losing every write since the dump: it runs only on the database the run deployed to,
after the operator typed its name, from a dump whose digest is the one the run recorded.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from orchestrator.db import dump_restore, runlock
from orchestrator.engine.outcomes import DatabaseRestoreOutcome
from orchestrator.engine.run import another_database, database_url, pinned_playbook
from orchestrator.engine.settings import source_journal, validate_per_playbook, with_retries
from orchestrator.engine.steps.backup import dump_intact
from orchestrator.errors import DatabaseError, ExitCode, GuardError, UsageError
from orchestrator.playbook.model import Playbook
from orchestrator.redaction import Redactor, connection_passwords, secret_values
from orchestrator.runs import RunRecord, RunStore, utc_now_iso
from orchestrator.validation import ValidationReport

__all__ = ["plan_for_run", "restore_from_dump"]


@dataclass(frozen=True)
class DumpRestorePlan:
    """The restore a run's ``pg_dump`` backup allows (from the record and the URL)."""

    database: str  # the production database's name, which the operator types
    dump: str
    sha256: str
    taken_at: str | None
    applied: tuple[str, ...]  # the migrations the run applied (the restore undoes them)

    @property
    def lines(self) -> list[str]:
        """What the restore will do, for the operator to read before confirming."""
        undoes = ", ".join(self.applied) if self.applied else "whatever the run changed"
        return [
            f"Restore database {self.database} from the dump {self.dump} (sha256 "
            f"{self.sha256[:12]}…, taken {self.taken_at or 'at the backup step'}), in one "
            "transaction: every schema is dropped and created again from the dump (public is "
            "emptied, keeping its grants), then checked against the dump (pg_dump "
            "--schema-only and each table's rows).",
            f"  It undoes {undoes} and loses every write to production since the dump.",
        ]


def dump_restore_plan(record: RunRecord, url: str) -> DumpRestorePlan:
    """The restore for ``record`` (pure); UsageError when the run's backup is not a dump or
    its migrate step ended having applied nothing."""
    backup = record.steps.backup
    if backup is None or backup.kind != "pg_dump" or not backup.path or not backup.sha256:
        raise UsageError(f"run {record.run_id} has no pg_dump backup to restore")
    if record.steps.database_restore is not None:  # again would lose every write since
        raise UsageError(
            f"run {record.run_id} restored production from its dump already "
            f"({record.steps.database_restore.at}): nothing was restored"
        )
    migrate = record.steps.migrate
    if migrate is not None and not migrate.applied:
        raise UsageError(
            f"run {record.run_id} applied no migration: there is nothing to restore "
            "(production is as the run found it)"
        )
    database = str(conninfo_to_dict(url).get("dbname") or "")
    if not database:
        raise UsageError("the database URL names no database: nothing was restored")
    return DumpRestorePlan(
        database=database,
        dump=backup.path,
        sha256=backup.sha256,
        taken_at=backup.taken_at,
        applied=tuple(migrate.tags if migrate is not None else ()),
    )


def check_confirmation(plan: DumpRestorePlan, typed: str) -> None:
    """The operator must type production's database name: UsageError if not."""
    if typed.strip() != plan.database:
        raise UsageError(
            f"{typed.strip()!r} is not the production database {plan.database!r}: "
            "nothing was restored"
        )


def check_ready(plan: DumpRestorePlan, record: RunRecord, typed: str) -> None:
    """Everything checked before anything changes: the typed name (UsageError), the client
    programs (UsageError) and the dump, on disk with the recorded digest (GuardError)."""
    check_confirmation(plan, typed)
    dump_restore.check_tools()
    if record.steps.backup is None or not dump_intact(record.steps.backup):
        raise GuardError(
            f"the dump {plan.dump} is gone, changed (sha256 differs from the run's "
            f"{plan.sha256[:12]}…) or unreadable: nothing was restored"
        )


@dataclass
class DumpRestoreResult:
    """The restore done, what still differs from the dump, and the verdict afterwards."""

    plan: DumpRestorePlan
    differences: list[str]  # empty: the database holds exactly the dump
    before: str | None  # the verdict the run's validate step recorded before migrating
    report: ValidationReport

    @property
    def exit_code(self) -> ExitCode:
        """21 when the database differs from the dump, else the verdict's code
        (NEEDS_MIGRATION, 10, when the release is undone)."""
        return ExitCode.GUARD_FAILED if self.differences else self.report.exit_code

    @property
    def lines(self) -> list[str]:
        """The restore, the check and the verdict, for the terminal."""
        if self.differences:
            head = [
                f"restored database {self.plan.database} from {self.plan.dump}, but it "
                "differs from the dump:",
                *(f"  {line}" for line in self.differences),
            ]
        else:
            head = [
                f"restored database {self.plan.database} from {self.plan.dump}: its schema "
                "(pg_dump --schema-only) and every table's rows match the dump"
            ]
        status = self.report.status.value
        same = "as before the run" if status == self.before else f"before the run: {self.before}"
        return [
            *head,
            f"validate now says {status} ({same})",
            *(f"  {line}" for line in self.report.recommendation.splitlines()),
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "restored_database": self.plan.database,
            "dump": self.plan.dump,
            "sha256": self.plan.sha256,
            "matches_dump": not self.differences,
            "differences": self.differences,
            "verdict_before_run": self.before,
            "validation": self.report.to_json(),
        }


def plan_for_run(
    run_id: str, store: RunStore, environ: Mapping[str, str], typed: str | None = None
) -> DumpRestorePlan:
    """The plan for run ``run_id`` with production's URL from its pinned playbook's variable;
    UsageError when that URL reaches another database than the run's.

    With ``typed``, also everything :func:`check_ready` checks, and that no deploy or
    migrate holds the database now (DatabaseBusy, exit 2): all before the code is reverted.
    """
    record = store.load(run_id)
    playbook = pinned_playbook(record)
    url = database_url(playbook, environ, writes=typed is not None)
    plan = dump_restore_plan(record, url)
    if moved := another_database(playbook, record, url):  # the restore would wipe that one
        raise UsageError(f"{moved[0]}: nothing was restored")
    if typed is not None:
        check_ready(plan, record, typed)
        with _run_lock(url, playbook, record.run_id):
            pass
    return plan


def _run_lock(url: str, playbook: Playbook, run_id: str) -> runlock.RunLock:
    """The database's run lock, taken in the restore's name."""
    spec = playbook.migrations
    return runlock.run_lock(url, spec.schema_, spec.table, "restore", run_id)


def restore_from_dump(
    run_id: str,
    store: RunStore,
    environ: Mapping[str, str],
    typed: str,
    *,
    retries: int | None = None,
) -> DumpRestoreResult:
    """Restore production from run ``run_id``'s dump (``typed`` must be the database's
    name), compare it with the dump, validate again; each step in the audit trail. The
    database's run lock is held throughout, so no deploy or migrate runs beside it.

    Bad input (no such run, not a dump, a wrong name, no URL or one reaching another
    database than the run's, client programs missing) raises UsageError, and a dump that
    is gone or changed GuardError, before anything changes.
    """
    record = store.load(run_id)
    playbook = with_retries(pinned_playbook(record), retries)
    url = database_url(playbook, environ, writes=True)
    plan = dump_restore_plan(record, url)
    check_confirmation(plan, typed)
    if moved := another_database(playbook, record, url):
        raise UsageError(f"{moved[0]}: nothing was restored")
    dump_restore.check_tools()
    store.redactor = Redactor([*secret_values(environ), *connection_passwords(url)])
    assert record.source_commit is not None  # the run took a backup, so pre-flight pinned it
    journal = source_journal(playbook, record.source_commit)
    with (
        store.lock(record.run_id),
        _run_lock(url, playbook, record.run_id),  # no deploy or migrate beside it (exit 2)
        store.audit_trail(record.run_id) as trail,
        # Only we can read it: the dump's script written there holds production's rows.
        tempfile.TemporaryDirectory(prefix="orchestrator-restore-") as workdir,
    ):
        dump_restore_plan(store.load(record.run_id), url)  # restored by another meanwhile?
        log = trail.log
        log.info("database_restore_confirmed", database=plan.database, dump=plan.dump)
        try:
            check_ready(plan, record, typed)  # the dump read again, just before using it
        except GuardError as exc:
            log.error("database_restore_refused", reason=str(exc))
            raise
        contents, script = dump_restore.read_dump(Path(plan.dump), Path(workdir))
        log.info("database_restore_started", tables=len(contents.row_counts))
        adopted = False
        try:
            wait = playbook.migrations.lock_timeout  # as a migration's statements
            dump_restore.restore(url, contents, script, Path(workdir), lock_timeout=wait)
        except dump_restore.RestoreFailed as exc:
            log.error("database_restore_failed", reason=str(exc))
            raise
        except DatabaseError as exc:
            # The connection may have dropped after the COMMIT: look before saying it failed.
            if dump_restore.differences(url, contents):
                log.error("database_restore_failed", reason=str(exc))
                raise
            adopted = True
        differences = dump_restore.differences(url, contents)
        record.steps.database_restore = DatabaseRestoreOutcome(
            database=plan.database,
            dump=plan.dump,
            sha256=plan.sha256,
            matches_dump=not differences,
            at=utc_now_iso(),
        )
        store.save(record)
        if differences:
            log.error("database_restore_differs", differences=differences)
        else:
            log.info("database_restore_finished", matches_dump=True, adopted=adopted)
        report = validate_per_playbook(playbook, environ, url, journal)
        before = record.steps.validation.status if record.steps.validation else None
        log.info("database_revalidated", status=report.status.value, before_run=before)
    return DumpRestoreResult(plan, differences, before, report)
