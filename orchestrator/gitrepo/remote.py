"""The remote: fetching the playbook's branches, reading their tips, pushing the target."""

from __future__ import annotations

import re

import git

from orchestrator.errors import GuardError
from orchestrator.gitrepo.process import _git, _redact, _remote_ref, _resolve, _run, clean_message


class MissingBranch(GuardError):
    """A branch the playbook names does not exist on the remote."""


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


def remote_tips(repo: git.Repo, remote: str, branches: list[str]) -> dict[str, str]:
    """Fetch ``branches`` of ``remote`` and return each one's tip commit."""
    _fetch(repo, remote, branches)
    return {branch: _remote_tip(repo, remote, branch) for branch in branches}


def _push(repo: git.Repo, remote: str, target: str) -> None:
    # An explicit refspec: independent of push.default and of any upstream configuration.
    out = _run(repo.git, "push", "--quiet", remote, f"refs/heads/{target}:refs/heads/{target}")
    if out.status != 0:
        said = remote_said(out.stderr)
        why = f"{clean_message(out.stderr)}{f'; the remote said: {said}' if said else ''}"
        raise GuardError(f"push of {target} to {remote} rejected: {why}")


_MAX_REMOTE_LINES = 5


def remote_said(stderr: str) -> str:
    """What the remote's own hooks printed (git prefixes it ``remote:``), one line, without
    credentials: a pre-receive hook's reason is the one the operator needs (pure)."""
    lines = [
        line.removeprefix("remote:").strip()
        for line in stderr.splitlines()
        if line.startswith("remote:") and line.removeprefix("remote:").strip()
    ]
    return _redact(" / ".join(lines[:_MAX_REMOTE_LINES]))
