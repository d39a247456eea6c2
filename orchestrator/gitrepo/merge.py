"""The release itself: merge the source into the target, push it, and check it landed."""

from __future__ import annotations

from dataclasses import dataclass

import git

from orchestrator.errors import GuardError
from orchestrator.gitrepo.history import fetched_contains
from orchestrator.gitrepo.process import (
    NO_RERERE,
    git_output,
    is_ancestor,
    merge_failure,
    remote_ref,
    resolve_rev,
    run_git,
)
from orchestrator.gitrepo.remote import fetch_branches, push_branch, remote_tip_of
from orchestrator.gitrepo.state import capture_state, enter_target, refuse_dirty, restoring


@dataclass(frozen=True)
class MergeResult:
    """What ``merge_and_push`` pushed; enough to verify or revert the release later."""

    pushed_commit: str  # new tip of <remote>/<target>
    previous_target_commit: str  # tip before our push
    merge_commit: str | None  # the merge commit we created; None for a fast-forward / no-op
    fast_forward: bool
    # The local target an interrupted push of this release left ahead of the remote (put back
    # at the remote's tip, then merged again); None when there was none.
    continued_from: str | None = None


def merge_and_push(
    repo: git.Repo, remote: str, source_commit: str, target: str, *, message: str
) -> MergeResult:
    """Merge ``source_commit`` into ``target`` and push ``target`` to ``remote``.

    Fast-forwards when possible, otherwise creates a merge commit with ``message``. A source
    already contained in ``<remote>/<target>`` is a no-op (nothing pushed). :class:`GuardError`
    on a dirty tree, a local ``target`` with commits not on ``<remote>/<target>``, a merge
    conflict (files named) or a rejected push; in each of those cases the local branches,
    index, working tree and checked-out branch are put back as they were. On success the
    original branch is checked out again and local ``target`` is left at the pushed commit.

    A local ``target`` ahead of the remote only by this release's own merge (a run killed
    mid-push) is merged again rather than refused, unless the clone's reflog of
    ``<remote>/<target>`` shows it pushed: the remote then lost the release to someone's
    reset, which is theirs to undo, not ours to push over.
    """
    refuse_dirty(repo)
    fetch_branches(repo, remote, [target])
    previous = remote_tip_of(repo, remote, target)
    if (source := resolve_rev(repo.git, source_commit)) is None:
        raise GuardError(f"commit {source_commit} is not in {repo.working_dir}; fetch it first")
    if is_ancestor(repo.git, source, previous):
        return MergeResult(previous, previous, merge_commit=None, fast_forward=True)
    state = capture_state(repo, target)
    continued_from = None
    if (
        state.target_tip is not None
        and not _pushed_from_here(repo, remote, target, state.target_tip)
        and _own_unpushed(repo, state.target_tip, previous, source, message)
    ):
        # A run killed mid-push left local <target> at its own merge result: put it back at
        # <remote>/<target> (the tree is clean) and merge again. Anyone else's commits there
        # are still refused by enter_target.
        if state.branch == target:
            git_output(repo.git, "reset", "--quiet", "--hard", previous)
        else:
            git_output(repo.git, "branch", "--quiet", "--force", target, previous)
        continued_from = state.target_tip
        state = capture_state(repo, target)
    with restoring(repo, state, target):
        enter_target(repo, state, remote, target, previous)
        fast_forward = is_ancestor(repo.git, previous, source)
        if fast_forward:
            git_output(
                repo.git, "merge", "--quiet", "--ff-only", source, what=f"fast-forwarding {target}"
            )
        else:
            # No editor: run_git's environment says so (GIT_MERGE_AUTOEDIT=no).
            merge = run_git(
                repo.git, *NO_RERERE, "merge", "--quiet", "--no-ff", "-m", message, source
            )
            if merge.status != 0:
                why = merge_failure(repo.git, merge)
                raise GuardError(f"merging {source[:12]} into {target} {why}")
        pushed = git_output(repo.git, "rev-parse", "HEAD").strip()
        push_branch(repo, remote, target)
    return MergeResult(
        pushed_commit=pushed,
        previous_target_commit=previous,
        merge_commit=None if fast_forward else pushed,
        fast_forward=fast_forward,
        continued_from=continued_from,
    )


def _pushed_from_here(repo: git.Repo, remote: str, target: str, tip: str) -> bool:
    """Whether the clone's reflog of ``<remote>/<target>`` shows ``tip`` pushed from here."""
    pushes = run_git(repo.git, "log", "-g", "--format=%H %gs", remote_ref(remote, target))
    return f"{tip} update by push" in pushes.stdout.splitlines()


def _own_unpushed(repo: git.Repo, tip: str, remote_tip: str, source: str, message: str) -> bool:
    """Whether local ``<target>`` at ``tip`` (ahead of ``remote_tip``) is exactly what this
    release's merge makes: a fast-forward to ``source``, or a merge commit of ``source`` into
    an earlier remote tip carrying ``message`` (which names the run)."""
    if tip == source:
        return True
    commit = repo.commit(tip)
    parents = [p.hexsha for p in commit.parents]
    return (
        parents[1:] == [source]
        and is_ancestor(repo.git, parents[0], remote_tip)
        and str(commit.message).strip() == message.strip()
    )


def is_merged(repo: git.Repo, remote: str, target: str, source_commit: str) -> bool:
    """Whether ``<remote>/<target>`` (freshly fetched) contains ``source_commit``."""
    return fetched_contains(repo, remote, target, remote_ref(remote, target), source_commit)
