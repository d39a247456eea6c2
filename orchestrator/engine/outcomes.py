"""The steps' outcomes as typed values. Only this module knows their keys in the run record.

A step's outcome is stored in ``state.json`` as plain JSON under the step's name (it must
survive the process, a crash and a resume). Everything that reads an outcome back (the
guards, the dead ends, resume's world check, the rollback plan, the steps themselves) reads
it through these views, never by string keys of its own: a renamed key is one edit here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.gitrepo import MergeResult
from orchestrator.runs import RunRecord

__all__ = [
    "BackupOutcome",
    "HaltOutcome",
    "MergeOutcome",
    "MigrateOutcome",
    "MonitorOutcome",
    "PreflightOutcome",
    "ReleaseOutcome",
    "ValidationOutcome",
]


def _raw(record: RunRecord, step: str) -> Mapping[str, Any]:
    value = record.steps.get(step)
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class PreflightOutcome:
    """What pre-flight found: the branches, the pinned commits, the trial merge."""

    ran: bool
    ok: bool
    remote: str
    source: str
    target: str
    source_commit: str | None
    target_commit: str | None
    via: str = "push"  # push | github_pr
    pull_request: int | None = None  # the pull request found or opened (github_pr)
    pull_request_url: str | None = None
    already_merged: bool = False  # the target held the release commit before the run

    @classmethod
    def of(cls, record: RunRecord) -> PreflightOutcome:
        raw = _raw(record, "preflight")
        return cls(
            ran=bool(raw),
            ok=bool(raw.get("ok")),
            remote=str(raw.get("remote") or "origin"),
            source=str(raw.get("source") or ""),
            target=str(raw.get("target") or ""),
            source_commit=_text(raw.get("source_commit")),
            target_commit=_text(raw.get("target_commit")),
            via=str(raw.get("via") or "push"),
            pull_request=_number(raw.get("pull_request")),
            pull_request_url=_text(raw.get("pull_request_url")),
            already_merged=bool(raw.get("already_merged")),
        )


@dataclass(frozen=True)
class NeonBranchBackup:
    """A ``neon_branch`` backup: the branch of production taken before migrating."""

    project_id: str
    production: str  # production's branch as the playbook names it (name or id)
    production_id: str
    branch_id: str
    branch_name: str
    lsn: str | None  # the LSN production was branched at

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> NeonBranchBackup:
        return cls(
            project_id=str(raw.get("project_id") or ""),
            production=str(raw.get("parent_branch") or ""),
            production_id=str(raw.get("parent_branch_id") or ""),
            branch_id=str(raw.get("branch_id") or ""),
            branch_name=str(raw.get("branch_name") or ""),
            lsn=_text(raw.get("lsn")),
        )


@dataclass(frozen=True)
class BackupOutcome:
    """The way back: a restore point, a dump, or a confirmation."""

    kind: str | None
    taken_at: str | None
    wal_lsn: str | None
    path: str | None
    sha256: str | None
    confirmed_at: str | None
    database: str | None
    raw: Mapping[str, Any]  # the whole record entry, for what is checked on disk

    @classmethod
    def of(cls, record: RunRecord) -> BackupOutcome:
        raw = _raw(record, "backup")
        return cls(
            kind=_text(raw.get("kind")),
            taken_at=_text(raw.get("taken_at")),
            wal_lsn=_text(raw.get("wal_lsn")),
            path=_text(raw.get("path")),
            sha256=_text(raw.get("sha256")),
            confirmed_at=_text(raw.get("confirmed_at")),
            database=_text(raw.get("database")),
            raw=raw,
        )

    @property
    def neon(self) -> NeonBranchBackup | None:
        """The Neon branch, when the backup is one."""
        return NeonBranchBackup.of(self.raw) if self.kind == "neon_branch" else None


@dataclass(frozen=True)
class ValidationOutcome:
    """A verdict as recorded by validate or revalidate."""

    status: str | None
    recommendation: str
    pending: tuple[str, ...]

    @classmethod
    def of(cls, record: RunRecord, step: str = "validate") -> ValidationOutcome:
        raw = _raw(record, step)
        return cls(
            status=_text(raw.get("status")),
            recommendation=str(raw.get("recommendation") or ""),
            pending=tuple(str(t) for t in raw.get("pending") or ()),
        )


@dataclass(frozen=True)
class MigrateOutcome:
    """What the migrate step applied (``ended``: the step ran to its end)."""

    ended: bool
    applied: tuple[str, ...]

    @classmethod
    def of(cls, record: RunRecord) -> MigrateOutcome:
        raw = _raw(record, "migrate")
        applied = raw.get("applied")
        return cls(
            ended=applied is not None,
            applied=tuple(str(a.get("tag")) for a in applied or () if isinstance(a, Mapping)),
        )


@dataclass(frozen=True)
class MergeOutcome:
    """The pushed release: the new tip, the merge commit, the tip before."""

    pushed_commit: str | None
    merge_commit: str | None
    previous_target_commit: str | None
    fast_forward: bool
    raw: Mapping[str, Any]
    pull_request: int | None = None  # merged through this pull request (github_pr)

    def as_result(self) -> MergeResult:
        """The pushed release as git's view of it (what a revert needs)."""
        return MergeResult(
            pushed_commit=self.pushed_commit or "",
            previous_target_commit=self.previous_target_commit or "",
            merge_commit=self.merge_commit,
            fast_forward=self.fast_forward,
        )

    @classmethod
    def of(cls, record: RunRecord) -> MergeOutcome:
        raw = _raw(record, "merge")
        return cls(
            pushed_commit=_text(raw.get("pushed_commit")),
            merge_commit=_text(raw.get("merge_commit")),
            previous_target_commit=_text(raw.get("previous_target_commit")),
            fast_forward=bool(raw.get("fast_forward")),
            raw=raw,
            pull_request=_number(raw.get("pull_request")),
        )


