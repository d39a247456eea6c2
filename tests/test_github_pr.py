"""Merging through a GitHub pull request (``git.via: github_pr``), end to end: real
PostgreSQL, a real bare origin whose ``main`` refuses direct pushes (a pre-receive hook, as
branch protection does), and the GitHub contract double merging into that origin with git.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from orchestrator.audit import read_events
from orchestrator.cli import run
from orchestrator.engine.run import rollback
from orchestrator.errors import OrchestratorError, UsageError
from orchestrator.runs import RunStore
from orchestrator.sandbox.release import git
from tests.drizzle_helpers import tracking_rows
from tests.github_double import GitHubState, github_double, protect_branch
from tests.release_world import TRANSITIONS_OF_A_FULL_DEPLOY, World, build_world, transitions

GIT_LINE = "git: {repo: app, remote: origin, source: staging, target: main}"


def through_github(world: World, api: str, extra: str = "") -> None:
    """The world's playbook merges through the GitHub double at ``api`` (``extra``: more
    keys of the github: block), and its origin's main refuses direct pushes."""
    text = world.playbook.read_text()
    assert GIT_LINE in text
    world.playbook.write_text(
        text.replace(
            GIT_LINE,
            "git: {repo: app, remote: origin, source: staging, target: main, via: github_pr,\n"
            f"      github: {{repo: acme/service-desk, api_url: '{api}',\n"
            f"               checks_timeout: 10s, checks_interval: 100ms{extra}}}}}",
        )
    )
    protect_branch(world.repo.origin)


@contextmanager
def pr_world(root: Path, url: str) -> Iterator[tuple[World, GitHubState]]:
    """A release world whose target takes changes only through the GitHub double."""
    with (
        build_world(root, url, at_baseline=True) as world,
        github_double(world.repo.origin) as (api, github),
    ):
        through_github(world, api)
        yield world, github


def environ(world: World, github: GitHubState) -> dict[str, str]:
    return {"DATABASE_URL": world.database_url, "GITHUB_TOKEN": github.token}


def merges(github: GitHubState) -> list[dict[str, object]]:
    return [body for method, path, body in github.requests if method == "PUT" and body]


