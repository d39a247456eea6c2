"""A contract double of the GitHub REST API subset orchestrator uses, on a local HTTP
server, backed by a REAL bare git repository: the pull requests' heads are the repository's
branches, mergeability comes from ``git merge-tree``, and a merge writes a real merge commit
(``git commit-tree`` + ``git update-ref``) onto the base branch, so the history is real.

Endpoints, with the shapes of GitHub's published REST description (API version 2022-11-28):

- ``GET  /repos/{owner}/{repo}`` (``allow_merge_commit``, ``allow_squash_merge``,
  ``allow_rebase_merge``: ``allowed`` holds the methods the repository allows)
- ``GET  /repos/{owner}/{repo}/pulls?head=owner:branch&base=...&state=open``
- ``POST /repos/{owner}/{repo}/pulls`` (201; 422 when one is already open)
- ``GET  /repos/{owner}/{repo}/pulls/{n}`` (``mergeable``, ``mergeable_state``, ``head.sha``,
  ``commits``). As the description says ("The value of the mergeable attribute can be true,
  false, or null. If the value is null, then GitHub has started a background job to compute
  the mergeability"), the first read after the head or the base moved answers
  ``mergeable: null`` and ``mergeable_state: unknown``; the next one the value.
- ``PUT  /repos/{owner}/{repo}/pulls/{n}/merge`` (``sha``: 409 when the head moved;
  405 when not mergeable, or when ``merge_method`` is one the repository does not allow;
  ``merge``, ``squash`` or ``rebase``, each writing the commits GitHub writes)
- ``GET  /repos/{owner}/{repo}/commits/{ref}/status`` and ``/check-runs`` (``per_page``,
  30 by default, at most 100, and ``page``; a ``Link`` header names the next page). The
  combined status holds ``statuses`` (context: state) with its ``state`` as "Get the combined
  status for a specific reference" says: ``failure`` if any context reports ``error`` or
  ``failure``, ``pending`` "if there are no statuses or a context is pending", else
  ``success``.

Awkward answers a test can ask for: queued failures with their headers (``failures``: a rate
limit as 403 with ``x-ratelimit-remaining: 0`` and ``x-ratelimit-reset``, or 429 with
``retry-after``, as "Rate limits for the REST API" describes), answers lost after the work
was done (``lost``: ``"PUT"`` merges and then drops the connection, ``"503 PUT"`` answers
503), and merges that lose a race with another merge (``base_races``: the base moves, 405).
- ``GET  /repos/{owner}/{repo}/branches/{branch}`` (``protected``)

Branch protection of the base is modelled by ``required_checks`` and ``review_required``
(``approved`` says a review was given); ``checks`` are the check runs every head gets, and
running ones complete after ``checks_finish_after`` reads of the pull request, and none is
reported at all before ``checks_reported_after`` reads (CI that starts late), nor one named
in ``reported_after`` before its own count of reads. The bare
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
from tests.http_double import Reply, Request, lose_answer, queued_failure, serve

_MOVED = "Head branch was modified. Review and try the merge again."
# What GitHub answers (405) when the base moved while it made the merge: reported in
# cli/cli#8092 and kubernetes-retired/contrib#141, not in the REST description.
_BASE_MOVED = "Base branch was modified. Review and try the merge again."
_NOT_ALLOWED = {
    "merge": "Merge commits are not allowed on this repository.",
    "squash": "Squash merges are not allowed on this repository.",
    "rebase": "Rebase merges are not allowed on this repository.",
}


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
    statuses: dict[str, str] = field(default_factory=dict)  # commit statuses, context: state
    checks_finish_after: int = 0
    checks_reported_after: int = 0  # no check run at all until this many reads (CI is slow)
    reported_after: dict[str, int] = field(default_factory=dict)  # one check's own delay
    required_checks: tuple[str, ...] = ()
    review_required: bool = False
    protected: tuple[str, ...] = ()  # branches GET /branches/{branch} says are protected
    approved: bool = False
    allowed: tuple[str, ...] = ("merge", "squash", "rebase")  # the repository's settings
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # answers lost after the work: "PUT", ...
    # Reads of a merged pull request that still show it open: GitHub can record a merge a
    # moment after failing to answer for it (sonichi/sutando#2865: a 502, then merged=false).
    merged_late: int = 0
    base_races: int = 0  # merges that lose a race: another merge lands on the base, 405
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
        if self._check_reads < self.checks_reported_after:
            return []  # CI has not reported yet: the list is empty, as on GitHub
        return [  # a check not reported yet is not listed ("List check runs for a Git reference")
            {
                "id": i,
                "name": name,
                "status": spec[0],
                "conclusion": (spec[0] == "completed" and spec[1]) or None,
            }
            for i, (name, spec) in enumerate(self.checks.items(), 1)
            if self._check_reads >= self.reported_after.get(name, 0)
        ]

    def view(self, pr: dict[str, Any], *, listed: bool = False) -> dict[str, Any]:
        """The pull request as GitHub shows it now (head and mergeability read live).
        ``listed``: as the list endpoint shows it ("pull-request-simple": no mergeability,
        and listing starts no computation)."""
        head_sha = self.tip(pr["head"]) or pr["head_sha"]
        if not pr["merged"]:
            pr["head_sha"] = head_sha
        base_sha = self.tip(pr["base"]) or ""
        mergeable: bool | None = None
        state = "unknown"
        if listed:
            pass
        elif pr["state"] == "open" and pr.get("_computed") == (base_sha, head_sha):
            mergeable = not self.conflicts(base_sha, head_sha)
            state = self.mergeable_state(mergeable)
        elif pr["state"] == "open":
            pr["_computed"] = (base_sha, head_sha)  # computed in the background: next read
        late = pr["merged"] and pr.get("_late", 0) > 0 and not listed
        if late:
            pr["_late"] -= 1
        url = f"https://github.com/{self.repo}/pull/{pr['number']}"
        shown = {
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
            "commits": len(self.commits(base_sha, head_sha)) if not pr["merged"] else pr["commits"],
            "head": {"ref": pr["head"], "sha": head_sha, "label": f"{self.owner}:{pr['head']}"},
            "base": {"ref": pr["base"], "sha": base_sha, "label": f"{self.owner}:{pr['base']}"},
        }
        if late:
            shown.update(state="open", merged=False, merge_commit_sha=None)
        if listed:
            for key in ("merged", "mergeable", "mergeable_state", "commits"):
                shown.pop(key)
        return shown

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

    def commits(self, base: str, head: str) -> list[str]:
        """The commits of a pull request: on ``head``, not on ``base``, oldest first."""
        if not base or not head:
            return []
        listed = git(self.origin, "rev-list", "--reverse", "--no-merges", f"{base}..{head}")
        return listed.split()

    def merge(self, pr: dict[str, Any], sha: str, method: str) -> tuple[int, dict[str, Any]]:
        if method not in _NOT_ALLOWED:
            return 422, {"message": "Validation Failed", "errors": [{"field": "merge_method"}]}
        if method not in self.allowed:
            return 405, {"message": _NOT_ALLOWED[method]}
        if pr["merged"] or pr["state"] != "open":
            return 405, {"message": "Pull Request is not mergeable"}
        head_now = self.tip(pr["head"]) or pr["head_sha"]
        if sha and sha != head_now:
            return 409, {"message": _MOVED}
        if self.base_races > 0:  # another pull request merged meanwhile: the base moved
            self.base_races -= 1
            base = self.tip(pr["base"])
            other = git(
                self.origin, "commit-tree", f"{base}^{{tree}}", "-p", str(base), "-m", "other"
            )
            git(self.origin, "update-ref", f"refs/heads/{pr['base']}", other, str(base))
            return 405, {"message": _BASE_MOVED}
        pr["_computed"] = (self.tip(pr["base"]), head_now)  # the merge endpoint computes it
        view = self.view(pr)
        if view["mergeable_state"] not in ("clean", "unstable", "has_hooks"):
            return 405, {"message": "Pull Request is not mergeable"}
        base_sha, head_sha = view["base"]["sha"], view["head"]["sha"]
        count = len(self.commits(base_sha, head_sha))
        commit = {"merge": self._merge_commit, "squash": self._squash, "rebase": self._rebase}[
            method
        ](pr, base_sha, head_sha)
        git(self.origin, "update-ref", f"refs/heads/{pr['base']}", commit, base_sha)
        pr.update(
            merged=True, state="closed", merge_commit_sha=commit, head_sha=head_sha, commits=count
        )
        pr["_late"] = self.merged_late
        return 200, {"sha": commit, "merged": True, "message": "Pull Request successfully merged"}

    def _merge_commit(self, pr: dict[str, Any], base: str, head: str) -> str:
        tree = git(self.origin, "merge-tree", "--write-tree", base, head).splitlines()[0]
        message = (
            f"Merge pull request #{pr['number']} from {self.owner}/{pr['head']}\n\n{pr['title']}"
        )
        return git(self.origin, "commit-tree", tree, "-p", base, "-p", head, "-m", message)

    def _squash(self, pr: dict[str, Any], base: str, head: str) -> str:
        """One new commit on ``base`` with the pull request's changes: not a descendant of
        the head, as on GitHub."""
        tree = git(self.origin, "merge-tree", "--write-tree", base, head).splitlines()[0]
        message = f"{pr['title']} (#{pr['number']})"
        return git(self.origin, "commit-tree", tree, "-p", base, "-m", message)

    def _rebase(self, pr: dict[str, Any], base: str, head: str) -> str:
        """Each commit of the pull request rewritten onto ``base`` (new shas), as GitHub's
        rebase merge does; the last one."""
        work = self.origin.parent / f"rebase-{pr['number']}-{base[:8]}"
        git(self.origin, "worktree", "add", "--detach", str(work), base)
        try:
            for commit in self.commits(base, head):
                git(work, "cherry-pick", "--allow-empty", commit)
            return git(work, "rev-parse", "HEAD")
        finally:
            git(self.origin, "worktree", "remove", "--force", str(work))


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
    return lose_answer(state.lost, request, _route(state, request))


def _route(state: GitHubState, request: Request) -> Reply:
    method, body, rest = request.method, request.body, request.segments[3:]
    if rest == [] and method == "GET":
        return 200, {
            "full_name": state.repo,
            "default_branch": "main",
            "allow_merge_commit": "merge" in state.allowed,
            "allow_squash_merge": "squash" in state.allowed,
            "allow_rebase_merge": "rebase" in state.allowed,
        }
    if rest == ["pulls"] and method == "GET":
        query = request.query
        return 200, [
            state.view(pr, listed=True)
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
            wanted = body or {}
            return state.merge(pr, wanted.get("sha", ""), wanted.get("merge_method", "merge"))
        return _NOT_FOUND
    if len(rest) == 2 and rest[0] == "branches" and method == "GET":
        return _branch(state, rest[1])
    if len(rest) == 3 and rest[0] == "commits" and rest[2] == "status":
        listed = [{"context": c, "state": s} for c, s in state.statuses.items()]
        return _page(request, "statuses", listed, {"sha": rest[1], "state": _combined(state)})
    if len(rest) == 3 and rest[0] == "commits" and rest[2] == "check-runs":
        return _page(request, "check_runs", state.check_runs(), {})
    return _NOT_FOUND


def _combined(state: GitHubState) -> str:
    """The combined ``state``: "failure if any of the contexts report as error or failure",
    "pending if there are no statuses or a context is pending", else success."""
    states = set(state.statuses.values())
    if states & {"error", "failure"}:
        return "failure"
    return "pending" if "pending" in states or not states else "success"


def _branch(state: GitHubState, name: str) -> Reply:
    """``GET /branches/{branch}``: its tip and whether it is ``protected`` (404 unknown)."""
    tip = state.tip(name)
    if tip is None:
        return 404, {"message": "Branch not found"}
    return 200, {"name": name, "commit": {"sha": tip}, "protected": name in state.protected}


def _page(request: Request, key: str, items: list[dict[str, Any]], more: dict[str, Any]) -> Reply:
    """One page of ``items`` under ``key`` (and ``more``): ``per_page`` (30 by default, at
    most 100) from ``page`` (1-based), a ``Link`` header naming the next page while there is
    one."""
    per_page = min(100, int(request.query.get("per_page", "30")))
    page = int(request.query.get("page", "1"))
    shown = items[(page - 1) * per_page : page * per_page]
    headers: dict[str, str] = {}
    if page * per_page < len(items):
        host = request.headers.get("Host")
        following = f"http://{host}{request.path}?per_page={per_page}&page={page + 1}"
        headers["Link"] = f'<{following}>; rel="next"'
    return 200, {"total_count": len(items), key: shown, **more}, headers


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
