"""The platform clients and their pure judgements: GitHub's pull requests and checks,
Vercel's deployments, a version endpoint's body; against the local contract doubles."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestrator.db.retry import RetryPolicy
from orchestrator.platforms.github import (
    Checks,
    GitHubApi,
    MergeMoved,
    PullRequest,
    Repository,
    choose_merge_method,
    judge_pull,
    next_page,
)
from orchestrator.platforms.http import ApiClient, ApiError, is_ambiguous, rate_limit_wait
from orchestrator.platforms.liveness import judge_deployments, judge_version, names_commit
from orchestrator.platforms.vercel import Deployment, VercelApi
from orchestrator.sandbox.release import build_release_repo, git
from tests.github_double import github_double
from tests.vercel_double import vercel_double

SHA = "0123456789abcdef0123456789abcdef01234567"


def pull(**fields: object) -> PullRequest:
    data: dict[str, object] = {
        "number": 4,
        "state": "open",
        "mergeable": True,
        "mergeable_state": "clean",
        "head": {"ref": "staging", "sha": SHA},
        "base": {"ref": "main"},
        **fields,
    }
    return PullRequest.from_json(data)


@pytest.mark.parametrize(
    ("fields", "checks", "verdict", "says"),
    [
        ({}, Checks(), "mergeable", "clean"),
        ({"mergeable": False, "mergeable_state": "dirty"}, Checks(), "refused", "conflicts"),
        ({"mergeable_state": "blocked"}, Checks(failing=("ci (failure)",)), "refused", "ci"),
        ({"mergeable_state": "blocked"}, Checks(pending=("ci",)), "waiting", "running"),
        ({"mergeable_state": "blocked"}, Checks(passing=("ci",)), "waiting", "review"),
        ({"mergeable_state": "blocked"}, Checks(), "waiting", "no check is reported yet"),
        ({"mergeable_state": "behind"}, Checks(), "refused", "behind"),
        ({"mergeable": None, "mergeable_state": "unknown"}, Checks(), "waiting", "computing"),
        ({"mergeable_state": "unstable"}, Checks(failing=("lint",)), "mergeable", "lint"),
        ({"draft": True}, Checks(), "refused", "draft"),
        ({"state": "closed", "mergeable": None}, Checks(), "refused", "closed"),
    ],
)
def test_judge_pull(fields: dict[str, object], checks: Checks, verdict: str, says: str) -> None:
    judged = judge_pull(pull(**fields), checks)
    assert judged.verdict == verdict and says in judged.reason


def test_checks_from_statuses_and_check_runs() -> None:
    checks = Checks.from_json(
        [{"context": "deploy/preview", "state": "pending"}],
        [
            {"name": "test", "status": "completed", "conclusion": "success"},
            {"name": "lint", "status": "completed", "conclusion": "timed_out"},
            {"name": "e2e", "status": "queued", "conclusion": None},
        ],
    )
    assert checks == Checks(
        failing=("lint (timed_out)",), pending=("deploy/preview", "e2e"), passing=("test",)
    )


def test_a_version_body_names_the_commit_in_full_or_by_a_prefix() -> None:
    assert names_commit(f'{{"commit": "{SHA}"}}', SHA)
    assert names_commit("build 0123456 (main)", SHA)
    assert not names_commit("build 012345 (main)", SHA)  # 6 characters: too short
    assert not names_commit(f"sha256 {SHA}ffff", SHA)  # a slice of a longer digest
    assert judge_version(200, SHA, SHA, "https://x/v").state == "live"
    assert judge_version(503, SHA, SHA, "https://x/v").state == "waiting"
    old = judge_version(200, '{"commit": "fedcba9876543"}', SHA, "https://x/v?token=s3cret")
    assert old.state == "waiting" and "fedcba987654" in old.detail and "s3cret" not in old.detail


def test_vercel_deployments_judged_for_a_commit() -> None:
    def d(uid: str, sha: str, state: str, created: int) -> Deployment:
        data = {"uid": uid, "url": f"{uid}.vercel.app", "state": state, "created": created}
        return Deployment.from_json({**data, "meta": {"githubCommitSha": sha}})

    old = d("dpl_1", "f" * 40, "READY", 1)
    assert judge_deployments([old], SHA, old).state == "waiting"
    assert judge_deployments([d("dpl_2", SHA, "BUILDING", 2), old], SHA, old).state == "waiting"
    mine = d("dpl_2", SHA, "READY", 2)
    ready = judge_deployments([mine, old], SHA, mine)
    assert (ready.state, ready.url, ready.deployment_id) == (
        "live",
        "https://dpl_2.vercel.app",
        "dpl_2",
    )
    for state in ("ERROR", "CANCELED", "DELETED", "BLOCKED"):
        assert judge_deployments([d("dpl_3", SHA, state, 3), old], SHA, old).state == "failed"


def test_a_ready_deployment_is_live_only_while_production_serves_it() -> None:
    def d(substate: str | None, uid: str = "dpl_9", sha: str = SHA) -> Deployment:
        data = {"uid": uid, "url": "x.vercel.app", "readyState": "READY", "createdAt": 9}
        extra = {"readySubstate": substate} if substate else {}
        return Deployment.from_json({**data, **extra, "meta": {"githubCommitSha": sha}})

    assert judge_deployments([d(None)], SHA, d(None)).state == "live"
    assert judge_deployments([d("PROMOTED")], SHA, d("PROMOTED")).state == "live"
    for substate in ("STAGED", "ROLLING"):
        seen = judge_deployments([d(substate)], SHA, d(substate))
        assert seen.state == "waiting" and f"READY {substate}" in seen.detail
    # PROMOTED is "has seen production traffic": after an instant rollback production
    # serves the previous deployment, and ours, still READY PROMOTED, is not live.
    previous = d("PROMOTED", "dpl_1", "f" * 40)
    rolled_back = judge_deployments([d("PROMOTED"), previous], SHA, previous)
    assert rolled_back.state == "waiting" and "READY PROMOTED" in rolled_back.detail
    assert rolled_back.instead is not None and rolled_back.instead.commit == "f" * 40
    assert rolled_back.instead.deployment_id == "dpl_1"
    # Nothing in production yet (no ``targets.production``): nothing is live either.
    assert judge_deployments([d("PROMOTED")], SHA, None).state == "waiting"
    # A STAGED deployment of another commit is not what production serves either.
    other = Deployment.from_json(
        {
            "uid": "dpl_8",
            "readyState": "READY",
            "readySubstate": "STAGED",
            "createdAt": 8,
            "meta": {"githubCommitSha": "f" * 40},
        }
    )
    assert judge_deployments([other], SHA, other).instead is None


def test_the_vercel_client_filters_by_sha_and_reads_production(tmp_path: Path) -> None:
    repo = build_release_repo(tmp_path)
    with vercel_double(repo.origin) as (url, state):
        api = VercelApi(state.project_id, state.team_id, ApiClient("Vercel API", url, state.token))
        tip = git(repo.origin, "rev-parse", "main")
        [listed] = api.production_deployments(tip)
        assert listed.commit == tip and listed.serving and listed.created > 0
        assert api.production_deployments("f" * 40) == []
        assert any("sha=" + tip in path for _m, path in state.requests)
        assert (listed.state, listed.substate) == ("READY", "PROMOTED")
        # The project's targets.production: the same deployment, read by its ``id``.
        assert api.production() == listed
        assert ("GET", f"/v9/projects/{state.project_id}?teamId={state.team_id}") in state.requests
        state.production = None  # the reference's answer while nothing serves: null
        assert api.production() is None
        other = VercelApi("prj_other", state.team_id, ApiClient("Vercel API", url, state.token))
        with pytest.raises(ApiError, match="Project not found"):
            other.production()


def test_github_client_against_the_double(tmp_path: Path) -> None:
    repo = build_release_repo(tmp_path)
    with github_double(repo.origin) as (url, state):
        waits: list[float] = []
        client = ApiClient(
            "GitHub API",
            url,
            state.token,
            retry=RetryPolicy(attempts=3, initial=5.0, max_wait=5.0, jitter=0.0),
            sleep=waits.append,
        )
        api = GitHubApi(state.repo, client)
        state.failures.append((429, {"Retry-After": "0.25"}))
        assert api.find_open_pull("staging", "main") is None
        assert waits == [0.25]  # Retry-After honoured
        opened = api.create_pull("staging", "main", title="Release", body="")
        staging = git(repo.origin, "rev-parse", "staging")
        # GitHub computes mergeability in the background: null first, then the value.
        assert opened.head_sha == staging and opened.mergeable is None
        assert opened.mergeable_state == "unknown"
        found = api.find_open_pull("staging", "main")
        assert found is not None and (found.mergeable, found.mergeable_state) == (True, "clean")
        with pytest.raises(MergeMoved, match="Head branch was modified"):
            api.merge_pull(opened.number, "f" * 40, title="x")
        merged = api.merge_pull(opened.number, staging, title="x")
        assert git(repo.origin, "rev-parse", "main") == merged
        assert api.get_pull(opened.number).merged

        bad = GitHubApi(state.repo, ApiClient("GitHub API", url, "ghp_wrongToken123456"))
        with pytest.raises(ApiError) as caught:
            bad.get_pull(opened.number)
        assert caught.value.status == 401 and "Bad credentials" in str(caught.value)
        assert "ghp_wrongToken123456" not in str(caught.value)
        assert "ghp_wrongToken123456" not in repr(bad)


def test_which_answers_are_rate_limits_and_how_long_to_wait() -> None:
    now = 1_000.0
    reset = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1090"}
    assert rate_limit_wait(403, reset, "API rate limit exceeded", now) == 90.0
    assert rate_limit_wait(429, {"retry-after": "7"}, "", now) == 7.0
    assert rate_limit_wait(403, {"retry-after": "7", **reset}, "", now) == 7.0  # first
    secondary = "You have exceeded a secondary rate limit"
    assert rate_limit_wait(403, {}, secondary, now) == 60.0  # a minute without a header
    assert rate_limit_wait(429, {}, "", now) == 60.0
    assert rate_limit_wait(429, {}, "", now, before=2) == 240.0  # doubling, as GitHub asks
    assert (
        rate_limit_wait(403, {"x-ratelimit-remaining": "12"}, "Resource not accessible", now)
        is None
    )
    assert rate_limit_wait(503, {"retry-after": "7"}, "", now) is None  # not a rate limit


def test_which_failures_may_have_been_carried_out() -> None:
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert is_ambiguous(method, None) and is_ambiguous(method, 500)
        assert is_ambiguous(method, 502) and is_ambiguous(method, 503)
        assert not is_ambiguous(method, 503, frozenset({503}))  # Neon's: always safe
    assert not is_ambiguous("GET", None) and not is_ambiguous("GET", 500)


def test_the_merge_method_is_the_playbooks_if_allowed_else_the_first_allowed() -> None:
    squash_only = Repository.from_json(
        {"allow_merge_commit": False, "allow_squash_merge": True, "allow_rebase_merge": False}
    )
    assert choose_merge_method(None, squash_only)[0] == "squash"
    assert choose_merge_method("squash", squash_only)[0] == "squash"
    method, why = choose_merge_method("merge", squash_only)
    assert method is None and "does not allow" in why and "squash" in why
    everything = Repository.from_json({})
    assert choose_merge_method(None, everything)[0] == "merge"
    assert choose_merge_method("rebase", everything)[0] == "rebase"


def test_a_link_header_names_the_next_page() -> None:
    link = (
        '<https://api.github.com/x?page=1>; rel="prev", '
        '<https://api.github.com/x?page=3>; rel="next"'
    )
    assert next_page(link) == "https://api.github.com/x?page=3"
    assert next_page('<https://api.github.com/x?page=1>; rel="first"') is None
    assert next_page(None) is None


def github_client(url: str, token: str, waits: list[float], notices: list[str]) -> ApiClient:
    return ApiClient(
        "GitHub API",
        url,
        token,
        retry=RetryPolicy(attempts=3, initial=5.0, max_wait=5.0, jitter=0.0),
        sleep=waits.append,
        on_wait=lambda what, wait: notices.append(f"{what}: {wait:g}s"),
        clock=lambda: 1_000.0,
    )


def test_a_rate_limit_is_waited_out_as_github_asks_within_the_limit(tmp_path: Path) -> None:
    repo = build_release_repo(tmp_path)
    with github_double(repo.origin) as (url, state):
        waits: list[float] = []
        notices: list[str] = []
        api = GitHubApi(state.repo, github_client(url, state.token, waits, notices))
        state.failures = [
            (429, {}),  # secondary, no header: a minute
            (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1090"}),
        ]
        api.create_pull("staging", "main", title="Release", body="")  # a POST, asked again
        assert waits == [60.0, 90.0] and len(notices) == 2 and "rate limited" in notices[0]
        assert len(state.pulls) == 1
        api.client.wait_limit = 30.0  # the step's timeout
        state.failures = [(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1090"})]
        with pytest.raises(ApiError, match="beyond this step's 30s") as raised:
            api.get_pull(1)
        assert raised.value.status == 403 and waits == [60.0, 90.0]  # not waited


def test_lost_answers_are_adopted_opening_and_merging_happen_once(tmp_path: Path) -> None:
    repo = build_release_repo(tmp_path)
    with github_double(repo.origin) as (url, state):
        api = GitHubApi(state.repo, github_client(url, state.token, [], []))
        state.lost = ["POST /pulls", "PUT /merge"]
        opened = api.create_pull("staging", "main", title="Release", body="")
        assert len(state.pulls) == 1 and opened.number == 1
        staging = git(repo.origin, "rev-parse", "staging")
        merged = api.merge_pull(1, staging, title="x")
        assert merged == git(repo.origin, "rev-parse", "main") and state.lost == []
        puts = [r for r in state.requests if r[0] == "PUT"]
        assert len(puts) == 1  # merged exactly once, the lost answer read back from the PR


def test_a_merge_answered_503_after_merging_is_adopted_not_sent_again(tmp_path: Path) -> None:
    repo = build_release_repo(tmp_path)
    with github_double(repo.origin) as (url, state):
        waits: list[float] = []
        api = GitHubApi(state.repo, github_client(url, state.token, waits, []))
        opened = api.create_pull("staging", "main", title="Release", body="")
        state.lost = ["503 PUT /merge"]  # GitHub merges, then answers 503
        merged = api.merge_pull(opened.number, opened.head_sha, title="x")
        assert merged == git(repo.origin, "rev-parse", "main") and state.lost == []
        # Looked at, not sent again (a second PUT would be refused 405: already merged).
        assert len([r for r in state.requests if r[0] == "PUT"]) == 1 and waits == [0.0]


def test_a_merge_that_lost_a_race_with_another_is_asked_again_pinned(tmp_path: Path) -> None:
    repo = build_release_repo(tmp_path)
    with github_double(repo.origin) as (url, state):
        waits: list[float] = []
        api = GitHubApi(state.repo, github_client(url, state.token, waits, []))
        opened = api.create_pull("staging", "main", title="Release", body="")
        state.base_races = 2  # two other merges land on main while GitHub makes ours
        merged = api.merge_pull(opened.number, opened.head_sha, title="x")
        assert git(repo.origin, "rev-parse", "main") == merged
        other = git(repo.origin, "rev-parse", f"{merged}^1")
        assert git(repo.origin, "log", "-1", "--format=%s", other) == "other"
        puts = [body for method, _p, body in state.requests if method == "PUT"]
        assert len(puts) == 3 and {p["sha"] for p in puts} == {opened.head_sha}
        assert waits == [5.0, 5.0]  # the client's retry policy
        state.base_races = 3  # as many races as the policy's attempts: GitHub's refusal
        again = api.create_pull("staging", "main", title="Again", body="")
        git(repo.origin, "update-ref", "refs/heads/staging", merged)  # (a new head to merge)
        with pytest.raises(ApiError, match="Base branch was modified") as raised:
            api.merge_pull(again.number, merged, title="y")
        assert raised.value.status == 405 and not raised.value.ambiguous


def test_a_squash_only_repository_refuses_a_merge_commit_and_squashes(tmp_path: Path) -> None:
    repo = build_release_repo(tmp_path)
    with github_double(repo.origin) as (url, state):
        state.allowed = ("squash",)
        api = GitHubApi(state.repo, github_client(url, state.token, [], []))
        assert api.repository().allowed == ("squash",)
        opened = api.create_pull("staging", "main", title="Release", body="")
        staging = git(repo.origin, "rev-parse", "staging")
        with pytest.raises(ApiError, match="Merge commits are not allowed") as raised:
            api.merge_pull(opened.number, staging, title="x", method="merge")
        assert raised.value.status == 405
        before = git(repo.origin, "rev-parse", "main")
        squashed = api.merge_pull(opened.number, staging, title="x", method="squash")
        # One new commit on main, whose parent is main before: the staging commit is not in it.
        assert git(repo.origin, "rev-parse", f"{squashed}^@") == before
        ancestor = subprocess.run(
            ["git", "merge-base", "--is-ancestor", staging, squashed], cwd=repo.origin
        )
        assert ancestor.returncode == 1
        assert api.get_pull(opened.number).merge_commit_sha == squashed


def test_check_runs_and_statuses_are_read_on_every_page(tmp_path: Path) -> None:
    repo = build_release_repo(tmp_path)
    with github_double(repo.origin) as (url, state):
        state.checks = {f"check-{i:03d}": ["completed", "success"] for i in range(230)}
        state.checks["check-229"] = ["completed", "failure"]
        state.statuses = {f"status-{i:03d}": "success" for i in range(150)}
        state.statuses["status-149"] = "pending"  # past the first page, even of 100
        api = GitHubApi(state.repo, github_client(url, state.token, [], []))
        checks = api.checks(git(repo.origin, "rev-parse", "staging"))
        assert len(checks.passing) == 229 + 149 and checks.pending == ("status-149",)
        assert checks.failing == ("check-229 (failure)",)
        pages = [p for _m, p, _b in state.requests if "check-runs" in p]
        assert len(pages) == 3 and "per_page=100" in pages[0]
        assert len([p for _m, p, _b in state.requests if p.split("?")[0].endswith("/status")]) == 2
