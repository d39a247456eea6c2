"""Pre-flight: prove the later steps can succeed before anything changes.

The source and target branches exist on the remote, the working tree is clean, a trial merge
in a temporary worktree is conflict-free, and (``git.via: push``) the local target has no
commit the push would refuse to publish: a release that cannot merge must not migrate.
The source commit is pinned here, so what is migrated is exactly what is merged. The
monitor's HTTP checks must pass once here too: production already down before the deploy is
not the release's doing, and is found before anything changes.

With ``git.via: github_pr`` the pull request from source to target is found (or opened) here
too, and the run refuses to start (exit 21, a failed check against GitHub) when GitHub says
it cannot be merged (conflict, failing checks, a missing review) or when the repository does
not allow the playbook's ``git.github.merge_method``: before any backup or migration. The
merge method chosen (the playbook's, else the first the repository allows of merge, squash,
rebase) is recorded for the merge step.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.engine.outcomes import PreflightOutcome
from orchestrator.engine.steps.base import RunContext
from orchestrator.engine.steps.pull_request import (
    api_of,
    await_pull,
    find_or_open,
    judge_for_preflight,
    through_pull_request,
)
from orchestrator.errors import GuardError
from orchestrator.gitrepo import preflight
from orchestrator.monitor import CheckResult, http_check
from orchestrator.platforms.github import choose_merge_method
from orchestrator.playbook import Playbook

# How long pre-flight waits for GitHub to compute a new pull request's mergeability.
MERGEABILITY_WAIT_S = 60.0


@dataclass(frozen=True)
class PreflightStep:
    """Fetch, check branches and tree, trial-merge, pin the source commit, read its journal;
    with github_pr, find or open the pull request and check GitHub would merge it."""

    name: str = "preflight"

    def run(self, ctx: RunContext) -> PreflightOutcome:
        spec = ctx.playbook.git
        pushes = spec.via == "push"  # github_pr merges through GitHub, not from this clone
        result = preflight(ctx.repo, spec.remote, spec.source, spec.target, pushes=pushes)
        ctx.record.source_commit = result.source_commit
        journal = ctx.journal  # bad migrations at the source commit stop the run here
        outcome = PreflightOutcome(
            ok=True,
            repo=str(spec.repo),
            remote=spec.remote,
            source=spec.source,
            target=spec.target,
            via=spec.via,
            source_commit=result.source_commit,
            target_commit=result.target_commit,
            fast_forward=result.fast_forward,
            already_merged=result.already_merged,
            migrations_dir=ctx.migrations_path,
            migrations=[m.tag for m in journal.migrations],
        )
        if through_pull_request(spec.via, result.already_merged):  # the rehearsal asks too
            outcome = _pull_request(ctx, result.source_commit, outcome)
        healthy_before(ctx)
        return outcome

    def done(self, ctx: RunContext) -> PreflightOutcome | None:
        # Pre-flight is read-only and cheap; a resumed run proves it again.
        return None


def healthy_before(ctx: RunContext) -> None:
    """The monitor's HTTP checks pass once before anything changes: a health endpoint that
    is already down would only be found after the migration and the push, and the monitor
    could not tell the release's harm from it. GuardError (halt 21, nothing changed) if not.
    (The SQL checks wait for the monitor: they may read what the release adds.)"""
    for result in baseline_checks(ctx.playbook):
        ctx.log.info("baseline_check", check=result.name, ok=result.ok, detail=result.detail)
        if not result.ok:
            raise GuardError(unhealthy_before(result))


def baseline_checks(playbook: Playbook) -> list[CheckResult]:
    """The monitor's HTTP checks, each asked once now."""
    return [
        http_check(h.url, expect_status=h.expect_status, timeout=h.timeout, name=h.label)()
        for h in playbook.monitor.http
    ]


def unhealthy_before(result: CheckResult) -> str:
    """Why a run does not start on production that is already down (pure)."""
    return (
        f"production is already unhealthy before the deploy: {result.name}: {result.detail}; "
        "nothing was changed: make it healthy first (the monitor could not tell the "
        "release's harm from it)"
    )


def _pull_request(ctx: RunContext, pinned: str, outcome: PreflightOutcome) -> PreflightOutcome:
    """``outcome`` with the pull request found or opened and the merge method chosen;
    GuardError when GitHub would not merge it, or not with the playbook's merge method."""
    api = api_of(ctx)
    github = ctx.playbook.git.github
    assert github is not None  # the playbook requires it with github_pr
    method, why = choose_merge_method(github.merge_method, api.repository())
    if method is None:
        raise GuardError(f"cannot merge through GitHub {github.repo}: {why}")
    ctx.log.info("merge_method_chosen", merge_method=method, reason=why)
    pr, opened = find_or_open(ctx, api)
    ctx.log.info(
        "pull_request_opened" if opened else "pull_request_found",
        number=pr.number,
        url=pr.url,
        head=pr.head_sha,
    )
    wait = min(MERGEABILITY_WAIT_S, github.checks_timeout)
    pr, judged = await_pull(api, pr.number, github, timeout=wait, for_checks=False, ctx=ctx)
    verdict = judge_for_preflight(pr, judged, pinned)
    if verdict.verdict == "refused":
        raise GuardError(verdict.reason)
    ctx.log.info(
        "pull_request_mergeable",
        number=pr.number,
        mergeable_state=pr.mergeable_state,
        note=verdict.reason,
    )
    return outcome.model_copy(
        update={
            "pull_request": pr.number,
            "pull_request_url": pr.url,
            "pull_request_opened": opened,
            "mergeable_state": pr.mergeable_state,
            "merge_method": method,
        }
    )
