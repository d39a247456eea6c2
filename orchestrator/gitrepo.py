"""The git edge of a release: fetch, guard, trial-merge, merge/push, verify and revert.

A release merges ``<remote>/<source>`` (e.g. staging) into ``<target>`` (e.g. main) and pushes
``<target>`` to ``<remote>``. Every function here leaves the operator's clone as it found it
(same branch checked out, same index and working tree) unless it succeeded, in which case the
only local change is that the local ``<target>`` branch points at what was pushed.

Git is driven through GitPython's command wrapper (``repo.git.execute``): porcelain commands
whose exit status and stderr we interpret ourselves, so that every failure becomes a typed,
one-line, credential-free error (:class:`GuardError` / :class:`UsageError`).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import git

from orchestrator.db.connect import redact
from orchestrator.errors import GuardError, UsageError

# Never wait for a human: no credential prompts, no editors (nothing below the CLI prompts).
_NON_INTERACTIVE_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_EDITOR": "true",
    "GIT_MERGE_AUTOEDIT": "no",
}
# rerere could replay a remembered resolution in one merge and not in another; a guard that
# depends on the operator's rerere cache would not be a guard.
_NO_RERERE = ("-c", "rerere.enabled=false")
# The trial merge commits nothing, but ``git merge`` still insists on an identity; hooks and LFS
# downloads have no business running in a throwaway worktree.
_TRIAL_CONFIG = (
    *_NO_RERERE,
    "-c",
    "user.name=orchestrator trial merge",
    "-c",
    "user.email=orchestrator@localhost",
    "-c",
    f"core.hooksPath={os.devnull}",
)
_TRIAL_ENV = {"GIT_LFS_SKIP_SMUDGE": "1"}
# An https remote may carry a token as its user name (https://ghp_xxx@host/...); ``redact``
# only knows user:password pairs.
_URL_USERINFO = re.compile(r"(https?://)[^/@\s]+@", re.IGNORECASE)
_IN_PROGRESS_MARKERS = {
    "MERGE_HEAD": "a merge",
    "CHERRY_PICK_HEAD": "a cherry-pick",
    "REVERT_HEAD": "a revert",
    "rebase-merge": "a rebase",
    "rebase-apply": "a rebase or am",
}
_MAX_NAMED_PATHS = 10


class MissingBranch(GuardError):
    """A branch the playbook names does not exist on the remote."""


@dataclass(frozen=True)
class Preflight:
    """What a release would do, established without changing anything local."""

    source_commit: str  # hexsha of <remote>/<source> after fetch
    target_commit: str  # hexsha of <remote>/<target> after fetch
    fast_forward: bool  # target is an ancestor of source
    already_merged: bool  # source is an ancestor of target (nothing to merge)
    original_branch: str | None  # branch checked out in the working clone (None if detached)


@dataclass(frozen=True)
class MergeResult:
    """What ``merge_and_push`` pushed; enough to verify or revert the release later."""

    pushed_commit: str  # new tip of <remote>/<target>
    previous_target_commit: str  # tip before our push
    merge_commit: str | None  # the merge commit we created; None for a fast-forward / no-op
    fast_forward: bool


@dataclass(frozen=True)
class _GitOutput:
    status: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class _LocalState:
    """The parts of the clone we may touch, captured on entry so they can be put back."""

    branch: str | None  # checked-out branch, None if detached
    head_commit: str
    target_tip: str | None  # local <target> on entry; None if it did not exist


# --------------------------------------------------------------------------- pure helpers


def clean_message(text: str) -> str:
    """The most telling line of git's output, without credentials."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("hint:")]
    if not lines:
        return "no output"
    # "! [rejected] main -> main (fetch first)" beats "error: failed to push some refs".
    for prefix in ("!", "fatal:", "error:", "CONFLICT"):
        for line in lines:
            if line.startswith(prefix):
                return _redact(line)
    return _redact(lines[0])


def _redact(text: str) -> str:
    return _URL_USERINFO.sub(r"\1***@", redact(text))


def _name_paths(paths: list[str]) -> str:
    shown = ", ".join(paths[:_MAX_NAMED_PATHS])
    more = len(paths) - _MAX_NAMED_PATHS
    return f"{shown} (and {more} more)" if more > 0 else shown