def test_a_release_is_merged_through_the_pull_request_pinned_to_the_preflight_commit(
    tmp_path: Path, baseline_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pr_world(tmp_path, baseline_url) as (world, github):
        before = world.origin_main()
        record = world.deploy(environ=environ(world, github))
        assert record.state == "succeeded", record.halt_reason
        assert transitions(record) == TRANSITIONS_OF_A_FULL_DEPLOY
        pinned = record.source_commit
        assert record.steps.preflight.pull_request == 1
        assert record.steps.preflight.pull_request_opened is True
        # GitHub's merge endpoint was called once, pinned to the pre-flight commit.
        assert merges(github) == [
            {
                "sha": pinned,
                "merge_method": "merge",
                "commit_title": merges(github)[0]["commit_title"],
            }
        ]
        # The history is real: main's tip is GitHub's merge commit of the release.
        tip = world.origin_main()
        assert record.steps.merge.merge_commit == tip
        assert git(world.repo.origin, "rev-parse", f"{tip}^1", f"{tip}^2").split() == [
            before,
            pinned,
        ]
        assert "Merge pull request #1" in git(world.repo.origin, "log", "-1", "--format=%B", tip)
        assert github.pulls[1]["merged"] is True
        # main refuses direct pushes (the hook): the run never tried one, yet it merged.
        assert "portfolioClassifier" in world.origin_file("app.ts")
        assert len(tracking_rows(world.database_url)) == 12
        # `show` names the pull request and the merge commit.
        assert run(["show", record.run_id, "--state-dir", str(world.store.state_dir)]) == 0
        shown = capsys.readouterr().out
        url = record.steps.preflight.pull_request_url
        assert f"pull request {url} opened" in shown
        assert f"step merge done: merged pull request #1 ({url}), merge commit {tip}" in shown
        assert github.token not in shown


def push_late_commit(clone: Path) -> str:
    """A commit pushed to staging after pre-flight, as a colleague would; its sha."""
    git(clone, "switch", "staging")
    (clone / "late.txt").write_text("not reviewed with the release\n")
    git(clone, "add", "late.txt")
    git(clone, "commit", "-m", "late change")
    git(clone, "push", "origin", "staging")
    late = git(clone, "rev-parse", "staging")
    git(clone, "switch", "main")
    return late


def test_a_commit_pushed_to_the_source_after_preflight_is_not_released(
    tmp_path: Path, baseline_url: str
) -> None:
    with pr_world(tmp_path, baseline_url) as (world, github):
        before = world.origin_main()
        clone = world.repo.clone

        def push_late_commit_then_confirm(question: str) -> bool:
            if question.startswith("Merge"):  # after pre-flight and the migration
                push_late_commit(clone)
            return True

        record = world.deploy(environ=environ(world, github), confirm=push_late_commit_then_confirm)
        assert record.state == "halted" and record.exit_code == 21
        reason = str(record.halt_reason)
        assert "staging moved after pre-flight" in reason and "not released" in reason
        assert record.source_commit is not None and record.source_commit[:12] in reason
        assert world.origin_main() == before  # nothing merged: GitHub answered 409
        assert merges(github)[0]["sha"] == record.source_commit
        assert "late.txt" not in git(world.repo.origin, "ls-tree", "-r", "--name-only", "main")


def test_a_pull_request_merged_by_hand_at_a_later_head_is_not_taken_for_the_release(
    tmp_path: Path, baseline_url: str
) -> None:
    from orchestrator.engine.run import resume
    from orchestrator.platforms.github import GitHubApi
    from orchestrator.platforms.http import ApiClient

    with pr_world(tmp_path, baseline_url) as (world, github):
        clone = world.repo.clone

        def push_late_commit_and_merge_it_by_hand(question: str) -> bool:
            if question.startswith("Merge"):  # after pre-flight and the migration
                late = push_late_commit(clone)
                api = GitHubApi(
                    github.repo, ApiClient("GitHub API", world_api(world), github.token)
                )
                api.get_pull(1)  # GitHub computes mergeability on a read
                api.merge_pull(1, late, title="auto-merge")
            return True

        env = environ(world, github)
        record = world.deploy(environ=env, confirm=push_late_commit_and_merge_it_by_hand)
        assert record.state == "halted" and record.exit_code == 21, record.halt_reason
        assert f"not at the release {str(record.source_commit)[:12]}" in str(record.halt_reason)
        resumed = resume(record.run_id, world.store, world.interaction(environ=env))
        assert resumed.state == "halted" and resumed.exit_code == 21, resumed.halt_reason


def test_an_optional_check_failing_while_a_required_one_runs_is_waited_for(
    tmp_path: Path, baseline_url: str
) -> None:
    with pr_world(tmp_path, baseline_url) as (world, github):
        github.checks = {"ci/test": ["in_progress", None], "lint": ["completed", "failure"]}
        github.required_checks = ("ci/test",)
        github.checks_finish_after = 6  # ci/test passes: GitHub then says unstable
        record = world.deploy(environ=environ(world, github))
        assert record.state == "succeeded", record.halt_reason


def test_an_unmergeable_pull_request_stops_the_run_before_the_backup(
    tmp_path: Path, baseline_url: str
) -> None:
    with pr_world(tmp_path, baseline_url) as (world, github):
        github.checks = {"ci/test": ["completed", "failure"]}
        github.required_checks = ("ci/test",)
        rows = tracking_rows(world.database_url)
        record = world.deploy(environ=environ(world, github))
        assert record.state == "halted" and record.exit_code == 21
        assert "checks fail: ci/test (failure)" in str(record.halt_reason)
        assert record.steps.backup is None and record.steps.migrate is None
        assert tracking_rows(world.database_url) == rows  # no migration

        # Every check reported passed, and still blocked: a review is missing.
        github.checks = {"ci/test": ["completed", "success"]}
        github.approved, github.review_required = False, True
        record = world.deploy(environ=environ(world, github))
        assert record.exit_code == 21 and record.steps.backup is None
        assert "a required review is missing" in str(record.halt_reason)
        assert len(github.pulls) == 1  # found again, not opened twice


def test_required_checks_still_running_are_waited_for(tmp_path: Path, baseline_url: str) -> None:
    with pr_world(tmp_path, baseline_url) as (world, github):
        github.checks = {"ci/test": ["in_progress", None]}
        github.required_checks = ("ci/test",)
        github.checks_finish_after = 6
        record = world.deploy(environ=environ(world, github))
        assert record.state == "succeeded", record.halt_reason
        events = read_events(world.store.audit_path(record.run_id))
        waits = [e for e in events if e["event"] == "pull_request_waiting"]
        assert waits and "checks still running: ci/test" in waits[0]["reason"]


def test_blocked_before_any_check_is_reported_is_waited_for_not_refused(
    tmp_path: Path, baseline_url: str
) -> None:
    with pr_world(tmp_path, baseline_url) as (world, github):
        github.required_checks = ("ci/test",)
        github.checks = {"ci/test": ["completed", "success"]}
        github.checks_reported_after = 6  # CI reports nothing for a while, then passes
        record = world.deploy(environ=environ(world, github))
        assert record.state == "succeeded", record.halt_reason
        events = read_events(world.store.audit_path(record.run_id))
        waits = [e for e in events if e["event"] == "pull_request_waiting"]
        assert waits and "no check is reported yet" in waits[0]["reason"]


def test_a_merge_answered_503_after_github_merged_is_adopted_by_the_step(
    tmp_path: Path, baseline_url: str
) -> None:
    with pr_world(tmp_path, baseline_url) as (world, github):
        github.lost = ["503 PUT /merge"]  # merged, then 503: GitHub never calls it safe
        record = world.deploy(environ=environ(world, github))
        assert record.state == "succeeded", record.halt_reason
        assert len(merges(github)) == 1 and github.lost == []  # looked at, not sent again
        assert record.steps.merge.pushed_commit == world.origin_main()


def test_blocked_while_a_required_check_has_not_reported_is_waited_for_not_refused(
    tmp_path: Path, baseline_url: str
) -> None:
    with pr_world(tmp_path, baseline_url) as (world, github):
        github.required_checks = ("ci/test",)
        github.checks = {"lint": ["completed", "success"], "ci/test": ["completed", "success"]}
        github.reported_after = {"ci/test": 6}  # lint passed at once; ci/test reports late
        record = world.deploy(environ=environ(world, github))
        assert record.state == "succeeded", record.halt_reason
        events = read_events(world.store.audit_path(record.run_id))
        waits = [e for e in events if e["event"] == "pull_request_waiting"]
        assert waits and "a required check may not have reported yet" in waits[0]["reason"]


def test_a_rate_limit_is_waited_out_with_a_notice_for_the_operator(
    tmp_path: Path, baseline_url: str
) -> None:
    with pr_world(tmp_path, baseline_url) as (world, github):
        # GitHub's primary rate limit, reset in a second (UTC epoch seconds).
        reset = str(int(time.time()) + 1)
        github.failures = [(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset})]
        shown: list[str] = []
        record = world.deploy(environ=environ(world, github), on_progress=shown.append)
        assert record.state == "succeeded", record.halt_reason
        assert any("GitHub API rate limit: waiting" in line for line in shown)
        events = read_events(world.store.audit_path(record.run_id))
        [limited] = [e for e in events if e["event"] == "rate_limited"]
        assert "HTTP 403" in str(limited["error"]) and float(str(limited["wait_s"])) <= 1.0


