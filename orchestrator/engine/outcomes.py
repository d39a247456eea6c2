"""What each step of a run records: one pydantic model per step outcome.

A run keeps its steps' outcomes in ``state.json`` (:class:`StepOutcomes`, under the step's
name) so they survive the process, a crash and a resume. The steps build these models, the
record saves them as JSON and reads them back validated, and every reader (the guards, the
dead ends, resume's world check, the rollback plan, the steps, the CLI) reads typed
attributes. Missing keys and nulls take their defaults and unknown keys are ignored, so the
``state.json`` of an older run stays readable; a value of the wrong type is refused.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestrator.gitrepo import MergeResult


class Outcome(BaseModel):
    """What one step recorded (a value: steps build a new one, never change it)."""

    model_config = ConfigDict(strict=True, frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _null_as_missing(cls, data: Any) -> Any:
        """A null (as earlier versions wrote for a value not known) reads as its default."""
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


class PreflightOutcome(Outcome):
    """What pre-flight found: the branches, the pinned commits, the trial merge; with
    ``git.via: github_pr`` the pull request found or opened and its merge method."""

    ok: bool = False
    repo: str | None = None
    remote: str = "origin"
    source: str = ""
    target: str = ""
    via: str = "push"  # push | github_pr
    source_commit: str | None = None
    target_commit: str | None = None
    fast_forward: bool = False
    already_merged: bool = False  # the target held the release commit before the run
    migrations_dir: str | None = None
    migrations: list[str] = []
    pull_request: int | None = None
    pull_request_url: str | None = None
    pull_request_opened: bool = False
    mergeable_state: str | None = None
    merge_method: str = "merge"  # how GitHub merges the pull request


class BackupOutcome(Outcome):
    """The way back: a restore point, a dump, a Neon branch, or a confirmation."""

    kind: str | None = None  # restore_point | pg_dump | neon_branch | manual
    taken_at: str | None = None
    wal_lsn: str | None = None
    server_version: str | None = None
    database_size_bytes: int | None = None
    database: str | None = None
    # pg_dump: the dump on disk, its digest, and whether a killed attempt's dump was adopted
    path: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    toc_entries: int | None = None
    adopted: bool = False
    # manual: when and by whom (operator, --backup-confirmed) the backup was vouched for
    confirmed_at: str | None = None
    by: str | None = None
    # neon_branch: the branch of production (as the playbook names it, and its id) taken
    # at the LSN before migrating
    project_id: str | None = None
    branch_id: str | None = None
    branch_name: str | None = None
    parent_branch: str | None = None
    parent_branch_id: str | None = None
    lsn: str | None = None


class Finding(Outcome):
    """One finding of a validation."""

    code: str
    migration: str | None = None
    message: str


class ValidationOutcome(Outcome):
    """A verdict as validate or revalidate recorded it."""

    status: str | None = None
    states: dict[str, str] = {}  # tag -> migration state
    pending: list[str] = []
    findings: list[Finding] = []
    recommendation: str = ""

    @property
    def deployable(self) -> bool:
        """SAFE or NEEDS_MIGRATION: a verdict that fixes what the run will do."""
        return self.status in ("SAFE", "NEEDS_MIGRATION")


class AppliedMigration(Outcome):
    """One migration the migrate step applied."""

    tag: str
    hash: str | None = None
    created_at: int | None = None  # the journal's millis, as the tracking table holds it


class MigrateOutcome(Outcome):
    """What the migrate step applied (recorded once it ran to its end)."""

    applied: list[AppliedMigration] = []
    after: str | None = None  # the verdict right after migrating
    skipped: str | None = None  # why nothing was applied (validate said SAFE)
    note: str | None = None  # how resume found it

    @property
    def tags(self) -> list[str]:
        """The applied migrations' tags, in order."""
        return [a.tag for a in self.applied]


class MergeOutcome(Outcome):
    """The pushed release: the new tip (what GitHub's merge made, through a pull request),
    the merge commit, the tip before."""

    pushed_commit: str | None = None
    previous_target_commit: str | None = None
    merge_commit: str | None = None
    fast_forward: bool = False
    via: str | None = None  # github_pr when merged through a pull request
    pull_request: int | None = None
    pull_request_url: str | None = None
    merge_method: str | None = None
    note: str | None = None  # how resume found it

    def as_result(self) -> MergeResult:
        """The pushed release as git's view of it (what a revert needs)."""
        return MergeResult(
            pushed_commit=self.pushed_commit or "",
            previous_target_commit=self.previous_target_commit or "",
            merge_commit=self.merge_commit,
            fast_forward=self.fast_forward,
        )


class ReleaseOutcome(Outcome):
    """What the release gate saw: whether the pushed commit went live, and where."""

    gate: str = "none"  # none (no release: block), url or vercel
    live: bool = False
    ending: str | None = None  # live, failed or timeout
    commit: str | None = None  # the commit waited for
    live_commit: str | None = None  # ours, a newer one containing it, or what is served
    detail: str = ""
    deployment_url: str | None = None
    deployment_state: str | None = None
    deployment_id: str | None = None
    waited_s: float | None = None
    polls: int | None = None
    timeout_s: float | None = None


class FailedCheck(Outcome):
    """A check that failed in the monitor window."""

    check: str
    detail: str


class MonitorOutcome(Outcome):
    """What the monitor window saw."""

    healthy: bool = False
    rounds: int | None = None
    failures: int | None = None
    failures_allowed: int | None = None
    ended_early: bool = False
    elapsed_s: float | None = None
    failed_checks: list[FailedCheck] = []


class HaltOutcome(Outcome):
    """Where and why a run last stopped."""

    stopped_in: str | None = Field(
        default=None, validation_alias="from", serialization_alias="from"
    )
    reason: str | None = None
    at: str | None = None
    # The target no longer held the run's push (reset off it, or reverted), seen at the halt.
    release_gone: bool = False


class RollbackOutcome(Outcome):
    """The release reverted by ``rollback``: pushed, or through a pull request."""

    reverted_commit: str
    pull_request_url: str | None = None
    at: str


class DatabaseRestoreOutcome(Outcome):
    """The database restored by ``rollback --restore-database``: a Neon branch restored
    from the backup branch, or a dump restored (and whether it matches the dump)."""

    at: str
    branch_id: str | None = None
    source_branch_id: str | None = None
    source_lsn: str | None = None
    preserved_as: str | None = None
    database: str | None = None
    dump: str | None = None
    sha256: str | None = None
    matches_dump: bool | None = None


class StepOutcomes(BaseModel):
    """Each step's outcome in a run, ``None`` until the step recorded one."""

    model_config = ConfigDict(strict=True, validate_assignment=True, populate_by_name=True)

    preflight: PreflightOutcome | None = None
    backup: BackupOutcome | None = None
    # "validate" on disk, the step's name (as an attribute it would shadow BaseModel's)
    validation: ValidationOutcome | None = Field(
        default=None, validation_alias="validate", serialization_alias="validate"
    )
    migrate: MigrateOutcome | None = None
    revalidate: ValidationOutcome | None = None
    merge: MergeOutcome | None = None
    release: ReleaseOutcome | None = None
    monitor: MonitorOutcome | None = None
    halt: HaltOutcome | None = None
    rollback: RollbackOutcome | None = None
    database_restore: DatabaseRestoreOutcome | None = None

    def record(self, step: str, outcome: Outcome) -> None:
        """Record ``outcome`` as step ``step``'s; a model of another step's kind is refused."""
        setattr(self, "validation" if step == "validate" else step, outcome)
