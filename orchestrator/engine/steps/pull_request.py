"""The pull request a release merges through (``git.via: github_pr``): find or open it, and
wait while GitHub computes its mergeability or runs its checks.

Pre-flight and the merge step share these; the decision itself is
:func:`orchestrator.platforms.github.judge_pull` (pure). Whether a release goes through a
pull request at all (:func:`through_pull_request`) and pre-flight's verdict on the one found
(:func:`judge_for_preflight`) are pure too: the rehearsal judges with the same functions.
"""

from __future__ import annotations

import time

from orchestrator.engine.steps.base import RunContext
from orchestrator.platforms.github import (
    GitHubApi,
    Mergeability,
    PullRequest,
    github_api,
    judge_pull,
)
from orchestrator.playbook import GitHubSpec


def through_pull_request(via: str, already_merged: bool) -> bool:
    """Whether pre-flight finds (or opens) a pull request: ``git.via: github_pr``, unless the
    source is already in the target (nothing to merge, so nothing to ask GitHub) (pure)."""
    return via == "github_pr" and not already_merged


def judge_for_preflight(pr: PullRequest, verdict: Mergeability, pinned: str) -> Mergeability:
    """Pre-flight's verdict on pull request ``pr``, given GitHub's (``judge_pull``) (pure).

    Refused when its head is not the pinned source commit (the source moved), when GitHub
    would not merge it, or when GitHub has still not said what stands in the way once
    pre-flight's wait is over (:func:`not_started`), with the reason worded for the
    operator; else GitHub's verdict (``waiting`` for checks that run: the merge waits).
    """
    if pr.head_sha != pinned:
        return Mergeability(
            "refused",
            f"pull request #{pr.number} ({pr.url}) heads {pr.head_sha[:12]}, not the pinned "
            f"source commit {pinned[:12]}: the source moved during pre-flight; deploy again",
        )
    if verdict.verdict == "refused":
        return Mergeability("refused", f"GitHub cannot merge {pr.url}: {verdict.reason}")
    if not_started(pr, verdict):
        return Mergeability(
            "refused",
            f"GitHub has not said whether {pr.url} can be merged: {verdict.reason}; nothing "
            "changed, try again once GitHub has",
        )
    return verdict


def not_started(pr: PullRequest, verdict: Mergeability) -> bool:
    """Whether GitHub has not yet said what stands in the way (pure): it is still computing
    mergeability, or the pull request is blocked while a required check may not have reported yet.
    Worth waiting for in pre-flight, and a refusal when it lasts (nothing has changed yet)."""
    computing = pr.mergeable is None or pr.mergeable_state == "unknown"
    return verdict.verdict == "waiting" and (computing or verdict.unreported)


def api_of(ctx: RunContext) -> GitHubApi:
    """The run's GitHub client; its retries are logged to the audit trail, and a rate limit
    is waited out (at most the merge's ``checks_timeout``) with a notice for the operator."""
    api = github_api(ctx.playbook, ctx.environ)
    api.client.retry = ctx.retry
    api.client.on_retry = lambda attempt, what, wait: ctx.log.warning(
        "retry", attempt=attempt, error=f"GitHub API: {what}", wait_s=round(wait, 2)
    )
    if ctx.playbook.git.github is not None:
        api.client.wait_limit = ctx.playbook.git.github.checks_timeout

    def rate_limited(what: str, wait: float) -> None:
        ctx.log.warning("rate_limited", api="GitHub API", error=what, wait_s=round(wait, 2))
        ctx.on_progress(f"GitHub API rate limit: waiting {wait:.0f}s as GitHub asks")

    api.client.on_wait = rate_limited
    return api


def find_or_open(ctx: RunContext, api: GitHubApi) -> tuple[PullRequest, bool]:
    """The open pull request from the source into the target, opened if there is none;
    and whether this run opened it."""
    spec = ctx.playbook.git
    if (found := api.find_open_pull(spec.source, spec.target)) is not None:
        return found, False
    opened = api.create_pull(
        spec.source,
        spec.target,
        title=f"Release {ctx.playbook.name}: {spec.source} into {spec.target}",
        body=f"Opened by orchestrator run {ctx.record.run_id}. Migrations first (Strategy A): "
        "the run merges this pull request itself once production's schema is ready.",
    )
    return opened, True


def await_pull(
    api: GitHubApi,
    number: int,
    spec: GitHubSpec,
    *,
    timeout: float,
    for_checks: bool,
    ctx: RunContext | None = None,
) -> tuple[PullRequest, Mergeability]:
    """Ask GitHub about pull request ``number`` every ``checks_interval`` until its verdict
    is not ``waiting`` or ``timeout`` passes; the last answer.

    ``for_checks``: also wait while required checks run (the merge step); otherwise only
    while GitHub has not said yet what stands in the way (:func:`not_started`: pre-flight,
    and the rehearsal, which has no ``ctx`` to log and show the waits to).
    """
    deadline = time.monotonic() + timeout
    polls = 0
    while True:
        pr = api.get_pull(number)
        verdict = judge_pull(pr, api.checks(pr.head_sha))
        polls += 1
        worth_waiting = verdict.verdict == "waiting" and (for_checks or not_started(pr, verdict))
        if not worth_waiting or time.monotonic() >= deadline:
            return pr, verdict
        if ctx is not None and (polls == 1 or polls % 6 == 0):
            ctx.log.info(
                "pull_request_waiting",
                number=number,
                mergeable_state=pr.mergeable_state,
                reason=verdict.reason,
            )
        if ctx is not None:
            ctx.on_progress(f"pull request #{number}: {verdict.reason}")
        time.sleep(max(0.0, min(spec.checks_interval, deadline - time.monotonic())))
