"""A small client of GitHub's REST API: the pull request and check calls a release needs.

Endpoints (GitHub's published REST reference, API version 2022-11-28, ``https://api.github.com``):

- ``GET  /repos/{owner}/{repo}``                             ``allow_merge_commit``,
  ``allow_squash_merge``, ``allow_rebase_merge``: the merge methods the repository allows
- ``GET  /repos/{owner}/{repo}/pulls?head=owner:branch&base=...&state=open``  find the PR
- ``POST /repos/{owner}/{repo}/pulls``                       open one (title, head, base, body)
- ``GET  /repos/{owner}/{repo}/pulls/{n}``                   state, merged, mergeable,
  ``mergeable_state`` (clean, dirty, blocked, behind, unstable, unknown, ...), ``head.sha``
- ``PUT  /repos/{owner}/{repo}/pulls/{n}/merge``             ``{"sha", "merge_method"}``:
  200 merged (``sha``: the commit the merge made: a merge, squash or rebased commit), 405
  not mergeable or the method not allowed, 409 the head moved since ``sha``
- ``GET  /repos/{owner}/{repo}/commits/{ref}/status``        combined status (its ``state``
  unread: ``pending`` when there is no status at all) and ``.../check-runs``: 30 a page
  unless ``per_page`` (at most 100) says otherwise; the ``Link`` header names the next page

Whether a pull request can be merged is judged by :func:`judge_pull`, a pure function of
the pull request and its checks; which merge method to use by :func:`choose_merge_method`.

Opening a pull request and merging one change something: their answers may be lost
(:attr:`ApiError.ambiguous`). They are never sent again blindly: the client looks (the open
pull request from the head, the pull request merged at the pinned head) and adopts it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from orchestrator.errors import UsageError
from orchestrator.platforms.http import ApiClient, ApiError, look_late, read_secret
from orchestrator.playbook import Playbook

MERGE_METHODS = ("merge", "squash", "rebase")  # the default is the first one allowed
_PASSED = frozenset({"success", "neutral", "skipped"})
_HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
_BASE_MOVED = "Base branch was modified"  # 405: another merge landed meanwhile (cli/cli#8092)
_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="next"')


class MergeMoved(ApiError):
    """409 from the merge endpoint: the pull request's head is no longer the pinned sha."""


@dataclass(frozen=True)
class PullRequest:
    """A pull request as GitHub describes it (the fields a release uses)."""

    number: int
    url: str  # html_url: what a person opens
    state: str  # open | closed
    merged: bool
    draft: bool
    mergeable: bool | None  # None while GitHub computes it
    mergeable_state: str  # clean, dirty, blocked, behind, unstable, has_hooks, draft, unknown
    head_sha: str
    merge_commit_sha: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PullRequest:
        """From GitHub's pull request object."""
        head = data.get("head") or {}
        mergeable = data.get("mergeable")
        return cls(
            number=int(data["number"]),
            url=str(data.get("html_url") or data.get("url") or ""),
            state=str(data.get("state") or ""),
            merged=bool(data.get("merged")),
            draft=bool(data.get("draft")),
            mergeable=mergeable if isinstance(mergeable, bool) else None,
            mergeable_state=str(data.get("mergeable_state") or "unknown"),
            head_sha=str(head.get("sha") or ""),
            merge_commit_sha=data.get("merge_commit_sha") or None,
        )


@dataclass(frozen=True)
class Repository:
    """The merge methods a repository allows (``GET /repos/{owner}/{repo}``)."""

    allowed: tuple[str, ...]  # of MERGE_METHODS, in their order

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Repository:
        """From GitHub's repository object (a field it leaves out counts as allowed, as
        GitHub's own default is)."""
        flags = {
            "merge": data.get("allow_merge_commit", True),
            "squash": data.get("allow_squash_merge", True),
            "rebase": data.get("allow_rebase_merge", True),
        }
        return cls(tuple(m for m in MERGE_METHODS if flags[m] is not False))


def choose_merge_method(configured: str | None, repository: Repository) -> tuple[str | None, str]:
    """The merge method to use, or None and why not (pure): the playbook's
    ``git.github.merge_method`` if the repository allows it, else the first the repository
    allows of merge, squash, rebase."""
    allowed = ", ".join(repository.allowed) or "none"
    if configured is not None:
        if configured in repository.allowed:
            return configured, f"{configured} (git.github.merge_method)"
        return None, (
            f"git.github.merge_method is {configured}, which the repository does not allow "
            f"(it allows: {allowed}); set one it allows, or change the repository's settings"
        )
    if not repository.allowed:
        return None, "the repository allows no merge method"
    first = repository.allowed[0]
    return first, f"{first} (the first the repository allows of merge, squash, rebase)"


