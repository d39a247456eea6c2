"""A contract double of the GitHub REST API subset orchestrator uses, on a local HTTP
server, backed by a REAL bare git repository: the pull requests' heads are the repository's
branches, mergeability comes from ``git merge-tree``, and a merge writes a real merge commit
(``git commit-tree`` + ``git update-ref``) onto the base branch, so the history is real.

Endpoints, with the shapes of GitHub's published REST reference:

- ``GET  /repos/{owner}/{repo}/pulls?head=owner:branch&base=...&state=open``
- ``POST /repos/{owner}/{repo}/pulls`` (201; 422 when one is already open)
- ``GET  /repos/{owner}/{repo}/pulls/{n}`` (``mergeable``, ``mergeable_state``, ``head.sha``)
- ``PUT  /repos/{owner}/{repo}/pulls/{n}/merge`` (``sha``: 409 when the head moved;
  405 when not mergeable)
- ``GET  /repos/{owner}/{repo}/commits/{ref}/status`` and ``/check-runs``
- ``GET  /repos/{owner}/{repo}/branches/{branch}`` (``protected``)

Branch protection of the base is modelled by ``required_checks`` and ``review_required``
(``approved`` says a review was given); ``checks`` are the check runs every head gets, and
running ones complete after ``checks_finish_after`` reads of the pull request. The bare
repository may carry a pre-receive hook refusing direct pushes to the base
(:func:`protect_branch`): the double's own merges do not go through it, as GitHub's do not.
"""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.sandbox.release import git
from tests.http_double import Reply, Request, queued_failure, serve

_MOVED = "Head branch was modified. Review and try the merge again."


def protect_branch(origin: Path, branch: str = "main") -> None:
    """A pre-receive hook in the bare ``origin`` refusing every push to ``branch``."""
    hook = origin / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\n"
        "while read old new ref; do\n"
        f'  if [ "$ref" = "refs/heads/{branch}" ]; then\n'
        f'    echo "GH006: Protected branch update failed for refs/heads/{branch}." >&2\n'
        "    exit 1\n"
        "  fi\n"
        "done\n"
    )
    hook.chmod(0o755)


@dataclass
class GitHubState:
    """What the double holds and what tests inspect or set."""

    origin: Path
    repo: str
    token: str
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    checks: dict[str, list[str | None]] = field(default_factory=dict)  # name: [status, concl.]
    checks_finish_after: int = 0
    required_checks: tuple[str, ...] = ()
    review_required: bool = False
    protected: tuple[str, ...] = ()  # branches GET /branches/{branch} says are protected
    approved: bool = False
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _check_reads: int = 0

    @property
    def owner(self) -> str:
        return self.repo.split("/")[0]

    def tip(self, branch: str) -> str | None:
        done = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
            cwd=self.origin,
            capture_output=True,
            text=True,
        )
        return done.stdout.strip() if done.returncode == 0 else None

    def conflicts(self, base: str, head: str) -> bool:
        done = subprocess.run(
            ["git", "merge-tree", "--write-tree", base, head],
            cwd=self.origin,
            capture_output=True,
            text=True,
        )
        return done.returncode != 0

    def tick(self) -> None:
        """One more look at a pull request: running checks finish after enough of them."""
        self._check_reads += 1
        if self._check_reads > self.checks_finish_after:
            for spec in self.checks.values():
                if spec[0] != "completed":
                    spec[0], spec[1] = "completed", spec[1] or "success"

    def check_runs(self) -> list[dict[str, Any]]:
        return [
            {
                "id": i,
                "name": name,
                "status": spec[0],
                "conclusion": (spec[0] == "completed" and spec[1]) or None,
            }
            for i, (name, spec) in enumerate(self.checks.items(), 1)
        ]

    def view(self, pr: dict[str, Any]) -> dict[str, Any]:
        """The pull request as GitHub shows it now (head and mergeability read live)."""
        head_sha = self.tip(pr["head"]) or pr["head_sha"]
        if not pr["merged"]:
            pr["head_sha"] = head_sha
        base_sha = self.tip(pr["base"]) or ""
        mergeable: bool | None = None
        state = "unknown"
        if pr["state"] == "open":
            mergeable = not self.conflicts(base_sha, head_sha)
            state = self.mergeable_state(mergeable)
        url = f"https://github.com/{self.repo}/pull/{pr['number']}"
        return {
            "url": f"https://api.github.com/repos/{self.repo}/pulls/{pr['number']}",
            "html_url": url,
            "number": pr["number"],
            "state": pr["state"],
            "title": pr["title"],
            "body": pr["body"],
            "draft": False,
            "merged": pr["merged"],
            "mergeable": mergeable,
            "mergeable_state": state,
            "merge_commit_sha": pr.get("merge_commit_sha"),
            "head": {"ref": pr["head"], "sha": head_sha, "label": f"{self.owner}:{pr['head']}"},
            "base": {"ref": pr["base"], "sha": base_sha, "label": f"{self.owner}:{pr['base']}"},
        }

    def mergeable_state(self, mergeable: bool) -> str:
        if not mergeable:
            return "dirty"
        runs = {r["name"]: r for r in self.check_runs()}
        required = [runs.get(name) for name in self.required_checks]
        if any(r is None or r["status"] != "completed" for r in required):
            return "blocked"
        if any(
            r is not None and r["conclusion"] not in ("success", "neutral", "skipped")
            for r in required
        ):
            return "blocked"
        if self.review_required and not self.approved:
            return "blocked"
        if any(r["status"] == "completed" and r["conclusion"] != "success" for r in runs.values()):
            return "unstable"
        return "clean"

    def merge(self, pr: dict[str, Any], sha: str) -> tuple[int, dict[str, Any]]:
        view = self.view(pr)
        if pr["merged"] or pr["state"] != "open":
            return 405, {"message": "Pull Request is not mergeable"}
        if sha and sha != view["head"]["sha"]:
            return 409, {"message": _MOVED}
        if view["mergeable_state"] not in ("clean", "unstable", "has_hooks"):
            return 405, {"message": "Pull Request is not mergeable"}
        base_sha, head_sha = view["base"]["sha"], view["head"]["sha"]
        tree = git(self.origin, "merge-tree", "--write-tree", base_sha, head_sha).splitlines()[0]
        message = (
            f"Merge pull request #{pr['number']} from {self.owner}/{pr['head']}\n\n{pr['title']}"
        )
        commit = git(
            self.origin, "commit-tree", tree, "-p", base_sha, "-p", head_sha, "-m", message
        )
        git(self.origin, "update-ref", f"refs/heads/{pr['base']}", commit, base_sha)
        pr.update(merged=True, state="closed", merge_commit_sha=commit, head_sha=head_sha)
        return 200, {"sha": commit, "merged": True, "message": "Pull Request successfully merged"}