def _remote_ref(remote: str, branch: str) -> str:
    return f"refs/remotes/{remote}/{branch}"


def revert_commands(remote: str, target: str, result: MergeResult) -> list[str]:
    """The shell commands an operator would run to revert the release on ``target``.

    A merge commit is reverted against its first parent (the previous target); a fast-forward
    reverts the released range. A no-op release (nothing was pushed) needs no commands: ``[]``.
    Note that ``git revert A..B`` cannot revert a range that contains merge commits;
    :func:`revert_release` has no such limit.
    """
    if result.merge_commit is None and result.pushed_commit == result.previous_target_commit:
        return []
    r, t = shlex.quote(remote), shlex.quote(target)
    if result.merge_commit is not None:
        revert = f"git revert --no-edit -m 1 {result.merge_commit}"
    else:
        revert = f"git revert --no-edit {result.previous_target_commit}..{result.pushed_commit}"
    return [
        f"git fetch {r}",
        f"git checkout {t}",
        f"git merge --ff-only {r}/{t}",
        revert,
        f"git push {r} {t}",
    ]


# --------------------------------------------------------------------------- running git


def _run(cmd: git.Git, *args: str, env: dict[str, str] | None = None) -> _GitOutput:
    """Run ``git <args>`` in ``cmd``'s directory; a non-zero status is returned, not raised."""
    try:
        status, stdout, stderr = cmd.execute(
            ["git", *args],
            with_extended_output=True,
            with_exceptions=False,
            env={**_NON_INTERACTIVE_ENV, **(env or {})},
        )
    except git.GitCommandError as exc:  # git missing or not startable at all
        raise GuardError(f"cannot run git {args[0]}: {clean_message(str(exc))}") from None
    return _GitOutput(status, stdout, stderr)


def _git(cmd: git.Git, *args: str, what: str | None = None) -> str:
    """Run ``git <args>`` and return its stdout; failure is a one-line :class:`GuardError`."""
    out = _run(cmd, *args)
    if out.status != 0:
        action = what or f"git {args[0]}"
        raise GuardError(f"{action} failed: {clean_message(out.stderr or out.stdout)}")
    return out.stdout


