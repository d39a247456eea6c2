"""The scratch repository: a throwaway bare clone for rehearsals, borrowing the objects."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import git

from orchestrator.errors import GuardError
from orchestrator.gitrepo.process import git_output
from orchestrator.gitrepo.remote import fetch_branches


@contextmanager
def scratch_repository(repo: git.Repo, remote: str, branches: list[str]) -> Iterator[git.Repo]:
    """A throwaway bare repository holding ``branches`` of ``remote``, fetched fresh.

    It borrows the clone's objects (git alternates), so only what is new is downloaded, and
    nothing of the operator's clone changes: no ref, not even ``refs/remotes``, no object,
    no index. Removed when the ``with`` block ends. For rehearsals.
    """
    names = git_output(repo.git, "remote").split()
    if remote not in names:
        known = ", ".join(names) or "none"
        raise GuardError(f"unknown git remote {remote!r} (known: {known})")
    url = git_output(repo.git, "remote", "get-url", remote).strip()
    local = Path(repo.working_tree_dir or ".") / url
    if "://" not in url and ":" not in url.split("/")[0] and local.exists():
        url = str(local.resolve())  # a relative path is relative to the clone
    tmp = Path(tempfile.mkdtemp(prefix="orchestrator-rehearsal-"))
    try:
        scratch_dir = tmp / "scratch.git"
        git_output(git.Git(str(tmp)), "init", "--quiet", "--bare", str(scratch_dir))
        objects = Path(repo.git_dir) / "objects"
        (scratch_dir / "objects" / "info" / "alternates").write_text(f"{objects.resolve()}\n")
        scratch = git.Repo(scratch_dir)
        git_output(scratch.git, "remote", "add", remote, url)
        fetch_branches(scratch, remote, branches)
        yield scratch
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
