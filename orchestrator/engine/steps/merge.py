"""Merge the pinned source commit into the target branch and push it (after confirmation)."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.engine.outcomes import PreflightOutcome
from orchestrator.engine.steps.base import Outcome, RunContext
from orchestrator.errors import GuardError
from orchestrator.gitrepo import MergeResult, is_merged, merge_and_push


def merge_outcome(result: MergeResult) -> Outcome:
    """A merge result as plain JSON."""
    return {
        "pushed_commit": result.pushed_commit,
        "previous_target_commit": result.previous_target_commit,
        "merge_commit": result.merge_commit,
        "fast_forward": result.fast_forward,
    }


@dataclass(frozen=True)
class MergeStep:
    """git fetch, check out target, merge source (ff when possible), push; restore on failure."""

    name: str = "merge"

    def run(self, ctx: RunContext) -> Outcome:
        spec = ctx.playbook.git
        commit = ctx.record.source_commit
        assert commit is not None  # pinned by pre-flight
        if not ctx.confirm(f"Merge {spec.source} ({commit[:12]}) into {spec.target} and push"):
            raise GuardError(
                "the operator declined the merge: the database is migrated, "
                "the code is not deployed"
            )
        result = merge_and_push(
            ctx.repo,
            spec.remote,
            commit,
            spec.target,
            message=f"Release {ctx.playbook.name}: merge {spec.source} into {spec.target}\n\n"
            f"orchestrator run {ctx.record.run_id}",
        )
        return merge_outcome(result)

    def done(self, ctx: RunContext) -> Outcome | None:
        # Postcondition: the pinned source commit is on the remote target branch.
        spec = ctx.playbook.git
        commit = ctx.record.source_commit
        if commit is None or not is_merged(ctx.repo, spec.remote, spec.target, commit):
            return None
        tip = ctx.repo.git.rev_parse(f"{spec.remote}/{spec.target}")
        previous = PreflightOutcome.of(ctx.record).target_commit or tip
        parents = [p.hexsha for p in ctx.repo.commit(tip).parents]
        merge_commit = tip if len(parents) > 1 and commit in parents else None
        return {
            "pushed_commit": tip,
            "previous_target_commit": previous,
            "merge_commit": merge_commit,
            "fast_forward": merge_commit is None,
            "note": "found merged on resume: the interrupted attempt pushed",
        }
