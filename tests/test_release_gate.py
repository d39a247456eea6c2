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
from orchestrator.runs import RunRecord
from orchestrator.sandbox.release import git
from tests.production_double import LiveCommit, version_endpoint
from tests.release_world import (
    TRANSITIONS_OF_A_FULL_DEPLOY,
    World,
    build_world,
    make_the_release_code_only,
    revert_the_release,
    transitions,
)
from tests.vercel_double import VercelState, vercel_double


def with_release(world: World, block: str) -> None:
    world.playbook.write_text(world.playbook.read_text() + f"release: {block}\n")


def events(world: World, run_id: str) -> list[dict[str, object]]:
    return read_events(world.store.audit_path(run_id))


def at(event: dict[str, object]) -> float:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


@contextmanager
def vercel_world(
    root: Path, url: str, final_state: str, timeout: str = "15s", **settings: str
) -> Iterator[tuple[World, VercelState]]:
    with (
        build_world(root, url, at_baseline=True, **settings) as world,
        vercel_double(world.repo.origin) as (api, vercel),
    ):
        vercel.final_state, vercel.build_seconds = final_state, 0.6
        with_release(
            world,
            f"{{timeout: {timeout}, interval: 150ms, vercel: {{project_id: {vercel.project_id}, "
            f"team_id: {vercel.team_id}, api_url: '{api}'}}}}",
        )
        yield world, vercel


def test_the_monitor_starts_only_once_the_new_commit_is_served(
    tmp_path: Path, baseline_url: str
) -> None:
    with build_world(tmp_path, baseline_url, at_baseline=True) as world:
        production = LiveCommit(world.repo.origin, build_seconds=1.5)
        old = production.live
        with version_endpoint(production) as endpoint:
            with_release(world, f"{{timeout: 20s, interval: 200ms, url: '{endpoint.url}'}}")
            record = world.deploy()
        assert record.state == "succeeded", record.halt_reason
        assert transitions(record) == TRANSITIONS_OF_A_FULL_DEPLOY
        pushed = record.steps.merge.pushed_commit
        gate = record.steps.release
        assert gate.live is True and gate.commit == pushed and gate.polls >= 2  # old, then new
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
    tmp_path: Path, baseline_url: str
) -> None:
    with build_world(tmp_path, baseline_url, at_baseline=True) as world:
        production = LiveCommit(world.repo.origin, build_seconds=3600)
        with version_endpoint(production) as endpoint:
            with_release(world, f"{{timeout: 1s, interval: 200ms, url: '{endpoint.url}'}}")
            record = world.deploy()
        assert record.state == "halted" and record.exit_code == 22
        assert record.steps.halt.stopped_in == "merged"
        assert "not live after the release timeout" in str(record.halt_reason)
        assert record.steps.release.waited_s >= 0.8
        assert record.steps.monitor is None  # never watched the old release
        assert any("git cherry-pick" in line for line in record.rollback_plan)


def test_a_vercel_deployment_going_to_error_halts_with_the_rollback_plan(
    tmp_path: Path, baseline_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with vercel_world(tmp_path, baseline_url, "ERROR") as (world, vercel):
        env = {"DATABASE_URL": world.database_url, "VERCEL_TOKEN": vercel.token}
        record = world.deploy(environ=env)
        assert record.state == "halted" and record.exit_code == 22
        failed = vercel.deployments[0]
        assert failed["meta"]["githubCommitSha"] == record.steps.merge.pushed_commit
        assert "the deployment failed" in str(record.halt_reason)
        assert failed["uid"] in str(record.halt_reason) and "ERROR" in str(record.halt_reason)
        assert any("git cherry-pick" in line for line in record.rollback_plan)
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
    tmp_path: Path, baseline_url: str
) -> None:
    with vercel_world(tmp_path, baseline_url, "READY") as (world, vercel):
        vercel.failures.append((429, {"Retry-After": "0.1"}))
        env = {"DATABASE_URL": world.database_url, "VERCEL_TOKEN": vercel.token}
        record = world.deploy(environ=env)
        assert record.state == "succeeded", record.halt_reason
        gate = record.steps.release
        assert gate.deployment_state == "READY" and gate.gate == "vercel"
        assert gate.deployment_id == vercel.deployments[0]["uid"]
        assert all("projectId=prj_service_desk" in p for _m, p in vercel.requests if "v6" in p)


