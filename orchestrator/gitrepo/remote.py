"""The remote: fetching the playbook's branches, reading their tips, pushing the target."""

from __future__ import annotations

import re

import git

from orchestrator.errors import GuardError
from orchestrator.gitrepo.process import (
    clean_message,
    git_output,
    redact_git_text,
    remote_ref,
    resolve_rev,
    run_git,
)


class MissingBranch(GuardError):
    """A branch the playbook names does not exist on the remote."""


def fetch_branches(repo: git.Repo, remote: str, branches: list[str]) -> None:
    """Fetch exactly ``branches`` of ``remote`` into ``refs/remotes/<remote>/...``.

    Explicit refspecs make this work for single-branch clones too, and tell a missing branch
    apart from an unreachable remote.
    """
    names = git_output(repo.git, "remote").split()
    if remote not in names:
        known = ", ".join(names) or "none"
        raise GuardError(f"unknown git remote {remote!r} (known: {known})")
    refspecs = [f"+refs/heads/{b}:{remote_ref(remote, b)}" for b in dict.fromkeys(branches)]
    out = run_git(repo.git, "fetch", "--quiet", remote, *refspecs)
    if out.status == 0:
        return
    if missing := re.search(r"couldn't find remote ref (\S+)", out.stderr):
        branch = missing.group(1).removeprefix("refs/heads/")
        raise MissingBranch(f"branch {branch!r} does not exist on remote {remote!r}")
    url = run_git(repo.git, "remote", "get-url", remote).stdout.strip()
    raise GuardError(
        f"cannot fetch from remote {remote!r} ({redact_git_text(url)}): {clean_message(out.stderr)}"
    )


def remote_tip_of(repo: git.Repo, remote: str, branch: str) -> str:
    if (tip := resolve_rev(repo.git, remote_ref(remote, branch))) is None:
        raise MissingBranch(f"branch {branch!r} does not exist on remote {remote!r}")
    return tip


def remote_tips(repo: git.Repo, remote: str, branches: list[str]) -> dict[str, str]:
    """Fetch ``branches`` of ``remote`` and return each one's tip commit."""
    fetch_branches(repo, remote, branches)
    return {branch: remote_tip_of(repo, remote, branch) for branch in branches}


def push_branch(repo: git.Repo, remote: str, target: str) -> None:
    # An explicit refspec: independent of push.default and of any upstream configuration.
    out = run_git(repo.git, "push", "--quiet", remote, f"refs/heads/{target}:refs/heads/{target}")
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
    return redact_git_text(" / ".join(lines[:_MAX_REMOTE_LINES]))