_NOT_FOUND: Reply = 404, {"message": "Not Found"}


def _answer(state: GitHubState, request: Request) -> Reply:
    """Authenticate (``Bearer`` or ``token``), answer a queued failure, or route the call."""
    state.requests.append((request.method, request.target, request.body))
    if request.headers.get("Authorization") not in (
        f"Bearer {state.token}",
        f"token {state.token}",
    ):
        return 401, {"message": "Bad credentials"}
    failure = queued_failure(state.failures, {"message": "API rate limit exceeded"})
    if failure is not None:
        return failure
    if request.segments[:3] != ["repos", *state.repo.split("/")]:
        return _NOT_FOUND
    method, body, rest = request.method, request.body, request.segments[3:]
    if rest == ["pulls"] and method == "GET":
        query = request.query
        return 200, [
            state.view(pr)
            for pr in state.pulls.values()
            if pr["state"] == query.get("state", "open")
            and query.get("head") in (None, f"{state.owner}:{pr['head']}")
            and query.get("base") in (None, pr["base"])
        ]
    if rest == ["pulls"] and method == "POST":
        return _open_pull(state, body)
    if len(rest) in (2, 3) and rest[0] == "pulls" and rest[1].isdigit():
        pr = state.pulls.get(int(rest[1]))
        if pr is None:
            return _NOT_FOUND
        if len(rest) == 2 and method == "GET":
            state.tick()
            return 200, state.view(pr)
        if rest[2:] == ["merge"] and method == "PUT":
            return state.merge(pr, (body or {}).get("sha", ""))
        return _NOT_FOUND
    if len(rest) == 2 and rest[0] == "branches" and method == "GET":
        return _branch(state, rest[1])
    if len(rest) == 3 and rest[0] == "commits" and rest[2] == "status":
        return 200, {"state": "success", "statuses": [], "sha": rest[1], "total_count": 0}
    if len(rest) == 3 and rest[0] == "commits" and rest[2] == "check-runs":
        runs = state.check_runs()
        return 200, {"total_count": len(runs), "check_runs": runs}
    return _NOT_FOUND


def _branch(state: GitHubState, name: str) -> Reply:
    """``GET /branches/{branch}``: its tip and whether it is ``protected`` (404 unknown)."""
    tip = state.tip(name)
    if tip is None:
        return 404, {"message": "Branch not found"}
    return 200, {"name": name, "commit": {"sha": tip}, "protected": name in state.protected}


def _open_pull(state: GitHubState, body: dict[str, Any]) -> Reply:
    """``POST /pulls``: 201 and the new pull request; 422 for an unknown branch or when
    one is already open for the same head and base."""
    head, base = body.get("head"), body.get("base")
    if state.tip(head) is None or state.tip(base) is None:
        return 422, {
            "message": "Validation Failed",
            "errors": [{"field": "head", "code": "invalid"}],
        }
    if any(
        p["state"] == "open" and p["head"] == head and p["base"] == base
        for p in state.pulls.values()
    ):
        return 422, {"message": f"A pull request already exists for {state.owner}:{head}."}
    number = next(state._numbers)
    pr = {
        "number": number,
        "head": head,
        "base": base,
        "title": body.get("title"),
        "body": body.get("body"),
        "state": "open",
        "merged": False,
        "head_sha": state.tip(head),
    }
    state.pulls[number] = pr
    return 201, state.view(pr)


@contextmanager
def github_double(
    origin: Path, repo: str = "acme/service-desk", token: str = "ghp_doubleToken4c2e9a"
) -> Iterator[tuple[str, GitHubState]]:
    """Serve the double on 127.0.0.1 over the bare ``origin``; yields its URL and state."""
    state = GitHubState(origin, repo, token)
    with serve(lambda request: _answer(state, request), ("GET", "POST", "PUT")) as url:
        yield url, state