def test_a_staged_production_deployment_does_not_pass_the_gate(
    tmp_path: Path, baseline_url: str
) -> None:
    with vercel_world(tmp_path, baseline_url, "READY", timeout="2s") as (world, vercel):
        vercel.ready_substate = "STAGED"  # built, never promoted to production traffic
        env = {"DATABASE_URL": world.database_url, "VERCEL_TOKEN": vercel.token}
        record = world.deploy(environ=env)
        assert record.state == "halted" and record.exit_code == 22
        staged = vercel.deployments[0]
        assert staged["state"] == "READY" and staged["readySubstate"] == "STAGED"
        assert staged["meta"]["githubCommitSha"] == record.steps.merge.pushed_commit
        assert "not live after the release timeout" in str(record.halt_reason)
        assert "READY STAGED" in str(record.halt_reason)
        assert record.steps.monitor is None
        # Each look asked Vercel for the deployments of the pushed commit by its sha.
        pushed = record.steps.merge.pushed_commit
        assert any(f"sha={pushed}" in path for _m, path in vercel.requests)


# BLOCKED: in Vercel's readyState list; the deployment waits for a person (a commit author
# the team must approve), not for time, so the gate ends at once as for a failure.
@pytest.mark.parametrize("final", ["DELETED", "BLOCKED"])
def test_a_deleted_or_blocked_production_deployment_ends_the_gate_at_once(
    tmp_path: Path, baseline_url: str, final: str
) -> None:
    with vercel_world(tmp_path, baseline_url, final) as (world, vercel):
        env = {"DATABASE_URL": world.database_url, "VERCEL_TOKEN": vercel.token}
        record = world.deploy(environ=env)
        assert record.state == "halted" and record.exit_code == 22
        assert record.steps.release.ending == "failed"
        assert "the deployment failed" in str(record.halt_reason)
        assert final in str(record.halt_reason)
        assert record.steps.release.deployment_state == final


def test_without_the_vercel_token_the_deploy_does_not_start(
    tmp_path: Path, baseline_url: str
) -> None:
    with vercel_world(tmp_path, baseline_url, "READY") as (world, _vercel):
        from orchestrator.errors import UsageError

        with pytest.raises(UsageError, match=r"\$VERCEL_TOKEN is not set"):
            world.deploy()
        assert world.store.list() == []


