"""Validate, migrate and revalidate: the core's validator and migrator as deploy steps."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from orchestrator.engine.observations import LiveObservations, validate
from orchestrator.engine.outcomes import (
    AppliedMigration,
    Finding,
    MigrateOutcome,
    ValidationOutcome,
)
from orchestrator.engine.steps.base import RunContext
from orchestrator.errors import GuardError
from orchestrator.migrate import migrate_database
from orchestrator.runs import PlannedMigration
from orchestrator.validation import ValidationReport, Verdict


def summarize(report: ValidationReport) -> ValidationOutcome:
    """The part of a validation report worth keeping in the run record."""
    return ValidationOutcome(
        status=report.status.value,
        states={m.tag: m.state.value for m in report.migrations},
        pending=[m.tag for m in report.pending],
        findings=[Finding.model_validate(f, from_attributes=True) for f in report.findings],
        recommendation=report.recommendation,
    )


@dataclass(frozen=True)
class ValidateStep:
    """Read-only: the verdict that routes the run (SAFE skips migrate, NEEDS migrates)."""

    name: str = "validate"

    def run(self, ctx: RunContext) -> ValidationOutcome:
        report = validate(ctx)
        first = ctx.record.steps.validation
        if self.name == "validate" and (first is None or not first.deployable):
            # The run's first look fixes what it will do; resume checks the world against it.
            ctx.record.planned = [PlannedMigration(tag=m.tag, hash=m.hash) for m in report.pending]
            ctx.record.tracked_before = sorted(report.row_hashes)
        for finding in report.findings:
            ctx.log.info("finding", **asdict(finding))
        return summarize(report)

    def done(self, ctx: RunContext) -> ValidationOutcome | None:
        return None  # read-only: always look again


@dataclass(frozen=True)
class RevalidateStep(ValidateStep):
    """After migrating, the database must be SAFE or the run halts."""

    name: str = "revalidate"


@dataclass(frozen=True)
class MigrateStep:
    """Apply pending migrations (after confirmation); a no-op when validate said SAFE."""

    name: str = "migrate"

    def run(self, ctx: RunContext) -> MigrateOutcome:
        verdict = ctx.record.steps.validation
        if verdict is not None and verdict.status == Verdict.SAFE.value:
            return MigrateOutcome(skipped="validate said SAFE")

        def confirm(report: ValidationReport) -> bool:
            tags = ", ".join(m.tag for m in report.pending)
            if not ctx.confirm(f"Apply {tags} to the production database"):
                raise GuardError("the operator declined the migration: nothing was changed")
            return True

        result = migrate_database(
            ctx.database_url,
            ctx.journal,
            ctx.migrate_options,
            confirm=confirm,
            shadow=ctx.shadow,
            retry=ctx.retry,
            on_retry=ctx.on_retry,
            on_migration=lambda m: ctx.log.info("applying_migration", tag=m.tag),
            take_run_lock=False,  # the run holds it for all its database work
            # In the audit trail (with the blockers): the console prints it on stderr.
            on_lock_retry=lambda event: ctx.log.warning("lock_retry", **event.to_json()),
            on_note=lambda note: _note(ctx, note),
        )
        # An attempt stopped partway recorded what it committed: this one applied the rest.
        earlier = (ctx.record.steps.migrate or MigrateOutcome()).applied
        now = [AppliedMigration.model_validate(a, from_attributes=True) for a in result.applied]
        return MigrateOutcome(applied=[*earlier, *now], after=result.after.status.value)

    def done(self, ctx: RunContext) -> MigrateOutcome | None:
        # Postcondition, the migration_recorded guard's own check: the database tracks every
        # migration the run planned. The migrator writes a tracking row with its statements
        # (a non-transactional one's last, once all succeeded), so a tracked migration
        # completed: nothing is re-applied (whether the schema is right is revalidate's call).
        found = self.committed(ctx)
        whole = found is not None and len(found.applied) == len(ctx.record.planned)
        return found if whole else None

    def committed(self, ctx: RunContext) -> MigrateOutcome | None:
        """The run's planned migrations the database tracks now (rows counted as validate
        counts them), None if none: what a stopped attempt committed; with ``concurrent:
        true`` perhaps only the transactional ones before a non-transactional migration."""
        planned = ctx.record.planned
        untracked = LiveObservations(ctx).untracked() if planned else frozenset()
        journal = {m.tag: m for m in ctx.journal.migrations}
        applied = [
            AppliedMigration(tag=p.tag, hash=p.hash, created_at=journal[p.tag].when)
            for p in planned
            if p.tag in journal and p.tag not in untracked
        ]
        note = "found applied: a stopped attempt committed it"
        return MigrateOutcome(applied=applied, note=note) if applied else None


def _note(ctx: RunContext, note: str) -> None:
    """Something the non-transactional phase skipped or cleaned up."""
    ctx.log.info("migrate_note", message=note)
    ctx.on_progress(note)