def test_rollback_opens_a_revert_pull_request(tmp_path: Path, baseline_url: str) -> None:
    with pr_world(tmp_path, baseline_url) as (world, github):
        record = world.deploy(environ=environ(world, github))
        assert record.state == "succeeded", record.halt_reason
        released = world.origin_main()
        plan = "\n".join(
            __import__("orchestrator.engine.rollback", fromlist=["x"]).rollback_plan(record)
        )
        assert f"git push origin revert-{record.run_id}" in plan
        result = rollback(
            record.run_id, world.store, world.interaction(environ=environ(world, github))
        )
        branch = f"revert-{record.run_id}"
        assert result.reverted_commit == git(world.repo.origin, "rev-parse", branch)
        assert world.origin_main() == released  # main only changes through the pull request
        opened = github.pulls[2]
        assert (opened["head"], opened["base"]) == (branch, "main")
        assert result.pull_request_url and result.pull_request_url.endswith("/pull/2")
        # The branch carries the release reverted: the old classifier is back.
        assert "legacyClassifier" in git(world.repo.origin, "show", f"{branch}:app.ts")
        assert git(world.repo.origin, "rev-parse", f"{branch}^") == released


def test_a_rollback_whose_pull_request_did_not_open_opens_it_when_run_again(
    tmp_path: Path, baseline_url: str
) -> None:
    with pr_world(tmp_path, baseline_url) as (world, github):
        record = world.deploy(environ=environ(world, github))
        assert record.state == "succeeded", record.halt_reason
        interaction = world.interaction(environ=environ(world, github))
        branch = f"revert-{record.run_id}"
        # The revert branch is pushed; then GitHub's rate limit outlasts what the rollback
        # waits (the double's 403 "API rate limit exceeded": at least a minute).
        github.failures = [(403, {})]
        with pytest.raises(OrchestratorError, match="rate limited"):
            rollback(record.run_id, world.store, interaction)
        pushed = git(world.repo.origin, "rev-parse", branch)
        assert all(pr["head"] != branch for pr in github.pulls.values())
        assert world.store.load(record.run_id).steps.rollback is None

        result = rollback(record.run_id, world.store, interaction)
        assert result.reverted_commit == pushed == git(world.repo.origin, "rev-parse", branch)
        [opened] = [pr for pr in github.pulls.values() if pr["head"] == branch]
        assert result.pull_request_url and result.pull_request_url.endswith(f"/{opened['number']}")
        rolled = world.store.load(record.run_id).steps.rollback
        assert rolled is not None and rolled.pull_request_url == result.pull_request_url
        # Once recorded, a rollback is not done again: the plan says where it went.
        again = rollback(record.run_id, world.store, interaction)
        assert again.reverted_commit is None
        assert f"commit {pushed} through {result.pull_request_url}" in again.plan[0]
        assert len([pr for pr in github.pulls.values() if pr["head"] == branch]) == 1


