"""The release gate end to end: between merge and monitor the run waits until the pushed
commit is live, on a version endpoint that follows the real bare origin after a build delay
(tests/production_double.py) or on the Vercel contract double (tests/vercel_double.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest

from orchestrator.audit import read_events
from orchestrator.cli import run
from tests.production_double import LiveCommit, version_endpoint
from tests.release_world import TRANSITIONS_OF_A_FULL_DEPLOY, World, build_world, transitions
from tests.vercel_double import VercelState, vercel_double


def with_release(world: World, block: str) -> None:
    world.playbook.write_text(world.playbook.read_text() + f"release: {block}\n")


def events(world: World, run_id: str) -> list[dict[str, object]]:
    return read_events(world.store.audit_path(run_id))


def at(event: dict[str, object]) -> float:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


@contextmanager
def vercel_world(root: Path, url: str, final_state: str) -> Iterator[tuple[World, VercelState]]:
    with build_world(root, url) as world, vercel_double(world.repo.origin) as (api, vercel):
        vercel.final_state, vercel.build_seconds = final_state, 0.6
        with_release(
            world,
            f"{{timeout: 15s, interval: 150ms, vercel: {{project_id: {vercel.project_id}, "
            f"team_id: {vercel.team_id}, api_url: '{api}'}}}}",
        )
        yield world, vercel


def test_the_monitor_starts_only_once_the_new_commit_is_served(
    tmp_path: Path, database_url: str
) -> None:
    with build_world(tmp_path, database_url) as world:
        production = LiveCommit(world.repo.origin, build_seconds=1.5)
        old = production.live
        with version_endpoint(production) as endpoint:
            with_release(world, f"{{timeout: 20s, interval: 200ms, url: '{endpoint.url}'}}")
            record = world.deploy()
        assert record.state == "succeeded", record.halt_reason
        assert transitions(record) == TRANSITIONS_OF_A_FULL_DEPLOY
        pushed = record.steps["merge"]["pushed_commit"]
        gate = record.steps["release"]
        assert gate["live"] is True and gate["commit"] == pushed and gate["polls"] >= 3
        trail = events(world, record.run_id)
        names = [e["event"] for e in trail]
        waiting = trail[names.index("release_waiting")]
        assert f"serves {old[:12]}" in str(waiting["detail"])  # the old release, at first
        live = trail[names.index("release_live")]
        assert live["deployment_url"] == endpoint.url
        first_check = trail[names.index("check")]
        assert names.index("release_live") < names.index("check")
        # The monitor's first round came after production switched to the new commit.
        assert at(first_check) >= production.switched_at[pushed] - 0.01


def test_a_release_that_is_never_live_halts_after_the_timeout(
    tmp_path: Path, database_url: str
) -> None:
    with build_world(tmp_path, database_url) as world:
        production = LiveCommit(world.repo.origin, build_seconds=3600)
        with version_endpoint(production) as endpoint:
            with_release(world, f"{{timeout: 1s, interval: 200ms, url: '{endpoint.url}'}}")
            record = world.deploy()
        assert record.state == "halted" and record.exit_code == 22
        assert record.steps["halt"]["from"] == "merged"
        assert "not live after the release timeout" in str(record.halt_reason)
        assert record.steps["release"]["waited_s"] >= 0.8
        assert "monitor" not in record.steps  # never watched the old release
        assert any("git revert" in line for line in record.rollback_plan)


def test_a_vercel_deployment_going_to_error_halts_with_the_rollback_plan(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with vercel_world(tmp_path, database_url, "ERROR") as (world, vercel):
        env = {"DATABASE_URL": world.database_url, "VERCEL_TOKEN": vercel.token}
        record = world.deploy(environ=env)
        assert record.state == "halted" and record.exit_code == 22
        failed = vercel.deployments[0]
        assert failed["meta"]["githubCommitSha"] == record.steps["merge"]["pushed_commit"]
        assert "the deployment failed" in str(record.halt_reason)
        assert failed["uid"] in str(record.halt_reason) and "ERROR" in str(record.halt_reason)
        assert any("git revert" in line for line in record.rollback_plan)
        trail = events(world, record.run_id)
        [event] = [e for e in trail if e["event"] == "release_failed"]
        assert event["deployment_url"] == f"https://{failed['url']}"
        assert event["deployment_state"] == "ERROR"
        # `show` prints the gate's timeline.
        code = run(["show", record.run_id, "--state-dir", str(world.store.state_dir)])
        shown = capsys.readouterr().out
        assert code == 0
        assert "release gate waiting" in shown and "release gate FAILED" in shown
        assert vercel.token not in shown
        for path in world.store.run_dir(record.run_id).rglob("*"):
            assert vercel.token.encode() not in path.read_bytes()


def test_a_vercel_deployment_that_turns_ready_opens_the_monitor_window(
    tmp_path: Path, database_url: str
) -> None:
    with vercel_world(tmp_path, database_url, "READY") as (world, vercel):
        vercel.failures.append((429, {"Retry-After": "0.1"}))
        env = {"DATABASE_URL": world.database_url, "VERCEL_TOKEN": vercel.token}
        record = world.deploy(environ=env)
        assert record.state == "succeeded", record.halt_reason
        gate = record.steps["release"]
        assert gate["deployment_state"] == "READY" and gate["gate"] == "vercel"
        assert gate["deployment_id"] == vercel.deployments[0]["uid"]
        assert all("projectId=prj_service_desk" in p for _m, p in vercel.requests if "v6" in p)


def test_without_the_vercel_token_the_deploy_does_not_start(
    tmp_path: Path, database_url: str
) -> None:
    with vercel_world(tmp_path, database_url, "READY") as (world, _vercel):
        from orchestrator.errors import UsageError

        with pytest.raises(UsageError, match=r"\$VERCEL_TOKEN is not set"):
            world.deploy()
        assert world.store.list() == []


def test_dry_run_checks_that_the_release_endpoint_answers(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    with build_world(tmp_path, database_url) as world:
        production = LiveCommit(world.repo.origin)
        with version_endpoint(production) as endpoint:
            text = world.playbook.read_text()
            with_release(world, f"{{timeout: 30s, interval: 1s, url: '{endpoint.url}'}}")
            argv = ["deploy", "--playbook", str(world.playbook), "--dry-run", "--json"]
            os.environ["DATABASE_URL"] = world.database_url
            try:
                code = run(argv)
                document = json.loads(capsys.readouterr().out)
                assert code == 0
                [step] = [s for s in document["steps"] if s["name"] == "release"]
                assert step["status"] == "ok" and "answers now" in step["summary"]
                assert endpoint.requests >= 1
                # An endpoint that does not answer: the gate would halt (exit 22).
                world.playbook.write_text(text)
                with_release(world, "{timeout: 30s, interval: 1s, url: 'http://127.0.0.1:9/v'}")
                code = run(argv)
                document = json.loads(capsys.readouterr().out)
                assert code == 22
                [step] = [s for s in document["steps"] if s["name"] == "release"]
                assert step["status"] == "would_halt" and "does not answer" in step["summary"]
            finally:
                del os.environ["DATABASE_URL"]
        assert world.store.list() == []
