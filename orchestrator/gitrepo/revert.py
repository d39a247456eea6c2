"""Undoing a pushed release: the operator's revert commands, or one revert commit pushed."""

from __future__ import annotations

import shlex

import git

from orchestrator.errors import GuardError
from orchestrator.gitrepo.merge import MergeResult
from orchestrator.gitrepo.process import (
    NO_RERERE,
    GitOutput,
    git_output,
    is_ancestor,
    merge_failure,
    resolve_rev,
    run_git,
)
from orchestrator.gitrepo.remote import MissingBranch, fetch_branches, push_branch, remote_tip_of
from orchestrator.gitrepo.state import capture_state, enter_target, refuse_dirty, restoring


def revert_commands(remote: str, target: str, result: MergeResult) -> list[str]:
    """The shell commands an operator would run to revert the release on ``target``.

    A merge commit is reverted against its first parent (the previous target); a fast-forward
    has its range undone as one commit, as :func:`revert_release` does (``git revert A..B``
    stops at a merge commit inside it). A no-op release needs no commands: ``[]``.
    """
    if result.merge_commit is None and result.pushed_commit == result.previous_target_commit:
        return []
    r, t = shlex.quote(remote), shlex.quote(target)
    prev, pushed = result.previous_target_commit, result.pushed_commit
    revert = (
        f"git revert --no-edit -m 1 {result.merge_commit}"
        if result.merge_commit is not None
        else f"git cherry-pick \"$(git commit-tree '{prev}^{{tree}}' -p {pushed} "
        f"-m 'Revert release {prev[:12]}..{pushed[:12]}')\""
    )
    return [
        f"git fetch {r}",
        f"git checkout {t}",
        f"git merge --ff-only {r}/{t}",
        revert,
        f"git push {r} {t}",
    ]


def _default_revert_message(target: str, result: MergeResult) -> str:
    if result.merge_commit is not None:
        return (
            f"Revert release merge {result.merge_commit[:12]} on {target}\n\n"
            f"This reverts merge commit {result.merge_commit}, "
            f"reversing changes made to {result.previous_target_commit}."
        )
    return (
        f"Revert release {result.previous_target_commit[:12]}..{result.pushed_commit[:12]} "
        f"on {target}\n\n"
        f"This reverts commits {result.previous_target_commit}..{result.pushed_commit} "
        "as one commit."
    )


def _apply_revert(repo: git.Repo, result: MergeResult) -> GitOutput:
    """Stage the inverse of the release on top of HEAD (no commit yet)."""
    if result.merge_commit is not None:
        return run_git(
            repo.git, *NO_RERERE, "revert", "--no-commit", "-m", "1", result.merge_commit
        )
    # ``git revert A..B`` reverts commit by commit and fails on merge commits inside the range
    # (staging histories are full of them). Instead: one synthetic commit whose change is
    # "pushed tree -> previous tree", cherry-picked onto HEAD (a 3-way merge with base = pushed).
    undo = git_output(
        repo.git,
        "commit-tree",
        f"{result.previous_target_commit}^{{tree}}",
        "-p",
        result.pushed_commit,
        "-m",
        "orchestrator: inverse of the release",
        what="building the inverse of the release",
    ).strip()
    return run_git(repo.git, *NO_RERERE, "cherry-pick", "--no-commit", undo)


def _commit_revert(
    repo: git.Repo, result: MergeResult, where: str, tip: str, message: str | None, target: str
) -> str:
    """Commit the inverse of the release on the checked-out ``tip`` of ``where``; its hexsha.

    :class:`GuardError` when later commits conflict with it (files named) or ``where``
    already has the release reverted; the caller puts the clone back.
    """
    applied = _apply_revert(repo, result)
    if applied.status != 0:
        why = merge_failure(repo.git, applied)
        raise GuardError(f"reverting the release on {where} (now {tip[:12]}) {why}")
    if run_git(repo.git, "diff", "--cached", "--quiet").status == 0:
        raise GuardError(f"{where} already has the release reverted")
    git_output(
        repo.git,
        "commit",
        "--quiet",
        "-m",
        message or _default_revert_message(target, result),
        what="committing the revert",
    )
    return git_output(repo.git, "rev-parse", "HEAD").strip()