def test_the_rehearsal_predicts_an_unmergeable_pull_request_and_opens_none(
    tmp_path: Path, baseline_url: str
) -> None:
    from orchestrator.engine.rehearsal import rehearse

    with pr_world(tmp_path, baseline_url) as (world, github):
        plan = rehearse(
            world.playbook,
            environ(world, github),
            RunStore(tmp_path / "state"),
            rehearse_on="local",
        )
        assert int(plan.exit_code) == 0, plan.lines
        assert any("would open a pull request staging -> main" in line for line in plan.lines)
        assert github.pulls == {}  # read-only: nothing opened

        github.review_required = True
        github.checks = {"ci/test": ["completed", "success"]}
        from orchestrator.platforms.github import GitHubApi
        from orchestrator.platforms.http import ApiClient

        api = GitHubApi(github.repo, ApiClient("GitHub API", world_api(world), github.token))
        api.create_pull("staging", "main", title="Release", body="")
        plan = rehearse(
            world.playbook,
            environ(world, github),
            RunStore(tmp_path / "state"),
            rehearse_on="local",
        )
        assert int(plan.exit_code) == 21
        assert plan.halt_line and "a required review is missing" in plan.halt_line
        assert "backup" not in [s.name for s in plan.steps]


def world_api(world: World) -> str:
    """The GitHub double's URL, as the playbook names it."""
    text = world.playbook.read_text()
    return text.split("api_url: '", 1)[1].split("'", 1)[0]


def test_resume_finds_the_pull_request_merged_meanwhile(tmp_path: Path, baseline_url: str) -> None:
    from orchestrator.engine.run import resume
    from orchestrator.platforms.github import GitHubApi
    from orchestrator.platforms.http import ApiClient

    with pr_world(tmp_path, baseline_url) as (world, github):
        declined = world.deploy(
            environ=environ(world, github), confirm=lambda q: not q.startswith("Merge")
        )
        assert declined.state == "halted" and declined.steps.halt.stopped_in == "revalidated"
        assert len(tracking_rows(world.database_url)) == 12  # migrated, not merged
        # Someone merges the pull request by hand, pinned to the release, meanwhile.
        api = GitHubApi(github.repo, ApiClient("GitHub API", world_api(world), github.token))
        merged = api.merge_pull(1, str(declined.source_commit), title="by hand")
        resumed = resume(
            declined.run_id, world.store, world.interaction(environ=environ(world, github))
        )
        assert resumed.state == "succeeded", resumed.halt_reason
        assert resumed.steps.merge.merge_commit == merged
        assert "found merged on resume" in resumed.steps.merge.note
        assert [b for b in merges(github)] == [
            {"sha": declined.source_commit, "merge_method": "merge", "commit_title": "by hand"}
        ]


def commit_docs(world: World, branch: str, names: list[str]) -> None:
    """Colleagues' commits on ``branch`` of origin, one adding each of ``names``; on main
    they land past the protection hook, as GitHub's own merges do."""
    clone = world.repo.clone
    git(clone, "fetch", "origin")
    git(clone, "switch", "--detach", f"origin/{branch}")
    for name in names:
        (clone / name).write_text(f"{name}\n")
        git(clone, "add", name)
        git(clone, "commit", "-m", f"docs: {name}")
    tip = git(clone, "rev-parse", "HEAD")
    git(clone, "push", "origin", f"+{tip}:refs/heads/colleague")
    git(world.repo.origin, "update-ref", f"refs/heads/{branch}", tip)
    git(clone, "switch", "main")


