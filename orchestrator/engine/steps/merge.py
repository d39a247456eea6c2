"""Merge the pinned source commit into the target branch (after confirmation).

``git.via: push`` merges in the operator's clone and pushes. ``git.via: github_pr`` merges
the pull request pre-flight found, through GitHub's merge endpoint pinned to the release
commit (a commit pushed to the source after pre-flight makes GitHub answer 409 and is never
released) with the merge method pre-flight chose, after waiting for required checks that
are still running. Nothing is pushed to the target directly.

The commit GitHub says the merge made is the release from then on (``pushed_commit``): with squash
or rebase it is a new commit that does not contain the staging commit, so the guards, resume's
``done()``, the release gate and the rollback plan all follow it, never the staging sha. The method
recorded is the one its commits show, not pre-flight's: someone may have merged the pull request by
hand. A merge whose answer was lost is not sent again: the pull request is read, and merged at the
pinned head its merge commit is adopted (:meth:`GitHubApi.merge_pull`).
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.engine.outcomes import MergeOutcome, PreflightOutcome
from orchestrator.engine.steps.base import RunContext
from orchestrator.engine.steps.pull_request import api_of, await_pull
from orchestrator.errors import GuardError
from orchestrator.gitrepo import how_merged, is_merged, merge_and_push, remote_tips
from orchestrator.platforms.github import GitHubApi, MergeMoved, PullRequest

_NOT_DEPLOYED = "the database is migrated, the code is not deployed"


@dataclass(frozen=True)
class MergeStep:
    """push: git fetch, check out target, merge source (ff when possible), push; restore on
    failure. github_pr: merge the pull request through the API, pinned to the release."""

    name: str = "merge"

    def run(self, ctx: RunContext) -> MergeOutcome:
        spec = ctx.playbook.git
        commit = ctx.record.source_commit
        assert commit is not None  # pinned by pre-flight
        preflight = _preflight(ctx)
        started = (preflight.remote, preflight.target)
        if started != (spec.remote, spec.target):
            # The release goes only where pre-flight checked it would merge cleanly.
            raise GuardError(
                f"the run started releasing to {'/'.join(map(str, started))}, the playbook now "
                f"says {spec.remote}/{spec.target}: nothing is pushed to a target the run did "
                "not start with"
            )
        pushed = (ctx.record.steps.merge or MergeOutcome()).pushed_commit
        if pushed:  # done() did not find it: merging again would undo someone's removal
            raise GuardError(
                f"someone removed the release from {spec.remote}/{spec.target} after the run "
                f"pushed it ({pushed[:12]}): nothing was pushed again. Decide by hand whether "
                "it ships; if it should, start a new deploy"
            )
        how = f"pull request #{preflight.pull_request}" if spec.via == "github_pr" else "push"
        question = f"Merge {spec.source} ({commit[:12]}) into {spec.target} ({how})"
        if not ctx.confirm(question):
            raise GuardError(f"the operator declined the merge: {_NOT_DEPLOYED}")
        if spec.via == "github_pr":
            return _merge_pull_request(ctx, commit)
        result = merge_and_push(
            ctx.repo,
            spec.remote,
            commit,
            spec.target,
            message=f"Release {ctx.playbook.name}: merge {spec.source} into {spec.target}\n\n"
            f"orchestrator run {ctx.record.run_id}",
        )
        if result.continued_from is not None:
            ctx.log.warning(
                "local_merge_continued",
                local_tip=result.continued_from,
                pushed_commit=result.pushed_commit,
                note=f"local {spec.target} held this run's own unpushed merge (an interrupted "
                "push): put back at the remote's tip and merged again",
            )
        return MergeOutcome.model_validate(result, from_attributes=True)

    def done(self, ctx: RunContext) -> MergeOutcome | None:
        # Postcondition: the pinned source commit is on the remote target branch (and, with
        # github_pr, GitHub says the pull request is merged).
        spec = ctx.playbook.git
        commit = ctx.record.source_commit
        preflight = _preflight(ctx)
        number = preflight.pull_request
        if spec.via == "github_pr" and number is not None:
            # The commit GitHub's merge made is on the target (a squash or rebase commit
            # never contains the staging commit, so that one is not what to look for).
            pr = api_of(ctx).get_pull(number)
            if not pr.merged or pr.head_sha != commit or pr.merge_commit_sha is None:
                return None  # (merged at another head: run() says so)
            if not is_merged(ctx.repo, spec.remote, spec.target, pr.merge_commit_sha):
                return None
            return _pull_request_outcome(
                ctx,
                pr,
                pr.merge_commit_sha,
                note="found merged on resume: the interrupted attempt merged",
            )
        if commit is None or not is_merged(ctx.repo, spec.remote, spec.target, commit):
            return None
        note = (
            "already in the target before the run: nothing to merge"
            if preflight.already_merged
            else "found merged on resume: the interrupted attempt pushed"
        )
        tip = ctx.repo.git.rev_parse(f"{spec.remote}/{spec.target}")
        previous = preflight.target_commit or tip
        # What the run's own push made, not the tip: someone may have pushed on top since. Each
        # commit the target gained, with its parents: a merge of ``commit`` has it after the first.
        gained = ctx.repo.git.rev_list(
            "--first-parent", "--reverse", "--parents", f"{previous}..{tip}"
        )
        merge_commit = next(
            (c[0] for c in map(str.split, gained.splitlines()) if commit in c[2:]), None
        )
        own = previous if preflight.already_merged else commit
        return MergeOutcome(
            pushed_commit=merge_commit or own,
            previous_target_commit=previous,
            merge_commit=merge_commit,
            fast_forward=merge_commit is None,
            note=note,
        )


def _preflight(ctx: RunContext) -> PreflightOutcome:
    return ctx.record.steps.preflight or PreflightOutcome()


def _merge_pull_request(ctx: RunContext, commit: str) -> MergeOutcome:
    """Wait for running checks, merge pinned to ``commit``, fetch the merge commit."""
    github = ctx.playbook.git.github
    assert github is not None  # the playbook requires it with github_pr
    if (number := _preflight(ctx).pull_request) is None:
        raise GuardError(f"pre-flight recorded no pull request to merge: {_NOT_DEPLOYED}")
    api = api_of(ctx)
    pr = api.get_pull(number)
    if pr.merged and pr.head_sha != commit:
        raise GuardError(
            f"{pr.url} was merged at {pr.head_sha[:12]}, not at the release {commit[:12]}: commits "
            "pushed after pre-flight went out without being checked against production's schema"
        )
    if pr.merged and pr.merge_commit_sha:
        return _pull_request_outcome(ctx, pr, pr.merge_commit_sha)
    if pr.head_sha == commit:
        # The head is still the release: wait for checks that are still running.
        timeout = github.checks_timeout
        pr, verdict = await_pull(api, number, github, timeout=timeout, for_checks=True, ctx=ctx)
        if verdict.verdict == "refused":
            raise GuardError(f"GitHub cannot merge {pr.url}: {verdict.reason}; {_NOT_DEPLOYED}")
        if verdict.verdict == "waiting":
            raise GuardError(
                f"{pr.url} is still not mergeable after {github.checks_timeout:g}s "
                f"({verdict.reason}); {_NOT_DEPLOYED}"
            )
    # Otherwise the source moved: GitHub's merge endpoint refuses the pinned sha (409).
    merged = _merge(ctx, api, pr, commit)
    ctx.log.info("pull_request_merged", number=number, url=pr.url, merge_commit=merged)
    return _pull_request_outcome(ctx, api.get_pull(number), merged)


def _merge(ctx: RunContext, api: GitHubApi, pr: PullRequest, commit: str) -> str:
    spec = ctx.playbook.git
    title = f"Release {ctx.playbook.name}: merge {spec.source} into {spec.target}"
    method = _preflight(ctx).merge_method
    try:
        return api.merge_pull(
            pr.number, commit, title=f"{title} (run {ctx.record.run_id})", method=method
        )
    except MergeMoved:
        now = api.get_pull(pr.number).head_sha
        raise GuardError(
            f"{spec.source} moved after pre-flight (pull request #{pr.number} heads "
            f"{now[:12]}, the release is {commit[:12]}): GitHub refused the merge pinned to "
            f"the release, so commits pushed after pre-flight are not released; "
            f"{_NOT_DEPLOYED}. Deploy again to release them"
        ) from None


def _pull_request_outcome(
    ctx: RunContext, pr: PullRequest, merge_commit: str, note: str | None = None
) -> MergeOutcome:
    """The merge as recorded: the commit GitHub's merge made, fetched into the clone, the
    target's tip before it and the method its commits show (someone may have merged the pull
    request by hand with another method than pre-flight's)."""
    spec = ctx.playbook.git
    remote_tips(ctx.repo, spec.remote, [spec.target])  # bring the merge commit in
    method, previous = how_merged(ctx.repo, merge_commit, pr.head_sha)
    return MergeOutcome(
        pushed_commit=merge_commit,
        previous_target_commit=previous,
        merge_commit=merge_commit if method == "merge" else None,
        via="github_pr",
        pull_request=pr.number,
        pull_request_url=pr.url,
        merge_method=method,
        note=note,
    )
