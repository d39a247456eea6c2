"""Pre-flight: prove the later steps can succeed before anything changes.

The source and target branches exist on the remote, the working tree is clean, and a trial
merge in a temporary worktree is conflict-free: a release that cannot merge must not migrate.
The source commit is pinned here, so what is migrated is exactly what is merged.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.engine.steps.base import Outcome, RunContext
from orchestrator.gitrepo import preflight


@dataclass(frozen=True)
class PreflightStep:
    """Fetch, check branches and tree, trial-merge, pin the source commit, read its journal."""

    name: str = "preflight"

    def run(self, ctx: RunContext) -> Outcome:
        spec = ctx.playbook.git
        result = preflight(ctx.repo, spec.remote, spec.source, spec.target)
        ctx.record.source_commit = result.source_commit
        journal = ctx.journal  # bad migrations at the source commit stop the run here
        return {
            "ok": True,
            "repo": str(spec.repo),
            "remote": spec.remote,
            "source": spec.source,
            "target": spec.target,
            "source_commit": result.source_commit,
            "target_commit": result.target_commit,
            "fast_forward": result.fast_forward,
            "already_merged": result.already_merged,
            "migrations_dir": ctx.migrations_path,
            "migrations": [m.tag for m in journal.migrations],
        }

    def done(self, ctx: RunContext) -> Outcome | None:
        # Pre-flight is read-only and cheap; a resumed run proves it again.
        return None