def next_page(link: str | None) -> str | None:
    """The URL of the next page in a ``Link`` header, None on the last page (pure)."""
    found = _NEXT.search(link or "")
    return found.group(1) if found else None


@dataclass(frozen=True)
class Checks:
    """A commit's statuses and check runs, sorted by how they stand."""

    failing: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    passing: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, statuses: Iterable[Any], runs: Iterable[Any]) -> Checks:
        """From the combined status's ``statuses`` and the ``check_runs``, JSON objects (pure)."""
        failing: list[str] = []
        pending: list[str] = []
        passing: list[str] = []
        for item in statuses:
            name, state = str(item.get("context")), str(item.get("state"))
            {"success": passing, "pending": pending}.get(state, failing).append(name)
        for run in runs:
            name = str(run.get("name"))
            if run.get("status") != "completed":
                pending.append(name)
            elif run.get("conclusion") in _PASSED:
                passing.append(name)
            else:
                failing.append(f"{name} ({run.get('conclusion')})")
        return cls(tuple(failing), tuple(pending), tuple(passing))


@dataclass(frozen=True)
class Mergeability:
    """GitHub's view of a pull request, judged: merge it, wait, or refuse (with why)."""

    verdict: Literal["mergeable", "waiting", "refused"]
    reason: str
    unreported: bool = False  # blocked while a required check may not have reported yet


def judge_pull(pr: PullRequest, checks: Checks) -> Mergeability:
    """Whether ``pr`` can be merged now, must be waited for, or cannot be merged (pure).

    ``blocked`` with checks still running is worth waiting for (a failing one may be optional), and
    so is blocked with every check reported passed, or none reported: GitHub lists only the checks
    that reported, so a required one not started yet is missing from them, as alike as a missing
    review (``unreported``). Blocked with a failing check once none runs is not.
    """
    failing = ", ".join(checks.failing)
    if pr.merged:
        return Mergeability("mergeable", "already merged")
    if pr.state != "open":
        return Mergeability("refused", f"pull request #{pr.number} is {pr.state}")
    if pr.draft or pr.mergeable_state == "draft":
        return Mergeability("refused", f"pull request #{pr.number} is a draft")
    if pr.mergeable is False or pr.mergeable_state == "dirty":
        return Mergeability(
            "refused", f"pull request #{pr.number} has merge conflicts (mergeable_state dirty)"
        )
    state = pr.mergeable_state
    if state == "blocked":
        if checks.pending:  # a failing check may be optional: GitHub says so once all ran
            return Mergeability("waiting", f"checks still running: {', '.join(checks.pending)}")
        if checks.failing:
            return Mergeability(
                "refused", f"pull request #{pr.number} is blocked: checks fail: {failing}"
            )
        seen = "every check reported passed" if checks.passing else "no check is reported yet"
        return Mergeability(
            "waiting",
            f"pull request #{pr.number} is blocked and {seen}: a required check may not have "
            "reported yet (or a required review is missing, or another rule is unmet)",
            unreported=True,
        )
    if state == "behind":
        return Mergeability(
            "refused",
            f"pull request #{pr.number} is behind its base: the branch protection wants the "
            "source up to date with the target",
        )
    if state == "unknown" or pr.mergeable is None:
        return Mergeability("waiting", "GitHub is still computing whether it can be merged")
    if state == "unstable":
        return Mergeability("mergeable", f"non-required checks fail: {failing or 'some'}")
    return Mergeability("mergeable", state)


