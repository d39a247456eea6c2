"""The platform clients and their pure judgements: GitHub's pull requests and checks,
Vercel's deployments, a version endpoint's body; against the local contract doubles."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.db.retry import RetryPolicy
from orchestrator.platforms.github import Checks, GitHubApi, MergeMoved, PullRequest, judge_pull
from orchestrator.platforms.http import ApiClient, ApiError
from orchestrator.platforms.liveness import judge_deployments, judge_version, names_commit
from orchestrator.platforms.vercel import Deployment
from orchestrator.sandbox.release import build_release_repo, git
from tests.github_double import github_double

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
        ({"mergeable_state": "blocked"}, Checks(passing=("ci",)), "refused", "review"),
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
        {"statuses": [{"context": "deploy/preview", "state": "pending"}]},
        {
            "check_runs": [
                {"name": "test", "status": "completed", "conclusion": "success"},
                {"name": "lint", "status": "completed", "conclusion": "timed_out"},
                {"name": "e2e", "status": "queued", "conclusion": None},
            ]
        },
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
    assert judge_deployments([old], SHA).state == "waiting"
    assert judge_deployments([d("dpl_2", SHA, "BUILDING", 2), old], SHA).state == "waiting"
    ready = judge_deployments([d("dpl_2", SHA, "READY", 2), old], SHA)
    assert (ready.state, ready.url, ready.deployment_id) == (
        "live",
        "https://dpl_2.vercel.app",
        "dpl_2",
    )
    for state in ("ERROR", "CANCELED"):
        assert judge_deployments([d("dpl_3", SHA, state, 3), old], SHA).state == "failed"


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
        assert api.find_open_pull("staging", "main") == api.get_pull(opened.number)
        staging = git(repo.origin, "rev-parse", "staging")
        assert opened.head_sha == staging and opened.mergeable_state == "clean"
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