def test_dry_run_checks_that_the_release_endpoint_answers(
    tmp_path: Path, baseline_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    with build_world(tmp_path, baseline_url, at_baseline=True) as world:
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


def test_dry_run_says_which_deployment_vercel_production_serves(
    tmp_path: Path,
    baseline_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with vercel_world(tmp_path, baseline_url, "READY") as (world, vercel):
        served = vercel.deployments[0]
        vercel.build_seconds = 0.0
        hotfix = push_to_origin(world, "main", "hotfix")
        vercel.advance()  # the hotfix's deployment is READY, PROMOTED, in production ...
        assert vercel.production == vercel.deployments[0]["uid"] != served["uid"]
        assert vercel.roll_back() is served  # ... until an instant rollback
        assert vercel.deployments[0]["meta"]["githubCommitSha"] == hotfix
        assert vercel.deployments[0]["readySubstate"] == "PROMOTED"
        monkeypatch.setenv("DATABASE_URL", world.database_url)
        monkeypatch.setenv("VERCEL_TOKEN", vercel.token)
        code = run(["deploy", "--playbook", str(world.playbook), "--dry-run", "--json"])
        document = json.loads(capsys.readouterr().out)
        assert code == 0
        [step] = [s for s in document["steps"] if s["name"] == "release"]
        old = served["meta"]["githubCommitSha"]
        assert f"production serves {old[:12]} (https://{served['url']})" in step["summary"]
        assert hotfix[:12] not in step["summary"]
        assert world.store.list() == []


def deploy_behind_endpoint(
    world: World, production: LiveCommit, timeout: str = "20s", **overrides: object
) -> RunRecord:
    """Deploy with the release gate on a version endpoint serving ``production``."""
    with version_endpoint(production) as endpoint:
        with_release(world, f"{{timeout: {timeout}, interval: 200ms, url: '{endpoint.url}'}}")
        return world.deploy(**overrides)


def push_to_origin(world: World, branch: str, name: str, base: str = "main") -> str:
    """Someone else's commit on ``branch`` (cut from ``base``), pushed from their own clone."""
    theirs = world.root / f"clone-{name}"
    if not theirs.exists():
        git(world.root, "clone", "--quiet", str(world.repo.origin), str(theirs))
    git(theirs, "fetch", "--quiet", "origin")
    git(theirs, "switch", "--quiet", "-C", branch, f"origin/{base}")
    (theirs / f"{name}.txt").write_text(f"{name}\n")
    git(theirs, "add", f"{name}.txt")
    git(theirs, "commit", "--quiet", "-m", f"{name}: merged after the release")
    git(theirs, "push", "--quiet", "origin", f"{branch}:{branch}")
    return git(theirs, "rev-parse", "HEAD")


def test_a_newer_commit_live_that_contains_the_release_passes_the_gate(
    tmp_path: Path, baseline_url: str
) -> None:
    # The window outlasts the gate's interval (see the rolled-back test below).
    with build_world(tmp_path, baseline_url, at_baseline=True, duration="400ms") as world:
        production = LiveCommit(world.repo.origin, build_seconds=1.0)
        newer: list[str] = []

        def someone_merges_after_us(line: str) -> None:
            # The first look of the gate: ours is building; a newer merge on main supersedes
            # it, so production goes from the old release straight to the newer commit.
            if line.startswith("release gate") and not newer:
                newer.append(push_to_origin(world, "main", "hotfix"))

        record = deploy_behind_endpoint(world, production, on_progress=someone_merges_after_us)
        assert record.state == "succeeded", record.halt_reason
        pushed = record.steps.merge.pushed_commit
        assert newer and git(world.repo.origin, "rev-parse", f"{newer[0]}^") == pushed
        assert pushed not in production.switched_at  # ours was never served on its own
        gate = record.steps.release
        assert gate.live is True and gate.commit == pushed
        assert gate.live_commit == newer[0]
        trail = events(world, record.run_id)
        [live] = [e for e in trail if e["event"] == "release_live"]
        assert f"live via {newer[0][:12]}, which contains the release {pushed[:12]}" in str(
            live["detail"]
        )
        # The finish edge looked at production again (the monitor window outlived the
        # gate's sighting), and production still served a commit containing the release.
        # (The go_live edge looks too when its git fetch outlives the gate's sighting.)
        *_, checked = [e for e in trail if e["event"] == "release_checked"]
        assert checked["live"] is True and "live via" in str(checked["detail"])
        assert trail.index(checked) > max(i for i, e in enumerate(trail) if e["event"] == "check")


def test_an_unrelated_commit_live_is_not_the_release(tmp_path: Path, baseline_url: str) -> None:
    with build_world(tmp_path, baseline_url, at_baseline=True) as world:
        # Production serves a branch cut from the old main: a real commit git knows (fetched
        # into the clone), but not one that contains the release.
        unrelated = push_to_origin(world, "preview", "experiment")
        git(world.repo.clone, "fetch", "--quiet", "origin", "preview")
        production = LiveCommit(world.repo.origin, branch="preview", build_seconds=0)
        record = deploy_behind_endpoint(world, production, timeout="1s")
        assert production.live == unrelated
        assert record.state == "halted" and record.exit_code == 22
        assert f"serves {unrelated[:12]}" in str(record.halt_reason)
        assert "live via" not in str(record.halt_reason)
        assert record.steps.release.live_commit == unrelated
        assert record.steps.monitor is None


@pytest.mark.parametrize("migrations", [True, False], ids=["migrations", "code-only"])
def test_a_revert_of_the_release_live_is_not_the_release(
    tmp_path: Path, baseline_url: str, migrations: bool
) -> None:
    """The revert contains the release's commit (git says so) but no longer ships its
    migrations, or (a release without any) its changes: production serving it does not
    serve the release."""
    with build_world(tmp_path, baseline_url, at_baseline=True) as world:
        if not migrations:
            make_the_release_code_only(world)
        production = LiveCommit(world.repo.origin, build_seconds=0)
        reverts: list[str] = []

        def someone_reverts_it(line: str) -> None:
            # The first look of the gate: ours is building (a tip builds until the next look);
            # a revert on main supersedes it, and is live two looks later.
            if line.startswith("release gate") and not reverts:
                reverts.append(revert_the_release(world))

        record = deploy_behind_endpoint(
            world, production, timeout="2s", on_progress=someone_reverts_it
        )
        pushed = str(record.steps.merge.pushed_commit)
        assert production.live == reverts[0]
        git(world.repo.origin, "merge-base", "--is-ancestor", pushed, reverts[0])
        assert record.state == "halted" and record.exit_code == 22, record.halt_reason
        gate = record.steps.release
        assert gate.live is False and gate.live_commit == reverts[0]
        assert f"serves {reverts[0][:12]}, not {pushed[:12]} yet" in str(gate.detail)
        assert "live via" not in str(gate.detail)
        assert record.steps.monitor is None


def test_a_newer_vercel_deployment_ready_first_carries_the_release(
    tmp_path: Path, baseline_url: str
) -> None:
    import time

    with vercel_world(tmp_path, baseline_url, "READY") as (world, vercel):
        newer: list[str] = []

        def someone_merges_after_us(line: str) -> None:
            if line.startswith("release gate") and not newer:
                for d in vercel.deployments:  # our build is slow; theirs is not
                    if d["state"] == "BUILDING":
                        d["_since"] = time.monotonic() + 3600
                newer.append(push_to_origin(world, "main", "hotfix"))

        env = {"DATABASE_URL": world.database_url, "VERCEL_TOKEN": vercel.token}
        record = world.deploy(environ=env, on_progress=someone_merges_after_us)
        assert record.state == "succeeded", record.halt_reason
        pushed = record.steps.merge.pushed_commit
        gate = record.steps.release
        theirs = vercel.deployments[0]
        assert theirs["meta"]["githubCommitSha"] == newer[0] and theirs["state"] == "READY"
        assert vercel.deployments[1]["meta"]["githubCommitSha"] == pushed
        assert vercel.deployments[1]["state"] == "BUILDING"
        assert (gate.live_commit, gate.deployment_id) == (newer[0], theirs["uid"])
        assert gate.deployment_state == "READY"
        assert str(gate.detail).startswith(f"live via {newer[0][:12]}, which contains")


def test_production_rolled_back_during_the_monitor_window_is_not_a_success(
    tmp_path: Path, baseline_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The finish edge looks at production again: the gate's sighting is history by then."""
    # The window (rounds at 0, 100, 200 and 300 ms) outlasts the gate's interval (200 ms),
    # however fast the machine: the gate's own sighting is never fresh at the finish edge.
    with build_world(tmp_path, baseline_url, at_baseline=True, duration="400ms") as world:
        production = LiveCommit(world.repo.origin, build_seconds=0.5)
        old = production.live

        def roll_back_once_monitoring(line: str) -> None:
            if not line.startswith("release gate") and production.live != old:
                production.live, production.build_seconds = old, 3600  # an instant rollback

        record = deploy_behind_endpoint(world, production, on_progress=roll_back_once_monitoring)
        assert record.steps.release.live is True  # the gate saw the release live
        assert record.steps.monitor.healthy is True
        assert record.state == "halted" and record.exit_code == 21, record.halt_reason
        assert record.steps.halt.stopped_in == "monitored"
        assert "production no longer serves it" in str(record.halt_reason)
        # The finish edge's look is the last (go_live's, when it looked, saw the release).
        *_, checked = [e for e in events(world, record.run_id) if e["event"] == "release_checked"]
        assert checked["live"] is False and f"serves {old[:12]}" in str(checked["detail"])
        # `show` prints the gate's timeline: waiting, live, then the finish edge's look.
        assert run(["show", record.run_id, "--state-dir", str(world.store.state_dir)]) == 0
        shown = capsys.readouterr().out
        pushed = str(record.steps.merge.pushed_commit)
        lines = [line for line in shown.splitlines() if "release" in line]
        waiting = next(i for i, line in enumerate(lines) if "release gate waiting" in line)
        live = next(i for i, line in enumerate(lines) if "release gate LIVE" in line)
        gone = next(i for i, line in enumerate(lines) if f"release {pushed[:12]} NOT live" in line)
        assert waiting < live < gone
        assert f"serves {old[:12]}, not {pushed[:12]} yet [HTTP 200]" in lines[waiting]
        assert f"serves {pushed[:12]} [HTTP 200]" in lines[live]
        assert "/api/version" in lines[live]  # the endpoint's URL


def test_a_vercel_instant_rollback_during_the_monitor_window_is_not_a_success(
    tmp_path: Path, baseline_url: str
) -> None:
    """Production moves back; ours stays READY PROMOTED ("has seen production traffic")."""
    # The window outlasts the gate's interval (150 ms): the finish edge looks at Vercel again.
    with vercel_world(tmp_path, baseline_url, "READY", duration="400ms") as (world, vercel):
        first = vercel.production
        back: list[dict[str, object]] = []

        def roll_back_once_monitoring(line: str) -> None:
            if not line.startswith("release gate") and vercel.production != first and not back:
                back.append(vercel.roll_back())

        env = {"DATABASE_URL": world.database_url, "VERCEL_TOKEN": vercel.token}
        record = world.deploy(environ=env, on_progress=roll_back_once_monitoring)
        pushed = str(record.steps.merge.pushed_commit)
        assert record.steps.release.live is True  # the gate saw the release live
        assert record.steps.monitor.healthy is True
        assert record.state == "halted" and record.exit_code == 21, record.halt_reason
        assert record.steps.halt.stopped_in == "monitored"
        assert "production no longer serves it" in str(record.halt_reason)
        [ours] = [d for d in vercel.deployments if d["meta"]["githubCommitSha"] == pushed]
        assert (ours["state"], ours["readySubstate"]) == ("READY", "PROMOTED")
        assert back[0]["uid"] == first == vercel.production != ours["uid"]
        *_, checked = [e for e in events(world, record.run_id) if e["event"] == "release_checked"]
        assert checked["live"] is False and checked["deployment_state"] == "READY PROMOTED"
        assert f"{ours['uid']} (https://{ours['url']}) of {pushed[:12]}" in str(checked["detail"])
        assert "production does not serve it" in str(checked["detail"])


def test_a_commit_seen_instead_counts_only_when_git_says_it_contains_the_release() -> None:
    from orchestrator.engine.steps.release import SeenLive, is_fresh
    from orchestrator.platforms.liveness import judge_contained, judge_deployments, judge_version
    from orchestrator.platforms.vercel import Deployment

    ours, newer = "a1" * 20, "b2" * 20
    seen = judge_version(200, f'{{"commit": "{newer[:9]}"}}', ours, "https://app/v")
    assert seen.state == "waiting" and seen.instead is not None
    assert seen.instead.commit == newer[:9]
    live = judge_contained(seen, ours, True)
    assert live.state == "live" and live.commit == newer[:9]
    assert live.detail.startswith(f"live via {newer[:9]}, which contains the release {ours[:12]}")
    assert judge_contained(seen, ours, False) == seen  # not ours: still waiting
    assert judge_version(200, "{}", ours, "https://app/v").instead is None  # nothing to ask

    def d(uid: str, sha: str, state: str, created: int) -> Deployment:
        data = {"uid": uid, "url": f"{uid}.vercel.app", "state": state, "created": created}
        return Deployment.from_json({**data, "meta": {"githubCommitSha": sha}})

    # Ours canceled in favour of a newer build that is READY: live via the newer one.
    theirs = d("dpl_3", newer, "READY", 3)
    superseded = judge_deployments([theirs, d("dpl_2", ours, "CANCELED", 2)], ours, theirs)
    assert superseded.state == "failed"
    via = judge_contained(superseded, ours, True)
    assert (via.state, via.deployment_id, via.deployment_state) == ("live", "dpl_3", "READY")
    assert judge_contained(superseded, ours, False).state == "failed"
    # Ours canceled for a newer build still running (Vercel's queue): not failed, not yet.
    queued_out = [d("dpl_3", newer, "BUILDING", 3), d("dpl_2", ours, "CANCELED", 2)]
    assert judge_deployments(queued_out, ours, None).state == "waiting"
    assert judge_deployments(queued_out[1:], ours, None).state == "failed"  # nothing newer
    # Ours in production needs no git; the previous release in production is git's question.
    mine = d("dpl_2", ours, "READY", 2)
    assert judge_deployments([mine], ours, mine).instead is None
    previous = d("dpl_1", newer, "READY", 1)
    building = judge_deployments([d("dpl_2", ours, "BUILDING", 2), previous], ours, previous)
    assert building.state == "waiting" and building.instead is not None
    # The gate's own sighting answers the guard only while it is one interval young.
    assert is_fresh(SeenLive(ours, at=100.0), ours, 10.0, now=105.0)
    assert not is_fresh(SeenLive(ours, at=100.0), ours, 10.0, now=111.0)
    assert not is_fresh(SeenLive(newer, at=100.0), ours, 10.0, now=101.0)
    assert not is_fresh(None, ours, 10.0, now=101.0)