@dataclass(frozen=True)
class ReleaseOutcome:
    """What the release gate saw: whether the pushed commit went live, and where."""

    ran: bool
    gate: str  # none (no release: block), url or vercel
    commit: str | None  # the commit waited for
    live: bool
    ending: str | None  # live, failed or timeout
    detail: str
    deployment_url: str | None
    deployment_state: str | None

    @classmethod
    def of(cls, record: RunRecord) -> ReleaseOutcome:
        raw = _raw(record, "release")
        return cls(
            ran=bool(raw),
            gate=str(raw.get("gate") or "none"),
            commit=_text(raw.get("commit")),
            live=raw.get("live") is True,
            ending=_text(raw.get("ending")),
            detail=str(raw.get("detail") or ""),
            deployment_url=_text(raw.get("deployment_url")),
            deployment_state=_text(raw.get("deployment_state")),
        )


@dataclass(frozen=True)
class MonitorOutcome:
    """What the monitor window saw."""

    healthy: bool
    failures: int | None
    failures_allowed: int | None
    first_failure: tuple[str, str] | None  # (check, detail)

    @classmethod
    def of(cls, record: RunRecord) -> MonitorOutcome:
        raw = _raw(record, "monitor")
        failed = [f for f in raw.get("failed_checks") or () if isinstance(f, Mapping)]
        first = (str(failed[0].get("check")), str(failed[0].get("detail"))) if failed else None
        return cls(
            healthy=bool(raw.get("healthy")),
            failures=_number(raw.get("failures")),
            failures_allowed=_number(raw.get("failures_allowed")),
            first_failure=first,
        )


@dataclass(frozen=True)
class HaltOutcome:
    """Where and why a run stopped."""

    stopped_in: str | None
    reason: str | None

    @classmethod
    def of(cls, record: RunRecord) -> HaltOutcome:
        raw = _raw(record, "halt")
        return cls(stopped_in=_text(raw.get("from")), reason=_text(raw.get("reason")))

    @staticmethod
    def entry(state: str, reason: str, at: str) -> dict[str, Any]:
        """The record entry of a halt in ``state``."""
        return {"from": state, "reason": reason, "at": at}


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _number(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