@pytest.mark.parametrize(
    ("chosen", "by_hand", "unrelated"),  # unrelated: colleagues' commits on main meanwhile
    [
        ("rebase", "merge", 0),
        ("rebase", "squash", 0),
        ("rebase", "squash", 2),
        ("merge", "rebase", 2),
    ],
)
def test_a_pull_request_merged_by_hand_another_way_is_recorded_and_reverted_as_merged(
    tmp_path: Path, baseline_url: str, chosen: str, by_hand: str, unrelated: int
) -> None:
    from orchestrator.engine.run import resume

    with (
        build_world(tmp_path, baseline_url, at_baseline=True) as world,
        github_double(world.repo.origin) as (api, github),
    ):
        through_github(world, api, f", merge_method: {chosen}")
        commit_docs(world, "staging", ["docs1.md", "docs2.md"])  # a release of several commits
        env = environ(world, github)
        declined = world.deploy(environ=env, confirm=lambda q: not q.startswith("Merge"))
        assert declined.steps.preflight.merge_method == chosen
        # While the run is down, colleagues' commits land on main, then someone merges the
        # pull request in GitHub's page with another method than pre-flight's.
        commit_docs(world, "main", [f"main{n}.md" for n in range(unrelated)])
        before = world.origin_main()
        status, merged = github.merge(github.pulls[1], str(declined.source_commit), by_hand)
        assert status == 200 and merged["sha"] == world.origin_main()
        resumed = resume(declined.run_id, world.store, world.interaction(environ=env))
        assert resumed.state == "succeeded", resumed.halt_reason

        result = rollback(resumed.run_id, world.store, world.interaction(environ=env))
        # The revert undoes exactly the release: main as it was right before the merge,
        # the colleagues' commits kept.
        branch = f"revert-{resumed.run_id}"
        assert result.reverted_commit == git(world.repo.origin, "rev-parse", branch)
        assert git(world.repo.origin, "rev-parse", f"{branch}^") == merged["sha"]
        assert git(world.repo.origin, "diff", "--stat", before, branch) == ""
        # The record says how the pull request was merged, as its commits show.
        record = resumed.steps.merge
        assert record.pushed_commit == merged["sha"] and "found merged on resume" in record.note
        assert (record.merge_method, record.previous_target_commit) == (by_hand, before)
        assert record.merge_commit == (merged["sha"] if by_hand == "merge" else None)
        assert merges(github) == []  # the run merged nothing itself
        revert = next(pr for pr in github.pulls.values() if pr["head"] == branch)
        assert f"the release's commit {merged['sha']}" in revert["body"]


def staging_already_in_main(world: World) -> str:
    """main fast-forwarded to staging on the origin (past the protection hook); its sha."""
    staging = git(world.repo.origin, "rev-parse", "staging")
    git(world.repo.origin, "update-ref", "refs/heads/main", staging)
    return staging


def test_a_source_already_in_the_target_asks_github_nothing_in_the_rehearsal_as_in_preflight(
    tmp_path: Path, baseline_url: str
) -> None:
    from orchestrator.engine.rehearsal import rehearse

    with pr_world(tmp_path, baseline_url) as (world, github):
        staging = staging_already_in_main(world)  # production is not migrated yet
        plan = rehearse(
            world.playbook,
            environ(world, github),
            RunStore(tmp_path / "state"),
            rehearse_on="local",
        )
        assert int(plan.exit_code) == 0, plan.lines
        assert any("staging is already in main: no pull request" in line for line in plan.lines)
        assert not any("would open a pull request" in line for line in plan.lines)
        assert github.requests == []  # the rehearsal judged as pre-flight: nothing to ask

        record = world.deploy(environ=environ(world, github))
        assert record.state == "succeeded", record.halt_reason
        assert record.steps.preflight.already_merged is True
        assert record.steps.preflight.pull_request is None
        # The merge step says what happened: not "found merged on resume" on a fresh run.
        assert record.steps.merge.note.startswith("already in the target before the run")
        assert github.requests == [] and github.pulls == {}  # pre-flight asked nothing either
        assert world.origin_main() == staging


def test_without_the_token_the_rehearsal_refuses_as_the_deploy_does(
    tmp_path: Path, baseline_url: str
) -> None:
    from orchestrator.engine.rehearsal import rehearse

    with pr_world(tmp_path, baseline_url) as (world, github):
        # Neither would ask GitHub anything, yet the deploy refuses to start without the
        # playbook's tokens; so must its rehearsal.
        staging_already_in_main(world)
        without = {"DATABASE_URL": world.database_url}
        refusal = r"^\$GITHUB_TOKEN is not set: it must hold the GitHub token$"
        with pytest.raises(UsageError, match=refusal):
            rehearse(world.playbook, without, RunStore(tmp_path / "state"))
        with pytest.raises(UsageError, match=refusal):
            world.deploy(environ=without)
        assert world.store.list() == [] and github.requests == []
        assert len(tracking_rows(world.database_url)) == 9
