"""The steps' outcomes as typed values. Only this module knows their keys in the run record.

A step's outcome is stored in ``state.json`` as plain JSON under the step's name (it must
survive the process, a crash and a resume). Everything that reads an outcome back (the
guards, the dead ends, resume's world check, the rollback plan, the steps themselves) reads
it through these views, never by string keys of its own: a renamed key is one edit here.
Each view reads a record (``of``) or an outcome alone (``parse``, e.g. from an audit event);
the steps build what they record through the views' ``entry`` constructors. Missing keys read
as empty, so the ``state.json`` of an older run stays readable.
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
    merge_method: str = "merge"  # how GitHub merges the pull request (github_pr)

    @classmethod
    def of(cls, record: RunRecord) -> PreflightOutcome:
        """Pre-flight's outcome in ``record``."""
        return cls.parse(_raw(record, "preflight"))

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> PreflightOutcome:
        """A pre-flight outcome as recorded."""
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
            merge_method=str(raw.get("merge_method") or "merge"),
        )

    @staticmethod
    def entry(
        *,
        repo: str,
        remote: str,
        source: str,
        target: str,
        via: str,
        source_commit: str,
        target_commit: str,
        fast_forward: bool,
        already_merged: bool,
        migrations_dir: str,
        migrations: list[str],
    ) -> dict[str, Any]:
        """The record entry of a pre-flight that passed."""
        return {
            "ok": True,
            "repo": repo,
            "remote": remote,
            "source": source,
            "target": target,
            "via": via,
            "source_commit": source_commit,
            "target_commit": target_commit,
            "fast_forward": fast_forward,
            "already_merged": already_merged,
            "migrations_dir": migrations_dir,
            "migrations": migrations,
        }

    @staticmethod
    def pull_request_entry(
        number: int,
        url: str,
        *,
        opened: bool,
        mergeable_state: str | None,
        merge_method: str | None = None,
    ) -> dict[str, Any]:
        """What pre-flight adds for ``git.via: github_pr``: the pull request found or opened,
        and the merge method chosen for it."""
        return {
            "pull_request": number,
            "pull_request_url": url,
            "pull_request_opened": opened,
            "mergeable_state": mergeable_state,
            "merge_method": merge_method,
        }


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
        """The Neon branch of a backup outcome as recorded."""
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
        """The backup's outcome in ``record``."""
        return cls.parse(_raw(record, "backup"))

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> BackupOutcome:
        """A backup outcome as recorded."""
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
        """The verdict ``step`` (validate or revalidate) recorded in ``record``."""
        return cls.parse(_raw(record, step))

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> ValidationOutcome:
        """A verdict as recorded."""
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
    skipped: str | None = None  # why nothing was applied (validate said SAFE)

    @classmethod
    def of(cls, record: RunRecord) -> MigrateOutcome:
        """The migrate step's outcome in ``record``."""
        return cls.parse(_raw(record, "migrate"))

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> MigrateOutcome:
        """A migrate outcome as recorded."""
        applied = raw.get("applied")
        return cls(
            ended=applied is not None,
            applied=tuple(str(a.get("tag")) for a in applied or () if isinstance(a, Mapping)),
            skipped=_text(raw.get("skipped")),
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
    pull_request_url: str | None = None

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
        """The merge step's outcome in ``record``."""
        return cls.parse(_raw(record, "merge"))

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> MergeOutcome:
        """A merge outcome as recorded."""
        return cls(
            pushed_commit=_text(raw.get("pushed_commit")),
            merge_commit=_text(raw.get("merge_commit")),
            previous_target_commit=_text(raw.get("previous_target_commit")),
            fast_forward=bool(raw.get("fast_forward")),
            raw=raw,
            pull_request=_number(raw.get("pull_request")),
            pull_request_url=_text(raw.get("pull_request_url")),
        )

    @staticmethod
    def entry(
        *,
        pushed_commit: str,
        previous_target_commit: str,
        merge_commit: str | None,
        fast_forward: bool,
        pull_request: tuple[int, str] | None = None,
        merge_method: str | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """The record entry of a pushed release; ``pull_request``: (number, url) when it was
        merged through one (``git.via: github_pr``), with ``merge_method``; ``note``: how
        resume found it. ``pushed_commit`` is the release from then on: what GitHub's merge
        made (a squash or rebase commit does not contain the source commit)."""
        entry: dict[str, Any] = {}
        if pull_request is not None:
            number, url = pull_request
            entry.update({"via": "github_pr", "pull_request": number, "pull_request_url": url})
            entry["merge_method"] = merge_method
        entry.update(
            {
                "pushed_commit": pushed_commit,
                "previous_target_commit": previous_target_commit,
                "merge_commit": merge_commit,
                "fast_forward": fast_forward,
            }
        )
        if note is not None:
            entry["note"] = note
        return entry


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
        """The release gate's outcome in ``record``."""
        return cls.parse(_raw(record, "release"))

    @staticmethod
    def entry(
        gate: str, ending: str, seen: Mapping[str, Any], timeout_s: float | None = None
    ) -> dict[str, Any]:
        """The record entry of the gate: how it ended and what it last saw (``seen``: the
        commit waited for, the detail, and for a real gate the deployment and the wait)."""
        entry: dict[str, Any] = {"gate": gate, "live": ending == "live", "ending": ending, **seen}
        if timeout_s is not None:
            entry["timeout_s"] = timeout_s
        return entry

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> ReleaseOutcome:
        """A release gate outcome as recorded."""
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
    rounds: int | None = None

    @classmethod
    def of(cls, record: RunRecord) -> MonitorOutcome:
        """The monitor's outcome in ``record``."""
        return cls.parse(_raw(record, "monitor"))

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> MonitorOutcome:
        """A monitor outcome as recorded."""
        failed = [f for f in raw.get("failed_checks") or () if isinstance(f, Mapping)]
        first = (str(failed[0].get("check")), str(failed[0].get("detail"))) if failed else None
        return cls(
            healthy=bool(raw.get("healthy")),
            failures=_number(raw.get("failures")),
            failures_allowed=_number(raw.get("failures_allowed")),
            first_failure=first,
            rounds=_number(raw.get("rounds")),
        )

    @staticmethod
    def entry(
        *,
        healthy: bool,
        rounds: int,
        failures: int,
        failures_allowed: int,
        ended_early: bool,
        elapsed_s: float,
        failed_checks: list[tuple[str, str]],
    ) -> dict[str, Any]:
        """The record entry of a monitor window; ``failed_checks``: (check, detail) pairs."""
        return {
            "healthy": healthy,
            "rounds": rounds,
            "failures": failures,
            "failures_allowed": failures_allowed,
            "ended_early": ended_early,
            "elapsed_s": elapsed_s,
            "failed_checks": [{"check": c, "detail": d} for c, d in failed_checks],
        }


@dataclass(frozen=True)
class HaltOutcome:
    """Where and why a run stopped."""

    stopped_in: str | None
    reason: str | None

    @classmethod
    def of(cls, record: RunRecord) -> HaltOutcome:
        """Where and why ``record``'s run last stopped."""
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
