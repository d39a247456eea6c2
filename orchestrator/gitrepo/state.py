"""The operator's clone: opening it, refusing dirt, and putting HEAD and branches back.

Before acting on the target branch the clone's local state is captured; whatever happens it is
restored (or the caller is told, in one line, what to check out by hand).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import git

from orchestrator.errors import GuardError, UsageError
from orchestrator.gitrepo.process import (
    git_output,
    is_ancestor,
    name_paths,
    remote_ref,
    resolve_rev,
    run_git,
)

_IN_PROGRESS_MARKERS = {
    "MERGE_HEAD": "a merge",
    "CHERRY_PICK_HEAD": "a cherry-pick",
    "REVERT_HEAD": "a revert",
    "rebase-merge": "a rebase",
    "rebase-apply": "a rebase or am",
}


@dataclass(frozen=True)
class LocalState:
    """The parts of the clone we may touch, captured on entry so they can be put back."""

    branch: str | None  # checked-out branch, None if detached
    head_commit: str
    target_tip: str | None  # local <target> on entry; None if it did not exist


# --------------------------------------------------------------------------- guards


def open_repo(path: Path) -> git.Repo:
    """The git work tree at ``path`` (its top level); :class:`UsageError` if it is not one."""
    try:
        repo = git.Repo(path)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise UsageError(f"not a git work tree: {path}") from None
    if repo.bare:
        raise UsageError(f"{path} is a bare git repository, not a work tree")
    return repo


def refuse_dirty(repo: git.Repo) -> None:
    """:class:`GuardError` if tracked files are modified or staged, or an operation is underway.

    Untracked files are not dirt: they belong to nobody's release and git refuses by itself
    any checkout or merge that would overwrite one.
    """
    git_dir = Path(repo.git_dir)
    for marker, operation in _IN_PROGRESS_MARKERS.items():
        if (git_dir / marker).exists():
            raise GuardError(f"{operation} is in progress in {repo.working_dir}; finish it first")
    out = git_output(repo.git, "status", "--porcelain=v1", "-z", "--untracked-files=no")
    entries = iter(out.split("\0"))
    paths: list[str] = []
    for entry in entries:
        if len(entry) < 4:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":  # renames and copies carry their source path as the next entry
            next(entries, None)
    if paths:
        raise GuardError(
            f"working tree {repo.working_dir} has uncommitted changes: {name_paths(paths)}"
        )


def current_branch(repo: git.Repo) -> str | None:
    out = run_git(repo.git, "symbolic-ref", "--quiet", "--short", "HEAD")
    return out.stdout.strip() if out.status == 0 else None


# --------------------------------------------------------------------------- acting on target


def capture_state(repo: git.Repo, target: str) -> LocalState:
    if (head := resolve_rev(repo.git, "HEAD")) is None:
        raise GuardError(f"{repo.working_dir} has no commit checked out")
    return LocalState(
        branch=current_branch(repo),
        head_commit=head,
        target_tip=resolve_rev(repo.git, f"refs/heads/{target}"),
    )


def switch_back(repo: git.Repo, state: LocalState) -> None:
    if state.branch is None:
        git_output(repo.git, "switch", "--quiet", "--detach", state.head_commit)
    elif current_branch(repo) != state.branch:
        git_output(repo.git, "switch", "--quiet", state.branch)


def enter_target(repo: git.Repo, state: LocalState, remote: str, target: str, tip: str) -> None:
    """Check ``target`` out at ``<remote>/<target>`` (``tip``), creating it if absent."""
    if state.target_tip is None:
        git_output(
            repo.git, "switch", "--quiet", "-c", target, "--track", remote_ref(remote, target)
        )
        return
    refuse_unpushed(repo, state.target_tip, remote, target, tip)
    if state.branch != target:
        git_output(repo.git, "switch", "--quiet", target)
    if state.target_tip != tip:
        git_output(repo.git, "merge", "--quiet", "--ff-only", tip, what=f"fast-forwarding {target}")


def refuse_unpushed(repo: git.Repo, local: str | None, remote: str, target: str, tip: str) -> None:
    """:class:`GuardError` when local ``target`` (at ``local``; None: there is none) has
    commits that are not on ``<remote>/<target>`` (at ``tip``): a push would publish them."""
    if local is not None and not is_ancestor(repo.git, local, tip):
        raise GuardError(
            f"local branch {target!r} has commits that are not on {remote}/{target}; "
            "refusing to push unreviewed local commits"
        )


def _restore(repo: git.Repo, state: LocalState, target: str) -> None:
    """Put HEAD, the index, the working tree and local ``target`` back as ``state`` found them.

    Safe to ``reset --hard``: the tree was clean on entry, so only our own changes go.
    """
    if (Path(repo.git_dir) / "MERGE_HEAD").exists():
        run_git(repo.git, "merge", "--abort")
    for operation in ("revert", "cherry-pick"):
        run_git(repo.git, operation, "--quit")
    git_output(repo.git, "reset", "--quiet", "--hard", "HEAD")
    if state.branch == target:
        assert state.target_tip is not None  # it was checked out, so it existed
        git_output(repo.git, "reset", "--quiet", "--hard", state.target_tip)
        return
    switch_back(repo, state)
    now = resolve_rev(repo.git, f"refs/heads/{target}")
    if now == state.target_tip:  # untouched (e.g. we failed before switching)
        return
    if state.target_tip is None:
        git_output(repo.git, "branch", "--quiet", "-D", target)
    else:
        git_output(repo.git, "branch", "--quiet", "--force", target, state.target_tip)


@contextmanager
def restoring(repo: git.Repo, state: LocalState, target: str) -> Iterator[None]:
    """Act on the clone in the ``with`` block: if it raises, put the clone back as ``state``
    found it (if even that fails, say so in one line); else check the original branch out."""
    try:
        yield
    except BaseException as error:
        try:
            _restore(repo, state, target)
        except GuardError as restore_error:
            raise GuardError(
                f"{error}; restoring the local clone also failed ({restore_error}); "
                f"check out {state.branch or state.head_commit} by hand"
            ) from error
        raise
    switch_back(repo, state)
