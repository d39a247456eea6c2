"""Running git: the non-interactive command wrapper, and its output as one-line errors.

Every other module of the package drives git through :func:`run_git` / :func:`git_output` so that a
failure becomes a typed, one-line, credential-free :class:`GuardError`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import git

from orchestrator import children
from orchestrator.errors import GuardError
from orchestrator.redaction import redact

# Never wait for a human: no credential prompts, no editors (nothing below the CLI prompts).
_NON_INTERACTIVE_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_EDITOR": "true",
    "GIT_MERGE_AUTOEDIT": "no",
}
# rerere could replay a remembered resolution in one merge and not in another; a guard that
# depends on the operator's rerere cache would not be a guard.
NO_RERERE = ("-c", "rerere.enabled=false")
# An https remote may carry a token as its user name (https://ghp_xxx@host/...); ``redact``
# only knows user:password pairs.
_URL_USERINFO = re.compile(r"(https?://)[^/@\s]+@", re.IGNORECASE)
_MAX_NAMED_PATHS = 10


@dataclass(frozen=True)
class GitOutput:
    status: int
    stdout: str
    stderr: str


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
                return redact_git_text(line)
    return redact_git_text(lines[0])


def redact_git_text(text: str) -> str:
    return _URL_USERINFO.sub(r"\1***@", redact(text))


def name_paths(paths: list[str]) -> str:
    shown = ", ".join(paths[:_MAX_NAMED_PATHS])
    more = len(paths) - _MAX_NAMED_PATHS
    return f"{shown} (and {more} more)" if more > 0 else shown


def remote_ref(remote: str, branch: str) -> str:
    return f"refs/remotes/{remote}/{branch}"


# --------------------------------------------------------------------------- running git


def run_git(cmd: git.Git, *args: str, env: dict[str, str] | None = None) -> GitOutput:
    """Run ``git <args>`` in ``cmd``'s directory; a non-zero status is returned, not raised.

    Started through :mod:`orchestrator.children` (not GitPython's ``execute``), so that git
    and what it starts (``git-receive-pack``, hooks, ssh) die with us: a killed deploy must
    not leave a ``git push`` running that lands later. Environment and output as GitPython
    gives them: C locale (the messages we read are git's English ones), one trailing newline
    stripped, undecodable bytes kept as surrogates.
    """
    environment = {
        **os.environ,
        "LANGUAGE": "C",
        "LC_ALL": "C",
        **cmd.environment(),
        **_NON_INTERACTIVE_ENV,
        **(env or {}),
    }
    try:
        done = children.run(
            ["git", *args], cwd=cmd.working_dir, env=environment, errors="surrogateescape"
        )
    except OSError as exc:  # git missing or not startable at all
        raise GuardError(f"cannot run git {args[0]}: {clean_message(str(exc))}") from None
    return GitOutput(
        done.returncode, done.stdout.removesuffix("\n"), done.stderr.removesuffix("\n")
    )


def git_output(cmd: git.Git, *args: str, what: str | None = None) -> str:
    """Run ``git <args>`` and return its stdout; failure is a one-line :class:`GuardError`."""
    out = run_git(cmd, *args)
    if out.status != 0:
        action = what or f"git {args[0]}"
        raise GuardError(f"{action} failed: {clean_message(out.stderr or out.stdout)}")
    return out.stdout


def resolve_rev(cmd: git.Git, rev: str) -> str | None:
    """The commit ``rev`` names, or None when there is no such commit locally."""
    out = run_git(cmd, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    return out.stdout.strip() if out.status == 0 else None


def is_ancestor(cmd: git.Git, ancestor: str, descendant: str) -> bool:
    out = run_git(cmd, "merge-base", "--is-ancestor", ancestor, descendant)
    if out.status not in (0, 1):
        raise GuardError(
            f"cannot compare {ancestor[:12]} with {descendant[:12]}: {clean_message(out.stderr)}"
        )
    return out.status == 0


def unmerged_paths(cmd: git.Git) -> list[str]:
    out = run_git(cmd, "diff", "--name-only", "-z", "--diff-filter=U")
    return sorted({p for p in out.stdout.split("\0") if p})


def merge_failure(cmd: git.Git, out: GitOutput) -> str:
    """Why a merge, revert or cherry-pick that ended as ``out`` stopped: ``conflicts in:``
    the files, else ``failed:`` git's message."""
    if conflicts := unmerged_paths(cmd):
        return f"conflicts in: {name_paths(conflicts)}"
    return f"failed: {clean_message(out.stderr or out.stdout)}"
