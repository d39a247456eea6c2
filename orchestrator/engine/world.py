"""Has the world moved under an interrupted run? Checked before ``resume`` continues it.

A run pins what it works on: the source commit (pre-flight), the target commit it will merge
into, the hashes tracked before it changed anything and the migrations it planned to apply
(its first validate). Resuming is only safe if nobody else changed those meanwhile; otherwise
the operator must look, and ``resume`` refuses with the reasons (exit 2, nothing changed).

:func:`changes_since` is the pure judgement; :func:`observe` reads the world (git, database).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass

import git

from orchestrator.drizzle.journal import Journal
from orchestrator.engine.outcomes import MergeOutcome, PreflightOutcome
from orchestrator.engine.settings import journal_at, validate_per_playbook
from orchestrator.errors import DatabaseError, UsageError
from orchestrator.gitrepo import MissingBranch, contains, fetched_contains, open_repo, remote_tips
from orchestrator.gitrepo.history import undone
from orchestrator.platforms.github import github_api
from orchestrator.platforms.http import ApiError
from orchestrator.playbook import Playbook
from orchestrator.runs import RunRecord
from orchestrator.validation import Verdict


@dataclass(frozen=True)
class WorldNow:
    """What a resumed run re-reads before continuing."""

    source_tip: str | None  # <remote>/<source> now; None: the branch is gone
    target_tip: str  # <remote>/<target> now
    # The release is already in <remote>/<target>: its tip carries the pinned source commit,
    # or the commit the run's merge made (a squash or rebase commit does not contain the former).
    source_merged: bool
    row_hashes: tuple[str, ...]  # the hash of each tracking row now


def changes_since(record: RunRecord, now: WorldNow) -> list[str]:
    """Why ``record`` cannot safely continue in the world ``now`` (empty: it can). Pure."""
    reasons: list[str] = []
    pinned = record.source_commit
    preflight = record.steps.preflight or PreflightOutcome()
    if pinned is None:
        return reasons  # nothing pinned yet: the run starts from pre-flight again
    if not now.source_merged:
        if now.source_tip is None:
            reasons.append(f"the source branch {preflight.source} is gone from the remote")
        elif now.source_tip != pinned:
            reasons.append(
                f"the source branch {preflight.source} has new commits "
                f"(pinned {pinned[:12]}, now {now.source_tip[:12]})"
            )
        planned_target = preflight.target_commit
        if planned_target and now.target_tip != planned_target:
            reasons.append(
                f"the target branch {preflight.target} was pushed by someone else "
                f"(was {str(planned_target)[:12]}, now {now.target_tip[:12]})"
            )
    if record.steps.validation is not None and record.steps.validation.deployable:
        # Counted: one more row of a text that was already tracked is someone else's too.
        expected = Counter([*record.tracked_before, *(p.hash for p in record.planned)])
        if foreign := sorted((Counter(now.row_hashes) - expected).elements()):
            shown = ", ".join(h[:12] + "…" for h in foreign[:3])
            reasons.append(
                f"the database shows {len(foreign)} migration(s) this run did not plan "
                f"(tracked hashes {shown})"
            )
    return reasons


def observe(
    playbook: Playbook, record: RunRecord, url: str, environ: Mapping[str, str]
) -> WorldNow | None:
    """Fetch the branches and read the tracking table; ``None`` if nothing is pinned yet.

    The release counts as merged when the target holds the pinned source commit, the commit
    the run's merge recorded, or (merged through a pull request, perhaps by the interrupted
    attempt or by hand with squash or rebase) the commit GitHub says that merge made, and its
    tip ships exactly its migrations (:func:`carries_release`); then the source may be gone.

    :class:`DatabaseError` (exit 30) when the database cannot be read.
    """
    if record.source_commit is None:
        return None
    spec = playbook.git
    repo = open_repo(spec.repo)
    tips = remote_tips(repo, spec.remote, [spec.target])
    with suppress(MissingBranch):  # the source may be gone once merged (a deleted head branch)
        tips |= remote_tips(repo, spec.remote, [spec.source])
    journal = journal_at(repo, record.source_commit, playbook.migrations.dir, spec.source)
    report = validate_per_playbook(playbook, environ, url, journal)
    if report.status is Verdict.ERROR:
        reason = report.first_error(report.recommendation)
        raise DatabaseError(f"cannot check the database before resuming: {reason}")
    tip, merge = tips[spec.target], record.steps.merge or MergeOutcome()
    before, pushed = merge.previous_target_commit, merge.pushed_commit
    return WorldNow(
        source_tip=tips.get(spec.source),
        target_tip=tip,
        # The target was fetched just now: its journal is read once, ancestry asked per commit.
        source_merged=ships_release(playbook, repo, journal, tip)
        and any(
            contains(repo, tip, commit)
            for commit in (record.source_commit, *_merge_commits(playbook, record, environ))
            if commit
        )
        and not (before and pushed and undone(repo, before, pushed, tip)),
        row_hashes=report.row_hashes,
    )


def carries_release(
    playbook: Playbook, repo: git.Repo, release: Journal, tip: str, commit: str, before: str | None
) -> bool:
    """Whether ``tip`` (the target's, or a commit production serves) carries the release
    pushed as ``commit`` onto ``before`` (when recorded): git, after a fetch of the target,
    says it contains ``commit``, its journal holds exactly the migration tags of ``release``,
    and not every file the release changed is as before it (ancestry cannot see a revert).
    Resume asks it here; the guards and the release gate ask it of the target as they go."""
    spec = playbook.git
    return (
        fetched_contains(repo, spec.remote, spec.target, tip, commit)
        and ships_release(playbook, repo, release, tip)
        and not (before and undone(repo, before, commit, tip))
    )


def ships_release(playbook: Playbook, repo: git.Repo, release: Journal, tip: str) -> bool:
    """Whether the journal at commit ``tip`` holds exactly the migration tags of ``release``."""
    try:
        shipped = journal_at(repo, tip, playbook.migrations.dir, playbook.git.target)
    except UsageError:
        return False
    return [m.tag for m in shipped.migrations] == [m.tag for m in release.migrations]


def _merge_commits(
    playbook: Playbook, record: RunRecord, environ: Mapping[str, str]
) -> list[str | None]:
    """The commit the run's merge recorded, else the one GitHub says the run's pull request
    was merged as (asked only when it went through one and nothing was recorded)."""
    pushed = (record.steps.merge or MergeOutcome()).pushed_commit
    number = (record.steps.preflight or PreflightOutcome()).pull_request
    if pushed or number is None or playbook.git.via != "github_pr":
        return [pushed]
    try:
        pr = github_api(playbook, environ).get_pull(number)
    except ApiError:  # GitHub does not answer: only git's view counts (the target moved?)
        return [pushed]
    return [pr.merge_commit_sha if pr.merged else None]
