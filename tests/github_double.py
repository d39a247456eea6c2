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

Branch protection of the base is modelled by ``required_checks`` and ``review_required``
(``approved`` says a review was given); ``checks`` are the check runs every head gets, and
running ones complete after ``checks_finish_after`` reads of the pull request. The bare
repository may carry a pre-receive hook refusing direct pushes to the base
(:func:`protect_branch`): the double's own merges do not go through it, as GitHub's do not.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from orchestrator.testing.release import git

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


@contextmanager
def github_double(
    origin: Path, repo: str = "acme/service-desk", token: str = "ghp_doubleToken4c2e9a"
) -> Iterator[tuple[str, GitHubState]]:
    """Serve the double on 127.0.0.1 over the bare ``origin``; yields its URL and state."""
    state = GitHubState(origin, repo, token)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:
            pass

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            with lock:
                state.requests.append((method, self.path, body))
                if self.headers.get("Authorization") not in (
                    f"Bearer {state.token}",
                    f"token {state.token}",
                ):
                    self._send(401, {"message": "Bad credentials"})
                    return
                if state.failures:
                    status, headers = state.failures.pop(0)
                    self._send(status, {"message": "API rate limit exceeded"}, headers)
                    return
                self._route(method, body)

        def _route(self, method: str, body: Any) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            segments = parts.path.strip("/").split("/")
            if segments[:3] != ["repos", *state.repo.split("/")]:
                self._send(404, {"message": "Not Found"})
                return
            rest = segments[3:]
            if rest == ["pulls"] and method == "GET":
                found = [
                    state.view(pr)
                    for pr in state.pulls.values()
                    if pr["state"] == query.get("state", "open")
                    and query.get("head") in (None, f"{state.owner}:{pr['head']}")
                    and query.get("base") in (None, pr["base"])
                ]
                self._send(200, found)
            elif rest == ["pulls"] and method == "POST":
                head, base = body.get("head"), body.get("base")
                if state.tip(head) is None or state.tip(base) is None:
                    self._send(
                        422,
                        {
                            "message": "Validation Failed",
                            "errors": [{"field": "head", "code": "invalid"}],
                        },
                    )
                    return
                if any(
                    p["state"] == "open" and p["head"] == head and p["base"] == base
                    for p in state.pulls.values()
                ):
                    self._send(
                        422, {"message": f"A pull request already exists for {state.owner}:{head}."}
                    )
                    return
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
                self._send(201, state.view(pr))
            elif len(rest) in (2, 3) and rest[0] == "pulls" and rest[1].isdigit():
                pr = state.pulls.get(int(rest[1]))
                if pr is None:
                    self._send(404, {"message": "Not Found"})
                elif len(rest) == 2 and method == "GET":
                    state.tick()
                    self._send(200, state.view(pr))
                elif rest[2:] == ["merge"] and method == "PUT":
                    status, answer = state.merge(pr, (body or {}).get("sha", ""))
                    self._send(status, answer)
                else:
                    self._send(404, {"message": "Not Found"})
            elif len(rest) == 3 and rest[0] == "commits" and rest[2] == "status":
                self._send(
                    200, {"state": "success", "statuses": [], "sha": rest[1], "total_count": 0}
                )
            elif len(rest) == 3 and rest[0] == "commits" and rest[2] == "check-runs":
                runs = state.check_runs()
                self._send(200, {"total_count": len(runs), "check_runs": runs})
            else:
                self._send(404, {"message": "Not Found"})

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_PUT(self) -> None:
            self._handle("PUT")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