def _resolve(cmd: git.Git, rev: str) -> str | None:
    """The commit ``rev`` names, or None when there is no such commit locally."""
    out = _run(cmd, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    return out.stdout.strip() if out.status == 0 else None


def _is_ancestor(cmd: git.Git, ancestor: str, descendant: str) -> bool:
    out = _run(cmd, "merge-base", "--is-ancestor", ancestor, descendant)
    if out.status not in (0, 1):
        raise GuardError(
            f"cannot compare {ancestor[:12]} with {descendant[:12]}: {clean_message(out.stderr)}"
        )
    return out.status == 0


def _unmerged_paths(cmd: git.Git) -> list[str]:
    out = _run(cmd, "diff", "--name-only", "-z", "--diff-filter=U")
    return sorted({p for p in out.stdout.split("\0") if p})


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


def _fetch(repo: git.Repo, remote: str, branches: list[str]) -> None:
    """Fetch exactly ``branches`` of ``remote`` into ``refs/remotes/<remote>/...``.

    Explicit refspecs make this work for single-branch clones too, and tell a missing branch
    apart from an unreachable remote.
    """
    names = _git(repo.git, "remote").split()
    if remote not in names:
        known = ", ".join(names) or "none"
        raise GuardError(f"unknown git remote {remote!r} (known: {known})")
    refspecs = [f"+refs/heads/{b}:{_remote_ref(remote, b)}" for b in dict.fromkeys(branches)]
    out = _run(repo.git, "fetch", "--quiet", remote, *refspecs)
    if out.status == 0:
        return
    missing = re.search(r"couldn't find remote ref (\S+)", out.stderr)
    if missing:
        branch = missing.group(1).removeprefix("refs/heads/")
        raise MissingBranch(f"branch {branch!r} does not exist on remote {remote!r}")
    url = _run(repo.git, "remote", "get-url", remote).stdout.strip()
    raise GuardError(
        f"cannot fetch from remote {remote!r} ({_redact(url)}): {clean_message(out.stderr)}"
    )


def _remote_tip(repo: git.Repo, remote: str, branch: str) -> str:
    tip = _resolve(repo.git, _remote_ref(remote, branch))
    if tip is None:
        raise MissingBranch(f"branch {branch!r} does not exist on remote {remote!r}")
    return tip


def refuse_dirty(repo: git.Repo) -> None:
    """:class:`GuardError` if tracked files are modified or staged, or an operation is underway.

    Untracked files are not dirt: they belong to nobody's release and git refuses by itself
    any checkout or merge that would overwrite one.
    """
    git_dir = Path(repo.git_dir)
    for marker, operation in _IN_PROGRESS_MARKERS.items():
        if (git_dir / marker).exists():
            raise GuardError(f"{operation} is in progress in {repo.working_dir}; finish it first")
    out = _git(repo.git, "status", "--porcelain=v1", "-z", "--untracked-files=no")
    entries = out.split("\0")
    paths: list[str] = []
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":  # renames and copies carry their source path as the next entry
            i += 1
    if paths:
        raise GuardError(
            f"working tree {repo.working_dir} has uncommitted changes: {_name_paths(paths)}"
        )


def _trial_merge_conflicts(repo: git.Repo, target_commit: str, source_commit: str) -> list[str]:
    """Merge ``source_commit`` into ``target_commit`` in a throwaway worktree; the conflicts.

    The operator's worktree, index, HEAD and branches are never touched: the worktree is
    detached (no branch is created), and it is removed and pruned whatever happens.
    """
    tmp = Path(tempfile.mkdtemp(prefix="orchestrator-trial-merge-"))
    worktree = tmp / "worktree"
    try:
        out = _run(
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
        merge = _run(
            trial, *_TRIAL_CONFIG, "merge", "--no-commit", "--no-ff", source_commit, env=_TRIAL_ENV
        )
        if merge.status == 0:
            return []
        conflicts = _unmerged_paths(trial)
        if not conflicts:
            raise GuardError(f"trial merge failed: {clean_message(merge.stderr or merge.stdout)}")
        return conflicts
    finally:
        _run(repo.git, "worktree", "remove", "--force", "--force", str(worktree))
        shutil.rmtree(tmp, ignore_errors=True)
        _run(repo.git, "worktree", "prune")


def _current_branch(repo: git.Repo) -> str | None:
    out = _run(repo.git, "symbolic-ref", "--quiet", "--short", "HEAD")
    return out.stdout.strip() if out.status == 0 else None


def preflight(repo: git.Repo, remote: str, source: str, target: str) -> Preflight:
    """Fetch and check that ``<remote>/<source>`` can be merged into ``<remote>/<target>``.

    :class:`GuardError` if the remote is unknown or unreachable, either branch is missing on it,
    the working tree is dirty (modified or staged tracked files, or a merge/rebase underway;
    untracked files are NOT dirt), or a trial merge in a temporary worktree conflicts (the
    message names the files). Nothing local changes except the remote-tracking refs.
    """
    original_branch = _current_branch(repo)
    refuse_dirty(repo)
    _fetch(repo, remote, [source, target])
    source_commit = _remote_tip(repo, remote, source)
    target_commit = _remote_tip(repo, remote, target)
    fast_forward = _is_ancestor(repo.git, target_commit, source_commit)
    already_merged = _is_ancestor(repo.git, source_commit, target_commit)
    if not (fast_forward or already_merged):  # otherwise no merge can conflict
        conflicts = _trial_merge_conflicts(repo, target_commit, source_commit)
        if conflicts:
            raise GuardError(
                f"merging {remote}/{source} into {remote}/{target} conflicts in: "
                f"{_name_paths(conflicts)}"
            )
    return Preflight(
        source_commit=source_commit,
        target_commit=target_commit,
        fast_forward=fast_forward,
        already_merged=already_merged,
        original_branch=original_branch,
    )


@dataclass(frozen=True)
class TrialMerge:
    """What merging ``<remote>/<source>`` into ``<remote>/<target>`` would do (a rehearsal)."""

    source_commit: str
    target_commit: str
    fast_forward: bool
    already_merged: bool
    conflicts: tuple[str, ...]  # files that would conflict; empty when the merge is clean

    @property
    def outcome(self) -> str:
        """``already merged``, ``fast-forward``, ``merge commit`` or ``conflict``."""
        if self.conflicts:
            return "conflict"
        if self.already_merged:
            return "already merged"
        return "fast-forward" if self.fast_forward else "merge commit"


@contextmanager
def scratch_repository(repo: git.Repo, remote: str, branches: list[str]) -> Iterator[git.Repo]:
    """A throwaway bare repository holding ``branches`` of ``remote``, fetched fresh.

    It borrows the clone's objects (git alternates), so only what is new is downloaded, and
    nothing of the operator's clone changes: no ref, not even ``refs/remotes``, no object,
    no index. Removed when the ``with`` block ends. For rehearsals.
    """
    names = _git(repo.git, "remote").split()
    if remote not in names:
        known = ", ".join(names) or "none"
        raise GuardError(f"unknown git remote {remote!r} (known: {known})")
    url = _git(repo.git, "remote", "get-url", remote).strip()
    local = Path(repo.working_tree_dir or ".") / url
    if "://" not in url and ":" not in url.split("/")[0] and local.exists():
        url = str(local.resolve())  # a relative path is relative to the clone
    tmp = Path(tempfile.mkdtemp(prefix="orchestrator-rehearsal-"))
    try:
        scratch_dir = tmp / "scratch.git"
        _git(git.Git(str(tmp)), "init", "--quiet", "--bare", str(scratch_dir))
        objects = Path(repo.git_dir) / "objects"
        (scratch_dir / "objects" / "info" / "alternates").write_text(f"{objects.resolve()}\n")
        scratch = git.Repo(scratch_dir)
        _git(scratch.git, "remote", "add", remote, url)
        _fetch(scratch, remote, branches)
        yield scratch
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def trial_merge(scratch: git.Repo, remote: str, source: str, target: str) -> TrialMerge:
    """Merge ``<remote>/<source>`` into ``<remote>/<target>`` in a worktree of ``scratch``."""
    source_commit = _remote_tip(scratch, remote, source)
    target_commit = _remote_tip(scratch, remote, target)
    fast_forward = _is_ancestor(scratch.git, target_commit, source_commit)
    already_merged = _is_ancestor(scratch.git, source_commit, target_commit)
    conflicts: list[str] = []
    if not (fast_forward or already_merged):
        conflicts = _trial_merge_conflicts(scratch, target_commit, source_commit)
    return TrialMerge(source_commit, target_commit, fast_forward, already_merged, tuple(conflicts))


def remote_tips(repo: git.Repo, remote: str, branches: list[str]) -> dict[str, str]:
    """Fetch ``branches`` of ``remote`` and return each one's tip commit."""
    _fetch(repo, remote, branches)
    return {branch: _remote_tip(repo, remote, branch) for branch in branches}


def contains(repo: git.Repo, tip: str, commit: str) -> bool:
    """Whether ``commit`` is in the history of ``tip`` (both already local)."""
    return _resolve(repo.git, commit) is not None and _is_ancestor(repo.git, commit, tip)


def read_files_at(repo: git.Repo, commit: str, directory: str) -> dict[str, bytes]:
    """Every file under ``directory`` (repo-relative, posix) as committed in ``commit``.

    Keys are posix paths relative to ``directory``; the working tree is never read.
    :class:`UsageError` if the commit is unknown or the directory does not exist in it.
    """
    sha = _resolve(repo.git, commit)
    if sha is None:
        raise UsageError(f"no commit {commit!r} in {repo.working_dir}")
    parts = [p for p in PurePosixPath(directory).parts if p not in (".", "/")]
    tree = repo.commit(sha).tree
    if parts:
        try:
            found = tree / "/".join(parts)
        except KeyError:
            raise UsageError(f"directory {directory!r} does not exist at {sha[:12]}") from None
        if not isinstance(found, git.Tree):
            raise UsageError(f"{directory!r} is not a directory at {sha[:12]}")
        tree = found
    files: dict[str, bytes] = {}
    for item in tree.traverse():
        if isinstance(item, git.Blob):  # submodules (commits) have no bytes here
            path = PurePosixPath(item.path)
            key = path.relative_to("/".join(parts)) if parts else path
            files[str(key)] = item.data_stream.read()
    return files


# --------------------------------------------------------------------------- acting on target


def _capture(repo: git.Repo, target: str) -> _LocalState:
    head = _resolve(repo.git, "HEAD")
    if head is None:
        raise GuardError(f"{repo.working_dir} has no commit checked out")
    return _LocalState(
        branch=_current_branch(repo),
        head_commit=head,
        target_tip=_resolve(repo.git, f"refs/heads/{target}"),
    )


def _switch_back(repo: git.Repo, state: _LocalState) -> None:
    if state.branch is None:
        _git(repo.git, "switch", "--quiet", "--detach", state.head_commit)
    elif _current_branch(repo) != state.branch:
        _git(repo.git, "switch", "--quiet", state.branch)


def _enter_target(repo: git.Repo, state: _LocalState, remote: str, target: str, tip: str) -> None:
    """Check ``target`` out at ``<remote>/<target>`` (``tip``), creating it if absent."""
    if state.target_tip is None:
        _git(repo.git, "switch", "--quiet", "-c", target, "--track", _remote_ref(remote, target))
        return
    if not _is_ancestor(repo.git, state.target_tip, tip):
        raise GuardError(
            f"local branch {target!r} has commits that are not on {remote}/{target}; "
            "refusing to push unreviewed local commits"
        )
    if state.branch != target:
        _git(repo.git, "switch", "--quiet", target)
    if state.target_tip != tip:
        _git(repo.git, "merge", "--quiet", "--ff-only", tip, what=f"fast-forwarding {target}")


def _restore(repo: git.Repo, state: _LocalState, target: str) -> None:
    """Put HEAD, the index, the working tree and local ``target`` back as ``state`` found them.

    Safe to ``reset --hard``: the tree was clean on entry, so only our own changes go.
    """
    if (Path(repo.git_dir) / "MERGE_HEAD").exists():
        _run(repo.git, "merge", "--abort")
    for operation in ("revert", "cherry-pick"):
        _run(repo.git, operation, "--quit")
    _git(repo.git, "reset", "--quiet", "--hard", "HEAD")
    if state.branch == target:
        assert state.target_tip is not None  # it was checked out, so it existed
        _git(repo.git, "reset", "--quiet", "--hard", state.target_tip)
        return
    _switch_back(repo, state)
    now = _resolve(repo.git, f"refs/heads/{target}")
    if now == state.target_tip:  # untouched (e.g. we failed before switching)
        return
    if state.target_tip is None:
        _git(repo.git, "branch", "--quiet", "-D", target)
    else:
        _git(repo.git, "branch", "--quiet", "--force", target, state.target_tip)


def _restore_after(repo: git.Repo, state: _LocalState, target: str, error: BaseException) -> None:
    """Restore after ``error``; if even that fails, say so in one line (the caller re-raises)."""
    try:
        _restore(repo, state, target)
    except GuardError as restore_error:
        raise GuardError(
            f"{error}; restoring the local clone also failed ({restore_error}); "
            f"check out {state.branch or state.head_commit} by hand"
        ) from error


def _push(repo: git.Repo, remote: str, target: str) -> None:
    # An explicit refspec: independent of push.default and of any upstream configuration.
    out = _run(repo.git, "push", "--quiet", remote, f"refs/heads/{target}:refs/heads/{target}")
    if out.status != 0:
        raise GuardError(f"push of {target} to {remote} rejected: {clean_message(out.stderr)}")


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
    """
    refuse_dirty(repo)
    _fetch(repo, remote, [target])
    previous = _remote_tip(repo, remote, target)
    source = _resolve(repo.git, source_commit)
    if source is None:
        raise GuardError(f"commit {source_commit} is not in {repo.working_dir}; fetch it first")
    if _is_ancestor(repo.git, source, previous):
        return MergeResult(previous, previous, merge_commit=None, fast_forward=True)
    state = _capture(repo, target)
    try:
        _enter_target(repo, state, remote, target, previous)
        fast_forward = _is_ancestor(repo.git, previous, source)
        if fast_forward:
            _git(
                repo.git, "merge", "--quiet", "--ff-only", source, what=f"fast-forwarding {target}"
            )
            merge_commit = None
        else:
            merge = _run(
                repo.git,
                *_NO_RERERE,
                "merge",
                "--quiet",
                "--no-ff",
                "--no-edit",
                "-m",
                message,
                source,
            )
            if merge.status != 0:
                conflicts = _unmerged_paths(repo.git)
                if conflicts:
                    raise GuardError(
                        f"merging {source[:12]} into {target} conflicts in: "
                        f"{_name_paths(conflicts)}"
                    )
                raise GuardError(
                    f"merging {source[:12]} into {target} failed: "
                    f"{clean_message(merge.stderr or merge.stdout)}"
                )
            merge_commit = _git(repo.git, "rev-parse", "HEAD").strip()
        pushed = _git(repo.git, "rev-parse", "HEAD").strip()
        _push(repo, remote, target)
    except BaseException as exc:
        _restore_after(repo, state, target, exc)
        raise
    _switch_back(repo, state)
    return MergeResult(
        pushed_commit=pushed,
        previous_target_commit=previous,
        merge_commit=merge_commit,
        fast_forward=fast_forward,
    )


def is_merged(repo: git.Repo, remote: str, target: str, source_commit: str) -> bool:
    """Whether ``<remote>/<target>`` (freshly fetched) contains ``source_commit``."""
    _fetch(repo, remote, [target])
    tip = _remote_tip(repo, remote, target)
    source = _resolve(repo.git, source_commit)
    # After the fetch all of target's history is local: an unknown commit is not in it.
    return source is not None and _is_ancestor(repo.git, source, tip)


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


def _apply_revert(repo: git.Repo, result: MergeResult) -> _GitOutput:
    """Stage the inverse of the release on top of HEAD (no commit yet)."""
    if result.merge_commit is not None:
        return _run(repo.git, *_NO_RERERE, "revert", "--no-commit", "-m", "1", result.merge_commit)
    # ``git revert A..B`` reverts commit by commit and fails on merge commits inside the range
    # (staging histories are full of them). Instead: one synthetic commit whose change is
    # "pushed tree -> previous tree", cherry-picked onto HEAD (a 3-way merge with base = pushed).
    undo = _git(
        repo.git,
        "commit-tree",
        f"{result.previous_target_commit}^{{tree}}",
        "-p",
        result.pushed_commit,
        "-m",
        "orchestrator: inverse of the release",
        what="building the inverse of the release",
    ).strip()
    return _run(repo.git, *_NO_RERERE, "cherry-pick", "--no-commit", undo)


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
    if result.merge_commit is None and result.pushed_commit == result.previous_target_commit:
        raise GuardError("the release changed nothing on the target; there is nothing to revert")
    refuse_dirty(repo)
    _fetch(repo, remote, [target])
    tip = _remote_tip(repo, remote, target)
    for commit in (result.pushed_commit, result.previous_target_commit):
        if _resolve(repo.git, commit) is None:
            raise GuardError(f"commit {commit} is not in {repo.working_dir}")
    if not _is_ancestor(repo.git, result.pushed_commit, tip):
        raise GuardError(
            f"{remote}/{target} no longer contains the released commit "
            f"{result.pushed_commit[:12]}; its history was rewritten"
        )
    state = _capture(repo, target)
    try:
        _enter_target(repo, state, remote, target, tip)
        applied = _apply_revert(repo, result)
        if applied.status != 0:
            conflicts = _unmerged_paths(repo.git)
            what = f"conflicts in: {_name_paths(conflicts)}" if conflicts else "failed"
            detail = "" if conflicts else f": {clean_message(applied.stderr or applied.stdout)}"
            raise GuardError(
                f"reverting the release on {remote}/{target} (now {tip[:12]}) {what}{detail}"
            )
        if _run(repo.git, "diff", "--cached", "--quiet").status == 0:
            raise GuardError(f"{remote}/{target} already has the release reverted")
        _git(
            repo.git,
            "commit",
            "--quiet",
            "-m",
            message or _default_revert_message(target, result),
            what="committing the revert",
        )
        reverted = _git(repo.git, "rev-parse", "HEAD").strip()
        _push(repo, remote, target)
    except BaseException as exc:
        _restore_after(repo, state, target, exc)
        raise
    _switch_back(repo, state)
    return reverted
