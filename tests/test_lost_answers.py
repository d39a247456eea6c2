"""Platforms that lose their answer after doing the work, end to end: the Neon double makes
the backup branch, the GitHub double opens the pull request and merges it, the Vercel double
serves the release, and each drops the connection instead of answering (Neon's reference:
such a request "may have reached the server and been successfully processed, but the
response failed to reach the client"). The deploy never sends a request that changes
something twice: it looks (again, when GitHub records a merge late), finds what was done
and adopts it. Exactly one backup branch,
exactly one pull request, exactly one merge.

Also a repository that allows only squash merges, deployed end to end: the release gate
waits for the squash commit GitHub made, not for the staging commit.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.engine.rollback import rollback_plan
from orchestrator.sandbox.release import git
from tests.drizzle_helpers import tracking_rows
from tests.github_double import github_double
from tests.neon_world import neon_world
from tests.release_world import TRANSITIONS_OF_A_FULL_DEPLOY, build_world, transitions
from tests.test_github_pr import through_github
from tests.test_release_gate import with_release
from tests.vercel_double import vercel_double

KEY = "napi_l0st_answers_k3y_0123456789"


def test_a_deploy_whose_answers_are_lost_backs_up_once_and_merges_once(
    tmp_path: Path, baseline_url: str
) -> None:
    with (
        build_world(tmp_path, baseline_url, at_baseline=True) as world,
        neon_world(world, KEY) as neon,
        github_double(world.repo.origin) as (api, github),
    ):
        through_github(world, api)
        neon.lost = ["POST /branches"]
        github.lost = ["POST /pulls", "PUT /merge"]
        github.merged_late = 1  # and the pull request says merged only on a second read
        env = {
            "DATABASE_URL": world.database_url,
            "NEON_API_KEY": KEY,
            "GITHUB_TOKEN": github.token,
        }
        before = world.origin_main()
        record = world.deploy(environ=env)
        assert record.state == "succeeded", record.halt_reason
        assert transitions(record) == TRANSITIONS_OF_A_FULL_DEPLOY
        assert neon.lost == [] and github.lost == []  # every answer was lost, once
        # Exactly one backup branch, made by one request, and recorded as the backup.
        backups = [b for b in neon.branches.values() if str(b["name"]).startswith("pre-")]
        assert [b["id"] for b in backups] == [record.steps.backup.branch_id]
        creates = [r for r in neon.requests if r[0] == "POST" and r[1].endswith("/branches")]
        assert len(creates) == 1
        # Exactly one pull request and one merge; main holds it, migrations applied.
        assert len(github.pulls) == 1
        assert len([r for r in github.requests if r[0] == "PUT"]) == 1
        tip = world.origin_main()
        assert record.steps.merge.pushed_commit == tip != before
        assert git(world.repo.origin, "rev-parse", f"{tip}^2") == record.source_commit
        assert len(tracking_rows(world.database_url)) == 12
        plan = "\n".join(rollback_plan(record))
        assert "nothing was merged" not in plan and f"git revert --no-edit -m 1 {tip}" in plan


def test_a_squash_only_repository_deploys_and_the_gate_waits_for_the_squash_commit(
    tmp_path: Path, baseline_url: str
) -> None:
    with (
        build_world(tmp_path, baseline_url, at_baseline=True) as world,
        github_double(world.repo.origin) as (api, github),
        vercel_double(world.repo.origin) as (vercel_api, vercel),
    ):
        through_github(world, api)
        github.allowed = ("squash",)  # the repository's settings allow squash merges only
        vercel.build_seconds = 0.3
        with_release(
            world,
            f"{{timeout: 15s, interval: 100ms, vercel: {{project_id: {vercel.project_id}, "
            f"team_id: {vercel.team_id}, api_url: '{vercel_api}'}}}}",
        )
        env = {
            "DATABASE_URL": world.database_url,
            "GITHUB_TOKEN": github.token,
            "VERCEL_TOKEN": vercel.token,
        }
        before = world.origin_main()
        record = world.deploy(environ=env)
        assert record.state == "succeeded", record.halt_reason
        assert record.steps.preflight.merge_method == "squash"
        [merge] = [body for method, _p, body in github.requests if method == "PUT"]
        assert merge["merge_method"] == "squash" and merge["sha"] == record.source_commit
        squash = world.origin_main()
        # One commit on main's old tip, not containing the staging commit.
        assert git(world.repo.origin, "rev-parse", f"{squash}^@") == before
        assert squash not in (record.source_commit,)
        merged = record.steps.merge
        assert (merged.pushed_commit, merged.merge_method) == (squash, "squash")
        assert merged.previous_target_commit == before and merged.merge_commit is None
        # The gate waited for the squash commit's deployment, the one Vercel built.
        gate = record.steps.release
        assert gate.commit == squash and gate.live is True
        assert gate.deployment_id == vercel.deployments[0]["uid"]
        assert vercel.deployments[0]["meta"]["githubCommitSha"] == squash
        plan = "\n".join(rollback_plan(record))
        assert f"git commit-tree '{before}^{{tree}}' -p {squash} " in plan


def test_a_merge_method_the_repository_forbids_stops_before_the_backup(
    tmp_path: Path, baseline_url: str
) -> None:
    with (
        build_world(tmp_path, baseline_url, at_baseline=True) as world,
        github_double(world.repo.origin) as (api, github),
    ):
        through_github(world, api, extra=", merge_method: merge")
        github.allowed = ("squash", "rebase")
        rows = tracking_rows(world.database_url)
        record = world.deploy(
            environ={"DATABASE_URL": world.database_url, "GITHUB_TOKEN": github.token}
        )
        assert record.state == "halted" and record.exit_code == 21
        reason = str(record.halt_reason)
        assert "merge_method is merge" in reason and "allows: squash, rebase" in reason
        assert record.steps.backup is None and tracking_rows(world.database_url) == rows
        assert github.pulls == {}  # refused before a pull request was even opened


def test_a_rebase_merge_is_recorded_with_the_tip_before_it(
    tmp_path: Path, baseline_url: str
) -> None:
    with (
        build_world(tmp_path, baseline_url, at_baseline=True) as world,
        github_double(world.repo.origin) as (api, github),
    ):
        through_github(world, api, extra=", merge_method: rebase")
        before = world.origin_main()
        count = len(git(world.repo.origin, "rev-list", "--no-merges", "main..staging").split())
        record = world.deploy(
            environ={"DATABASE_URL": world.database_url, "GITHUB_TOKEN": github.token}
        )
        assert record.state == "succeeded", record.halt_reason
        tip = world.origin_main()
        merged = record.steps.merge
        assert (merged.pushed_commit, merged.merge_method) == (tip, "rebase")
        # Each commit of the pull request was rewritten onto main: the tip before is
        # that many first-parent steps back, and the revert covers exactly them.
        assert merged.previous_target_commit == before
        assert git(world.repo.origin, "rev-parse", f"{tip}~{count}") == before
        assert f"git commit-tree '{before}^{{tree}}' -p {tip} " in "\n".join(rollback_plan(record))
