"""The Neon API client against a local contract double of Neon's API v2 (tests/neon_double)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field, replace

import pytest

from orchestrator.db.retry import RetryPolicy
from orchestrator.neon.api import NeonApi, NeonError
from orchestrator.platforms.http import LATE_PAUSES
from tests.neon_double import NeonState, neon_double

KEY = "napi_0123456789abcdefsecret"


def client(url: str, state: NeonState, waits: list[float]) -> NeonApi:
    return NeonApi(
        project_id=state.project_id,
        api_key=KEY,
        api_url=url,
        retry=RetryPolicy(attempts=4, initial=0.1, max_wait=5.0),
        poll_interval=0.01,
        sleep=waits.append,
    )


def test_a_branch_is_created_at_an_lsn_polled_until_ready_found_and_deleted() -> None:
    with neon_double(api_key=KEY) as (url, state):
        main = state.add_branch("main")
        waits: list[float] = []
        api = client(url, state, waits)
        assert api.find_branch("main") == api.find_branch(main["id"])
        branch = api.create_branch(parent_id=main["id"], parent_lsn="0/1A2B3C", name="pre-run")
        assert branch.parent_lsn == "0/1A2B3C" and branch.parent_id == main["id"]
        created = next(r for r in state.requests if r[0] == "POST")
        assert created[2] == {
            "branch": {"parent_id": main["id"], "name": "pre-run", "parent_lsn": "0/1A2B3C"}
        }
        assert any("/operations/" in path for _m, path, _b in state.requests)  # it polled
        # The creation's answer says it is being made; once its operation finished, ready.
        assert api.get_branch(branch.id) == replace(branch, state="ready") != branch
        api.delete_branch(branch.id)
        assert api.get_branch(branch.id) is None
        api.delete_branch(branch.id)  # already gone: nothing to do


def test_429_423_and_503_are_retried_honouring_retry_after() -> None:
    with neon_double(api_key=KEY) as (url, state):
        state.add_branch("main")
        state.failures = [(429, {"Retry-After": "2"}), (503, {}), (423, {})]
        waits: list[float] = []
        assert client(url, state, waits).find_branch("main") is not None
        assert waits[0] == 2.0  # Retry-After
        assert len(waits) == 3 and len([r for r in state.requests if r[0] == "GET"]) == 4


def test_a_refusal_carries_neons_message_and_never_the_key() -> None:
    with neon_double(api_key=KEY) as (url, state):
        waits: list[float] = []
        api = client(url, state, waits)
        with pytest.raises(NeonError, match="parent branch not found") as raised:
            api.create_branch(parent_id="br-nope", parent_lsn=None, name="x")
        assert KEY not in str(raised.value) and KEY not in repr(api)
        wrong = NeonApi(state.project_id, "napi_wrong", api_url=url, sleep=waits.append)
        with pytest.raises(NeonError, match="HTTP 401: authentication required") as raised:
            wrong.find_branch("main")
        assert "napi_wrong" not in str(raised.value) and raised.value.status == 401
        assert waits == []  # 4xx answers are not retried


def test_restore_keeps_the_present_under_a_name_and_a_failed_operation_is_an_error() -> None:
    with neon_double(api_key=KEY) as (url, state):
        main = state.add_branch("main")
        backup = state.add_branch("pre-run", main["id"])
        waits: list[float] = []
        api = client(url, state, waits)
        api.restore_branch(
            main["id"], source_branch_id=backup["id"], source_lsn="0/AB", preserve_as="main-old"
        )
        restore = next(r for r in state.requests if r[1].endswith("/restore"))
        assert restore[2] == {
            "source_branch_id": backup["id"],
            "preserve_under_name": "main-old",
            "source_lsn": "0/AB",
        }
        assert api.find_branch("main-old") is not None
        state.fail_next_operation = True
        with pytest.raises(NeonError, match="timeline creation failed"):
            api.create_branch(parent_id=main["id"], parent_lsn=None, name="doomed")


def test_an_unreachable_api_is_retried_then_a_neon_error_without_the_key() -> None:
    with socket.socket() as probe:  # a local port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    waits: list[float] = []
    api = NeonApi(
        "round-river-123456",
        KEY,
        api_url=f"http://127.0.0.1:{port}/api/v2",
        retry=RetryPolicy(attempts=3, initial=0.1, max_wait=5.0),
        sleep=waits.append,
    )
    with pytest.raises(NeonError, match="cannot reach") as raised:
        api.find_branch("main")
    assert len(waits) == 2 and raised.value.status is None and KEY not in str(raised.value)


def posts(state: NeonState) -> list[str]:
    return [path for method, path, _body in state.requests if method == "POST"]


def test_a_create_whose_answer_is_lost_is_adopted_never_sent_twice() -> None:
    with neon_double(api_key=KEY) as (url, state):
        main = state.add_branch("main")
        state.lost = ["POST /branches"]  # the branch is made, the answer never arrives
        api = client(url, state, [])
        branch = api.create_branch(parent_id=main["id"], parent_lsn="0/1", name="pre-run")
        assert state.branch_names() == ["main", "pre-run"]  # exactly one backup branch
        assert len(posts(state)) == 1 and branch.name == "pre-run"
        # It waited for the adopted branch's operation to finish.
        [op] = [o for o in state.operations.values() if o["branch_id"] == branch.id]
        assert op["status"] == "finished"


def test_a_post_answered_with_a_5xx_is_looked_at_not_retried() -> None:
    with neon_double(api_key=KEY) as (url, state):
        main = state.add_branch("main")
        state.failures = [(500, {})]  # answered before the double did anything
        waits: list[float] = []
        api = client(url, state, waits)
        # Neon may yet carry it out: looked at a few times, then said to be unknown.
        with pytest.raises(NeonError, match="no branch pre-run after 14s of looking") as raised:
            api.create_branch(parent_id=main["id"], parent_lsn=None, name="pre-run")
        assert raised.value.ambiguous and "what happened is unknown" in str(raised.value)
        assert waits == list(LATE_PAUSES)
        assert len(posts(state)) == 1 and state.branch_names() == ["main"]
        state.failures = [(503, {})]  # 503: Neon says it is always safe to ask again
        api.create_branch(parent_id=main["id"], parent_lsn=None, name="pre-run")
        assert len(posts(state)) == 3 and state.branch_names() == ["main", "pre-run"]


def test_a_restore_and_a_delete_whose_answers_are_lost_are_adopted() -> None:
    with neon_double(api_key=KEY) as (url, state):
        main = state.add_branch("main")
        backup = state.add_branch("pre-run", main["id"])
        state.lost = ["POST /restore", "DELETE"]
        api = client(url, state, [])
        api.restore_branch(
            main["id"], source_branch_id=backup["id"], source_lsn=None, preserve_as="main-old"
        )
        assert len(state.restores) == 1 and "main-old" in state.branch_names()
        api.delete_branch(backup["id"])
        assert "pre-run" not in state.branch_names() and state.lost == []


def test_work_listed_only_after_a_504_is_found_on_a_later_look_and_adopted() -> None:
    with neon_double(api_key=KEY) as (url, state):
        main = state.add_branch("main")
        state.lost = ["504 POST /branches", "504 POST /restore"]  # done, then a 504
        state.late_listings = 2  # Neon lists the new branch a moment later
        waits: list[float] = []
        api = client(url, state, waits)
        made = api.create_branch(parent_id=main["id"], parent_lsn=None, name="pre-run")
        assert waits[:3] == list(LATE_PAUSES[:3])  # the third look found it
        assert len(posts(state)) == 1 and state.branch_names() == ["main", "pre-run"]
        api.restore_branch(
            main["id"], source_branch_id=made.id, source_lsn=None, preserve_as="main-old"
        )
        assert len(state.restores) == 1 and "main-old" in state.branch_names()
        # Never listed within the looks: unknown, not "not carried out".
        state.lost, state.late_listings = ["504 POST /branches"], 10
        with pytest.raises(NeonError, match="no branch late after 14s") as raised:
            api.create_branch(parent_id=main["id"], parent_lsn=None, name="late")
        assert raised.value.ambiguous and raised.value.status == 504
        assert len(posts(state)) == 3 and "late" in state.branch_names()  # made once


def test_423_is_asked_again_five_times_three_seconds_apart() -> None:
    with neon_double(api_key=KEY) as (url, state):
        main = state.add_branch("main")
        state.failures = [(423, {})] * 5
        waits: list[float] = []
        api = client(url, state, waits)
        api.create_branch(parent_id=main["id"], parent_lsn=None, name="a")  # a POST too
        assert waits[:5] == [3.0] * 5 and len(posts(state)) == 6
        state.failures = [(423, {})] * 6
        with pytest.raises(NeonError, match="HTTP 423"):
            api.find_branch("main")


def test_an_operation_in_error_ends_the_wait_at_once() -> None:
    with neon_double(api_key=KEY) as (url, state):
        main = state.add_branch("main")
        state.fail_next_operation = "error"
        api = client(url, state, [])
        with pytest.raises(NeonError, match="timeline creation failed"):
            api.create_branch(parent_id=main["id"], parent_lsn=None, name="doomed")
        polls = [p for _m, p, _b in state.requests if "/operations/" in p]
        assert len(polls) == state.polls_to_finish  # not one poll more


@dataclass
class Clock:
    """Time that passes only when the client sleeps: every wait is seen, none takes real
    time."""

    now: float = 0.0
    waits: list[float] = field(default_factory=list)

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def time(self) -> float:
        return self.now


def timed(url: str, state: NeonState, clock: Clock) -> NeonApi:
    """A client whose operations time out after 10 s of ``clock``'s time."""
    return NeonApi(
        state.project_id,
        KEY,
        api_url=url,
        operation_timeout=10,
        sleep=clock.sleep,
        clock=clock.time,
    )


def test_a_rate_limit_that_would_pass_the_operation_timeout_ends_the_wait_as_a_timeout() -> None:
    with neon_double(api_key=KEY) as (url, state):
        main = state.add_branch("main")
        state.polls_to_finish = 1000  # the operation runs on past any timeout
        operation = state.operation("create_branch", main["id"])
        timeout = f"^Neon operation {operation['id']} still running after 10s$"
        clock = Clock()
        with pytest.raises(NeonError, match=timeout):
            timed(url, state, clock).wait([operation])
        assert sum(clock.waits) == pytest.approx(10)  # polled until the deadline, no longer
        # The first poll is answered 429 with a Retry-After within the timeout but beyond
        # what is left of it after the first pause: the same timeout, nothing waited out.
        clock = Clock()
        state.requests.clear()
        state.failures = [(429, {"Retry-After": "9.9"})]
        with pytest.raises(NeonError, match=timeout):
            timed(url, state, clock).wait([operation])
        assert clock.waits == [0.2]  # the first pause only
        assert [path for _m, path, _b in state.requests] == [
            f"/api/v2/projects/{state.project_id}/operations/{operation['id']}"
        ]  # refused once, never asked again