@dataclass
class GitHubApi:
    """Calls for one repository (``owner/name``)."""

    repo: str
    client: ApiClient

    def find_open_pull(self, head: str, base: str) -> PullRequest | None:
        """The open pull request from branch ``head`` into ``base``, if there is one."""
        listing = self.client.call(
            "GET",
            f"/repos/{self.repo}/pulls",
            # A head of this repository is named owner:branch.
            params={"head": f"{self.repo.split('/')[0]}:{head}", "base": base, "state": "open"},
        )
        for data in listing or ():
            if isinstance(data, Mapping):
                return self.get_pull(int(data["number"]))  # the list omits mergeability
        return None

    def repository(self) -> Repository:
        """The repository's settings that a release depends on (its merge methods)."""
        return Repository.from_json(self.client.call("GET", f"/repos/{self.repo}"))

    def create_pull(self, head: str, base: str, *, title: str, body: str) -> PullRequest:
        """Open a pull request from ``head`` into ``base``; when the answer is lost, or
        GitHub says one is already open, the open one is adopted."""
        try:
            data = self.client.call(
                "POST",
                f"/repos/{self.repo}/pulls",
                json={"title": title, "head": head, "base": base, "body": body},
            )
        except ApiError as exc:
            if not (exc.ambiguous or exc.status == 422):
                raise
            if (found := self.find_open_pull(head, base)) is None:
                raise
            return found
        return PullRequest.from_json(data)

    def get_pull(self, number: int) -> PullRequest:
        """Pull request ``number`` as GitHub sees it now."""
        return PullRequest.from_json(self.client.call("GET", f"/repos/{self.repo}/pulls/{number}"))

    def merge_pull(self, number: int, sha: str, *, title: str, method: str = "merge") -> str:
        """Merge pull request ``number`` with ``method`` if its head is still ``sha``; the
        commit the merge made (with squash or rebase, not a descendant of ``sha``).

        :class:`MergeMoved` (409) when the head moved, :class:`ApiError` (405) when GitHub
        says it cannot be merged. 405 because another merge landed on the base meanwhile: the
        pull request is read again (GitHub computes its mergeability afresh) and the merge,
        still pinned to ``sha``, asked again, as often as the client's retry policy allows.
        When the answer is lost, the pull request is read (a few times: GitHub may say merged
        late): merged at ``sha``, its merge commit is adopted; otherwise an ambiguous error.
        """
        path = f"/repos/{self.repo}/pulls/{number}/merge"
        body = {"sha": sha, "merge_method": method, "commit_title": title}
        attempt = 0
        while True:
            try:
                return str(self.client.call("PUT", path, json=body)["sha"])
            except ApiError as exc:
                if exc.status == 409:
                    raise MergeMoved(str(exc), status=409) from None
                if exc.ambiguous:  # GitHub may record a merge it did only a moment later
                    merged = look_late(self.client.sleep, lambda: self._merged_at(number, sha))
                    if merged is not None:
                        return merged
                    raise ApiError(
                        f"{exc}; pull request #{number} does not say it is merged at "
                        f"{sha[:12]} yet: resume looks again",
                        status=exc.status,
                        ambiguous=True,
                    ) from None
                attempt += 1
                if _BASE_MOVED not in str(exc) or attempt >= self.client.retry.attempts:
                    raise
            self.client.sleep(self.client.retry.wait(attempt))
            if (merged := self._merged_at(number, sha)) is not None:
                return merged  # (merged by someone else meanwhile, at the release)

    def _merged_at(self, number: int, sha: str) -> str | None:
        """The merge commit of pull request ``number`` if GitHub says it is merged at ``sha``."""
        now = self.get_pull(number)
        return now.merge_commit_sha if now.merged and now.head_sha == sha else None

    def checks(self, ref: str) -> Checks:
        """The statuses and check runs of commit ``ref``, every page of each."""
        commit = f"/repos/{self.repo}/commits/{ref}"
        statuses = self._every(f"{commit}/status", "statuses")
        return Checks.from_json(statuses, self._every(f"{commit}/check-runs", "check_runs"))

    def _every(self, path: str, key: str) -> list[Any]:
        """The ``key`` items of every page of ``path``, 100 a page."""
        items: list[Any] = []
        page: str | None = path
        params: dict[str, str] | None = {"per_page": "100"}
        while page is not None:
            data, headers = self.client.exchange("GET", page, params=params)
            items.extend((data or {}).get(key) or ())
            page, params = next_page(headers.get("link")), None  # the link carries the query
        return items


def github_api(playbook: Playbook, environ: Mapping[str, str]) -> GitHubApi:
    """The client of the playbook's GitHub repository; UsageError without the token."""
    if (spec := playbook.git.github) is None:
        raise UsageError("git.via github_pr needs the git.github block")
    token = read_secret(environ, spec.token_env, "GitHub token")
    client = ApiClient("GitHub API", spec.api_url, token, headers=_HEADERS)
    return GitHubApi(spec.repo, client)
