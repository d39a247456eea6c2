"""The guard before a release: preflight, and trial merges in a throwaway worktree."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import git

from orchestrator.errors import GuardError
from orchestrator.gitrepo.process import (
    NO_RERERE,
    clean_message,
    is_ancestor,
    name_paths,
    resolve_rev,
    run_git,
    unmerged_paths,
)
from orchestrator.gitrepo.remote import fetch_branches, remote_tip_of
from orchestrator.gitrepo.state import refuse_dirty, refuse_unpushed

# The trial merge commits nothing, but ``git merge`` still insists on an identity; hooks and LFS
# downloads have no business running in a throwaway worktree.
_TRIAL_CONFIG = (
    *NO_RERERE,
    "-c",
    "user.name=orchestrator trial merge",
    "-c",
    "user.email=orchestrator@localhost",
    "-c",
    f"core.hooksPath={os.devnull}",
)
_TRIAL_ENV = {"GIT_LFS_SKIP_SMUDGE": "1"}


def _trial_merge_conflicts(repo: git.Repo, target_commit: str, source_commit: str) -> list[str]:
    """Merge ``source_commit`` into ``target_commit`` in a throwaway worktree; the conflicts.

    The operator's worktree, index, HEAD and branches are never touched: the worktree is
    detached (no branch is created), and it is removed and pruned whatever happens.
    """
    tmp = Path(tempfile.mkdtemp(prefix="orchestrator-trial-merge-"))
    worktree = tmp / "worktree"
    try:
        out = run_git(
            repo.git,
            *_TRIAL_CONFIG,
            "worktree",
            "add",
            "--quiet",
            "--detach",
            str(worktree),
            target_commit,
            env=_TRIAL_ENV,
        )
        if out.status != 0:
            raise GuardError(f"cannot create a trial-merge worktree: {clean_message(out.stderr)}")
        trial = git.Git(str(worktree))
        merge = run_git(
            trial, *_TRIAL_CONFIG, "merge", "--no-commit", "--no-ff", source_commit, env=_TRIAL_ENV
        )
        if merge.status == 0:
            return []
        if not (conflicts := unmerged_paths(trial)):
            raise GuardError(f"trial merge failed: {clean_message(merge.stderr or merge.stdout)}")
        return conflicts
    finally:
        run_git(repo.git, "worktree", "remove", "--force", "--force", str(worktree))
        shutil.rmtree(tmp, ignore_errors=True)
        run_git(repo.git, "worktree", "prune")


def preflight(
    repo: git.Repo, remote: str, source: str, target: str, *, pushes: bool = False
) -> TrialMerge:
    """:func:`trial_merge`, refusing a conflict too (:class:`GuardError` naming the files)."""
    trial = trial_merge(repo, remote, source, target, pushes=pushes)
    if trial.conflicts:
        raise GuardError(
            f"merging {remote}/{source} into {remote}/{target} conflicts in: "
            f"{name_paths(list(trial.conflicts))}"
        )
    return trial


@dataclass(frozen=True)
class TrialMerge:
    """What merging ``<remote>/<source>`` into ``<remote>/<target>`` would do (a rehearsal)."""

    source_commit: str  # hexsha of <remote>/<source>
    target_commit: str  # hexsha of <remote>/<target>
    fast_forward: bool  # target is an ancestor of source
    already_merged: bool  # source is an ancestor of target (nothing to merge)
    conflicts: tuple[str, ...]  # files that would conflict; empty when the merge is clean

    @property
    def outcome(self) -> str:
        """``already merged``, ``fast-forward``, ``merge commit`` or ``conflict``."""
        if self.conflicts:
            return "conflict"
        if self.already_merged:
            return "already merged"
        return "fast-forward" if self.fast_forward else "merge commit"


def trial_merge(
    repo: git.Repo, remote: str, source: str, target: str, *, pushes: bool = False
) -> TrialMerge:
    """Fetch ``source`` and ``target`` of ``remote`` and merge ``<remote>/<source>`` into
    ``<remote>/<target>`` in a throwaway worktree: pre-flight, and its rehearsal.

    The clone fetches, with its own remote, credentials and configuration: what the deploy
    can fetch, its rehearsal can. Nothing local changes except the remote-tracking refs.
    :class:`GuardError` if the working tree is dirty (modified or staged tracked files, or a
    merge/rebase underway; untracked files are NOT dirt), the remote is unknown or
    unreachable, either branch is missing on it (:class:`MissingBranch`), or, when the
    release is pushed from this clone (``pushes``), local ``target`` holds commits the merge
    would refuse to push: refused before anything changes.
    """
    refuse_dirty(repo)
    fetch_branches(repo, remote, [source, target])
    source_commit = remote_tip_of(repo, remote, source)
    target_commit = remote_tip_of(repo, remote, target)
    fast_forward = is_ancestor(repo.git, target_commit, source_commit)
    already_merged = is_ancestor(repo.git, source_commit, target_commit)
    local = resolve_rev(repo.git, f"refs/heads/{target}")
    if pushes and not already_merged and local != source_commit:
        # The release itself there (fast-forwarded by hand, or by a push cut short) is merged
        # again; see merge_and_push.
        refuse_unpushed(repo, local, remote, target, target_commit)
    conflicts: list[str] = []
    if not (fast_forward or already_merged):  # no merge conflicts when one contains the other
        conflicts = _trial_merge_conflicts(repo, target_commit, source_commit)
    return TrialMerge(source_commit, target_commit, fast_forward, already_merged, tuple(conflicts))