def _released_tip(repo: git.Repo, remote: str, target: str, result: MergeResult) -> str:
    """The fetched tip of ``<remote>/<target>``, checked to still contain the release: a clean clone
    that has both ends of it. :class:`GuardError` otherwise, or when the release changed nothing."""
    if result.merge_commit is None and result.pushed_commit == result.previous_target_commit:
        raise GuardError("the release changed nothing on the target; there is nothing to revert")
    refuse_dirty(repo)
    fetch_branches(repo, remote, [target])
    tip = remote_tip_of(repo, remote, target)
    for commit in (result.pushed_commit, result.previous_target_commit):
        if resolve_rev(repo.git, commit) is None:
            raise GuardError(f"commit {commit} is not in {repo.working_dir}")
    if not is_ancestor(repo.git, result.pushed_commit, tip):
        raise GuardError(
            f"{remote}/{target} no longer contains the released commit "
            f"{result.pushed_commit[:12]}; its history was rewritten"
        )
    return tip


def revert_release(
    repo: git.Repo, remote: str, target: str, result: MergeResult, *, message: str | None = None
) -> str:
    """Revert a pushed release on ``target`` as ONE new commit, push it; its hexsha.

    A merge commit is reverted against its first parent; a fast-forward has the whole range
    undone at once. Commits pushed to ``<remote>/<target>`` after the release are kept.
    :class:`GuardError` if there is nothing to revert, ``<remote>/<target>`` no longer contains
    the release, later commits conflict with the revert, or the push is rejected; the local
    clone is then put back as it was. On success the original branch is checked out again.
    """
    tip = _released_tip(repo, remote, target, result)
    state = capture_state(repo, target)
    with restoring(repo, state, target):
        enter_target(repo, state, remote, target, tip)
        reverted = _commit_revert(repo, result, f"{remote}/{target}", tip, message, target)
        push_branch(repo, remote, target)
    return reverted


def revert_release_on_branch(
    repo: git.Repo,
    remote: str,
    target: str,
    result: MergeResult,
    branch: str,
    *,
    message: str | None = None,
) -> str:
    """Revert a pushed release as ONE new commit on a new branch ``branch`` cut from
    ``<remote>/<target>``, and push that branch (not the target); the revert's hexsha.

    For targets that take changes only through pull requests: the caller opens one from
    ``branch``. The local ``target`` is not touched; the local ``branch`` is left at the
    revert (deleted again on failure). :class:`GuardError` as for :func:`revert_release`,
    or when ``branch`` exists on the remote with another tip than this revert (this one is
    returned: an earlier attempt pushed it, then failed to open its pull request).
    """
    tip = _released_tip(repo, remote, target, result)
    message = message or _default_revert_message(target, result)
    try:
        fetch_branches(repo, remote, [branch])
        pushed = remote_tip_of(repo, remote, branch)
        said = git_output(repo.git, "log", "-1", "--format=%B", pushed, what="reading it")
    except MissingBranch:
        pushed = said = ""
    if said.strip() == message.strip() and is_ancestor(repo.git, result.pushed_commit, pushed):
        return pushed
    if pushed:
        raise GuardError(f"branch {branch!r} already exists on {remote}, not with this revert")
    state = capture_state(repo, branch)  # the branch is what we create, and undo on failure
    with restoring(repo, state, branch):
        git_output(repo.git, "switch", "--quiet", "--no-track", "-C", branch, tip)
        reverted = _commit_revert(repo, result, f"{remote}/{target}", tip, message, target)
        push_branch(repo, remote, branch)
    return reverted
