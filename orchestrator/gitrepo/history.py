"""Committed history, read without the working tree: ancestry and files at a commit."""

from __future__ import annotations

from pathlib import PurePosixPath

import git

from orchestrator.errors import UsageError
from orchestrator.gitrepo.process import git_output, is_ancestor, resolve_rev
from orchestrator.gitrepo.remote import fetch_branches


def contains(repo: git.Repo, tip: str, commit: str) -> bool:
    """Whether ``commit`` is in the history of ``tip`` (both already local)."""
    return resolve_rev(repo.git, commit) is not None and is_ancestor(repo.git, commit, tip)


def fetched_contains(repo: git.Repo, remote: str, target: str, tip: str, commit: str) -> bool:
    """Whether commit ``tip`` (a full sha or an abbreviation) contains ``commit``, asked
    after fetching ``<remote>/<target>``.

    A ``tip`` still unknown after the fetch (not a commit of ours, or an ambiguous prefix)
    does not: production serving something git cannot place is not our release.
    """
    fetch_branches(repo, remote, [target])
    full = resolve_rev(repo.git, tip)
    return full is not None and contains(repo, full, commit)


def undone(repo: git.Repo, before: str, release: str, tip: str) -> bool:
    """Whether every file the release changed (from ``before``, the target's tip before it, to
    ``release``) is at ``tip`` as it was before it: a revert, which ancestry cannot see and, for a
    release without migrations, nor can the journal. One that changed no file undid nothing."""
    changed = git_output(repo.git, "diff", "--no-renames", "--name-only", "-z", before, release)
    paths = [f":(literal){path}" for path in changed.split("\0") if path]
    diff = ("diff", "--no-renames", "--name-only", before, tip, "--", *paths)
    return bool(paths) and not git_output(repo.git, *diff)


def how_merged(repo: git.Repo, merged: str, head: str) -> tuple[str, str]:
    """How a pull request whose head was ``head`` became ``merged`` (GitHub's ``merge_commit_sha``)
    on its base, and the base's tip before it. GitHub does not say which method was used; the
    commits do. Two parents: ``merge``. One: ``rebase`` when the commits before it are the pull
    request's own rewritten (same authors, dates, subjects), as many as it had; else ``squash``."""
    parents = repo.commit(merged).parents
    if len(parents) > 1:
        return "merge", parents[0].hexsha
    authored = ("log", "--format=%ae %at %s")  # who wrote each commit, when, its subject
    own = sorted(git_output(repo.git, *authored, "--no-merges", f"{merged}..{head}").splitlines())
    last = git_output(repo.git, *authored, "--first-parent", f"-n{len(own)}", merged).splitlines()
    if own and own == sorted(last):
        return "rebase", repo.commit(f"{merged}~{len(own)}").hexsha
    return "squash", parents[0].hexsha


def read_files_at(repo: git.Repo, commit: str, directory: str) -> dict[str, bytes]:
    """Every file under ``directory`` (repo-relative, posix) as committed in ``commit``.

    Keys are posix paths relative to ``directory``; the working tree is never read.
    :class:`UsageError` if the commit is unknown or the directory does not exist in it.
    """
    if (sha := resolve_rev(repo.git, commit)) is None:
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
