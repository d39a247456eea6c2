"""The monitor window against real parts: a local HTTP server, a real PostgreSQL.

Time is not a real part: the window's tests run the real checks on a clock that moves only
when the window sleeps, so a slow machine changes no count; one test shows that the default
clock waits in real time.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest

from orchestrator.errors import UsageError
from orchestrator.monitor import (
    Check,
    CheckResult,
    MonitorReport,
    evaluate,
    http_check,
    judge_value,
    next_slot,
    sql_check,
    watch,
)
from orchestrator.sandbox.pg import free_port
from tests.dead_network import run_over_dead_network

# --------------------------------------------------------------------------- HTTP server


@dataclass
class HealthServer:
    """A real HTTP server on 127.0.0.1 whose /api/health status can be flipped at runtime."""

    base: str
    status: int = 200
    hits: int = 0
    release_slow: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str = "/api/health") -> str:
        return self.base + path


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # urllib honours proxy variables; a proxy must not sit between us and 127.0.0.1.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")


@pytest.fixture
def health_server() -> Iterator[HealthServer]:
    state = HealthServer(base="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/api/health":
                state.hits += 1
                self._reply(state.status)
            elif self.path == "/slow":
                state.release_slow.wait(2.0)  # far longer than the client's 0.2 s timeout
                with contextlib.suppress(ConnectionError):  # the client has hung up by now
                    self._reply(200)
            elif self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/api/health")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path == "/endless":  # a status, then a body that never ends
                self.send_response(200)
                self.send_header("Content-Length", str(10**9))
                self.end_headers()
                with contextlib.suppress(ConnectionError):  # the client hung up: good
                    for _ in range(600):  # a backstop: a client reading it all fails
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.05)
            elif self.path == "/drop":
                self.close_connection = True  # hang up without a response
            else:
                self._reply(404)

        def _reply(self, status: int) -> None:
            body = b"ok" if status < 400 else b"not ok"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output quiet

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release_slow.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=2)


# --------------------------------------------------------------------------- http_check


def test_http_check_ok_reports_status_and_time(health_server: HealthServer) -> None:
    check = http_check(health_server.url(), timeout=5.0)
    before = time.time()
    result = check()
    assert result.ok
    assert result.kind == "http"
    assert result.name == health_server.url()
    assert result.value == 200
    assert re.fullmatch(r"200 in \d+ ms", result.detail)
    assert before <= result.at <= time.time()
    assert health_server.hits == 1


def test_http_check_follows_status_flips(health_server: HealthServer) -> None:
    check = http_check(health_server.url(), timeout=5.0, name="api health")
    health_server.status = 503
    down = check()
    assert not down.ok
    assert down.name == "api health"
    assert down.value == 503
    assert down.detail == "expected 200, got 503"
    health_server.status = 200
    assert check().ok


def test_http_check_error_status_can_be_the_expected_one(health_server: HealthServer) -> None:
    health_server.status = 503
    result = http_check(health_server.url(), expect_status=503, timeout=5.0)()
    assert result.ok
    assert result.value == 503


def test_http_check_does_not_follow_redirects(health_server: HealthServer) -> None:
    as_expected = http_check(health_server.url("/redirect"), expect_status=302, timeout=5.0)()
    assert as_expected.ok, as_expected.detail
    assert as_expected.value == 302
    not_followed = http_check(health_server.url("/redirect"), timeout=5.0)()
    assert not not_followed.ok
    assert not_followed.detail == "expected 200, got 302"
    assert health_server.hits == 0  # the Location was never visited


def test_http_check_timeout(health_server: HealthServer) -> None:
    # /slow answers 200 after 2 s: a check without its timeout would wait and pass.
    check = http_check(health_server.url("/slow"), timeout=0.2)
    result = check()
    assert not result.ok
    assert result.detail == "timeout after 0.2 s"
    assert result.value is None


def test_http_check_takes_the_status_without_reading_a_body_that_never_ends(
    health_server: HealthServer,
) -> None:
    # Each read of the trickling body is quick: only not reading it ends the check.
    result = http_check(health_server.url("/endless"), timeout=0.5)()
    assert result.ok and result.value == 200, result.detail


def test_http_check_connection_refused() -> None:
    result = http_check(f"http://127.0.0.1:{free_port()}/api/health", timeout=0.5)()
    assert not result.ok
    assert result.detail == "connection refused"
    assert result.value is None


def test_http_check_hang_up_is_a_failure_not_an_exception(health_server: HealthServer) -> None:
    result = http_check(health_server.url("/drop"), timeout=5.0)()
    assert not result.ok
    assert result.detail
    assert "\n" not in result.detail


def test_http_check_rejects_bad_arguments_up_front() -> None:
    with pytest.raises(UsageError):
        http_check("ftp://example.com/health")
    with pytest.raises(UsageError):
        http_check("not a url")
    with pytest.raises(UsageError):
        http_check("http://127.0.0.1/", timeout=0)
    with pytest.raises(UsageError):
        http_check("http://127.0.0.1/", expect_status=42)


# --------------------------------------------------------------------------- sql_check


def _exec(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


def _count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def test_sql_check_count_within_then_above_max(database_url: str) -> None:
    _exec(database_url, "CREATE TABLE failed_jobs (id int)")
    check = sql_check(
        database_url, name="failed jobs", query="SELECT count(*) FROM failed_jobs", max=0
    )
    fine = check()
    assert fine.ok, fine.detail
    assert fine.kind == "sql"
    assert fine.name == "failed jobs"
    assert fine.value == 0
    _exec(database_url, "INSERT INTO failed_jobs VALUES (1), (2), (3)")
    bad = check()
    assert not bad.ok
    assert bad.value == 3
    assert bad.detail == "value 3 > max 0"


def test_sql_check_below_min_and_decimal_values(database_url: str) -> None:
    low = sql_check(database_url, name="n", query="SELECT 0", min=1)()
    assert not low.ok
    assert low.detail == "value 0 < min 1"
    decimal = sql_check(database_url, name="ratio", query="SELECT 2.5::numeric", min=1, max=3)()
    assert decimal.ok, decimal.detail
    assert decimal.value == 2.5
    assert decimal.detail == "value 2.5 (min 1, max 3)"


def test_sql_check_query_error_is_one_line(database_url: str) -> None:
    result = sql_check(database_url, name="q", query="SELECT count(*) FROM no_such_table")()
    assert not result.ok
    assert 'relation "no_such_table" does not exist' in result.detail
    assert "\n" not in result.detail
    assert result.value is None


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("SELECT NULL::int", "query returned NULL"),
        ("SELECT 1 WHERE false", "query returned no rows"),
        ("SELECT 'abc'", "not a number: 'abc'"),
        ("SELECT true", "not a number: True"),
    ],
)
def test_sql_check_unusable_results(database_url: str, query: str, detail: str) -> None:
    result = sql_check(database_url, name="q", query=query)()
    assert not result.ok
    assert result.detail == detail


def test_sql_check_is_read_only(database_url: str) -> None:
    _exec(database_url, "CREATE TABLE t (x int)")
    write = sql_check(database_url, name="w", query="INSERT INTO t VALUES (1) RETURNING 1")()
    assert not write.ok
    assert "read-only transaction" in write.detail
    # A second statement must not get past the READ ONLY transaction either.
    escape = sql_check(database_url, name="e", query="COMMIT; INSERT INTO t VALUES (2); SELECT 1")()
    assert not escape.ok
    assert _count(database_url, "t") == 0


def test_sql_check_statement_timeout(database_url: str) -> None:
    # Without the statement timeout the sleep would end, and the check pass.
    check = sql_check(database_url, name="slow", query="SELECT 1 FROM pg_sleep(2)", timeout=0.2)
    result = check()
    assert not result.ok
    assert result.detail == "timeout after 0.2 s"


def test_sql_check_fails_when_the_network_dies_mid_query(database_url: str) -> None:
    # The network dies once the query is sent, as when a NAT entry is dropped: no answer, no
    # ACK, no reset. The server's statement_timeout cannot help (the server is out of reach);
    # without the connection's own bound the check, the window and the deploy would wait on
    # the socket for libpq's defaults (~15 min of retransmits, or 2 h before a keepalive).
    def probe(url: str) -> CheckResult:
        query = "SELECT 1 /* dead network */"
        return sql_check(url, name="x", query=query, max=1, timeout=1)()

    outcome = run_over_dead_network(database_url, b"dead network", probe)
    assert outcome.cut, "the query never reached the dead network"
    assert outcome.finished, "the check is still waiting on the dead network"
    assert outcome.value is not None and not outcome.value.ok
    assert "timed out" in outcome.value.detail


def test_sql_check_never_shows_the_password() -> None:
    url = f"postgresql://orch:s3cr3t-pw@127.0.0.1:{free_port()}/app"
    result = sql_check(url, name="down", query="SELECT 1")()
    assert not result.ok
    assert result.detail.startswith("cannot connect to postgresql://orch:***@127.0.0.1")
    assert "s3cr3t-pw" not in result.detail
    assert "s3cr3t-pw" not in repr(result)
    assert "\n" not in result.detail


def test_sql_check_rejects_bad_arguments_up_front(database_url: str) -> None:
    with pytest.raises(UsageError):
        sql_check("mysql://u:p@h/db", name="x", query="SELECT 1")
    with pytest.raises(UsageError):
        sql_check(database_url, name="x", query="SELECT 1", min=5, max=1)
    with pytest.raises(UsageError):
        sql_check(database_url, name="x", query="  ")
    with pytest.raises(UsageError):
        sql_check(database_url, name="x", query="SELECT 1", timeout=0)


# --------------------------------------------------------------------------- pure parts


def _result(ok: bool, name: str = "c") -> CheckResult:
    return CheckResult(name=name, kind="http", ok=ok, detail="", at=0.0)


def test_evaluate_counts_each_failed_result() -> None:
    assert evaluate([], 0)
    assert evaluate([_result(True), _result(True)], 0)
    assert not evaluate([_result(True), _result(False)], 0)
    assert evaluate([_result(False), _result(True), _result(False)], 2)
    assert not evaluate([_result(False), _result(False), _result(False)], 2)


def test_judge_value() -> None:
    assert judge_value(3, min=None, max=None) == (True, "value 3")
    assert judge_value(3, min=None, max=3) == (True, "value 3 (max 3)")
    assert judge_value(3.5, min=None, max=3) == (False, "value 3.5 > max 3")
    assert judge_value(-1, min=0, max=None) == (False, "value -1 < min 0")
    assert judge_value(float("nan"), min=None, max=None)[0] is False


def test_next_slot_skips_missed_slots_without_drift() -> None:
    assert next_slot(0, 0.01, 1.0) == 1  # on time: the next grid slot
    assert next_slot(0, 2.5, 1.0) == 2  # overran two slots: run now, in slot 2
    assert next_slot(2, 2.7, 1.0) == 3  # ... and the one after is back on the grid


# --------------------------------------------------------------------------- watch: the clock


class FakeTime:
    """A clock that only moves when something sleeps or a check "takes" time."""

    def __init__(self, oversleep: float = 0.0) -> None:
        self.now = 100.0
        self.oversleep = oversleep
        self.sleeps: list[float] = []
        self.starts: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0, f"sleep({seconds}) is pointless or negative"
        self.sleeps.append(seconds)
        self.now += seconds + self.oversleep

    def check(self, costs: list[float], ok: bool = True) -> Check:
        """A check taking ``costs[i]`` seconds on its i-th run (the last cost repeats)."""

        def run() -> CheckResult:
            self.starts.append(self.now - 100.0)
            self.now += costs[min(len(self.starts) - 1, len(costs) - 1)]
            return _result(ok)

        return run


# --------------------------------------------------------------------------- watch, real checks
# Real HTTP and SQL checks on a clock that moves only when the window sleeps: how long a check
# takes on a loaded machine changes nothing, so the rounds and the waits are exact.


def test_watch_healthy_window_counts_rounds(health_server: HealthServer) -> None:
    seen: list[tuple[bool, int, int]] = []
    t = FakeTime()
    report = watch(
        [http_check(health_server.url(), timeout=5.0)],
        duration=0.25,  # not a multiple of the interval: rounds at 0, 0.1, 0.2
        interval=0.1,
        failures_allowed=0,
        on_result=lambda r, failures, rnd: seen.append((r.ok, failures, rnd)),
        clock=t.clock,
        sleep=t.sleep,
    )
    assert report.healthy
    assert report.rounds == 3
    assert report.failures == 0
    assert not report.ended_early
    assert len(report.results) == 3
    assert seen == [(True, 0, 1), (True, 0, 2), (True, 0, 3)]
    assert health_server.hits == 3
    assert t.sleeps == pytest.approx([0.1, 0.1])  # nothing is waited after the last round
    assert report.elapsed == pytest.approx(0.2)


def test_watch_waits_in_real_time_by_default(health_server: HealthServer) -> None:
    started = time.monotonic()
    report = watch(
        [http_check(health_server.url(), timeout=5.0)],
        duration=0.25,
        interval=0.1,
        failures_allowed=0,
    )
    assert report.healthy
    # The last round starts at 0.2 s at the earliest (a slow machine only skips rounds).
    assert time.monotonic() - started >= 0.2
    assert report.elapsed >= 0.2


def test_watch_stops_early_when_unhealthy(health_server: HealthServer) -> None:
    health_server.status = 503
    t = FakeTime()
    report = watch(
        [http_check(health_server.url(), timeout=5.0)],
        duration=1.5,
        interval=0.1,
        failures_allowed=1,
        clock=t.clock,
        sleep=t.sleep,
    )
    assert not report.healthy
    assert report.ended_early  # before the 1.5 s window would have ended
    assert report.rounds == 2
    assert report.failures == 2
    assert [r.detail for r in report.results] == ["expected 200, got 503"] * 2
    assert t.sleeps == pytest.approx([0.1])


def test_watch_tolerates_failures_up_to_the_allowance(health_server: HealthServer) -> None:
    health_server.status = 503

    def recover(result: CheckResult, failures: int, round_no: int) -> None:
        health_server.status = 200  # production recovers after the first failed probe

    t = FakeTime()
    report = watch(
        [http_check(health_server.url(), timeout=5.0)],
        duration=0.25,
        interval=0.1,
        failures_allowed=1,
        on_result=recover,
        clock=t.clock,
        sleep=t.sleep,
    )
    assert report.healthy
    assert not report.ended_early
    assert report.rounds == 3
    assert report.failures == 1
    assert [r.ok for r in report.results] == [False, True, True]


def test_watch_counts_every_failed_check_and_stops_mid_round(health_server: HealthServer) -> None:
    seen: list[tuple[str, int, int]] = []
    dead = f"http://127.0.0.1:{free_port()}/api/health"
    health_server.status = 500
    checks = [
        http_check(health_server.url(), timeout=5.0, name="app"),
        http_check(dead, timeout=5.0, name="dead"),
        http_check(health_server.url(), timeout=5.0, name="never"),
    ]
    t = FakeTime()
    report = watch(
        checks,
        duration=1.0,
        interval=0.1,
        failures_allowed=1,
        on_result=lambda r, failures, rnd: seen.append((r.name, failures, rnd)),
        clock=t.clock,
        sleep=t.sleep,
    )
    assert not report.healthy
    assert report.ended_early
    assert report.rounds == 1
    assert report.failures == 2
    assert seen == [("app", 1, 1), ("dead", 2, 1)]
    assert health_server.hits == 1  # the third check never ran


def test_watch_with_sql_and_http_checks(health_server: HealthServer, database_url: str) -> None:
    t = FakeTime()
    report = watch(
        [
            http_check(health_server.url(), timeout=5.0),
            sql_check(database_url, name="one", query="SELECT 1", min=1, max=1),
        ],
        duration=0.15,
        interval=0.1,
        failures_allowed=0,
        clock=t.clock,
        sleep=t.sleep,
    )
    assert report.healthy, [r.detail for r in report.results]
    assert report.rounds == 2
    assert [r.kind for r in report.results] == ["http", "sql", "http", "sql"]


def test_watch_refuses_to_check_nothing() -> None:
    with pytest.raises(UsageError, match="no checks"):
        watch([], duration=1.0, interval=0.1, failures_allowed=0)


@pytest.mark.parametrize(
    ("duration", "interval", "allowed"), [(0, 0.1, 0), (1, 0, 0), (1, -1, 0), (1, 0.1, -1)]
)
def test_watch_rejects_bad_window(duration: float, interval: float, allowed: int) -> None:
    with pytest.raises(UsageError):
        watch(
            [lambda: _result(True)], duration=duration, interval=interval, failures_allowed=allowed
        )


# --------------------------------------------------------------------------- watch, scheduling


def _watch(t: FakeTime, check: Check, duration: float, interval: float) -> MonitorReport:
    return watch(
        [check],
        duration=duration,
        interval=interval,
        failures_allowed=0,
        clock=t.clock,
        sleep=t.sleep,
    )


def test_schedule_on_the_grid() -> None:
    t = FakeTime()
    report = _watch(t, t.check([0.25]), duration=3.5, interval=1.0)
    assert t.starts == [0, 1, 2, 3]
    assert t.sleeps == [0.75, 0.75, 0.75]  # no sleep after the last round
    assert report.rounds == 4
    assert report.elapsed == 3.25


def test_schedule_duration_not_a_multiple_and_shorter_than_interval() -> None:
    t = FakeTime()
    _watch(t, t.check([0.0]), duration=2.5, interval=1.0)
    assert t.starts == [0, 1, 2]
    t = FakeTime()
    _watch(t, t.check([0.0]), duration=0.5, interval=1.0)
    assert t.starts == [0]
    assert t.sleeps == []


def test_schedule_overrun_starts_next_round_at_once_without_burst_or_drift() -> None:
    t = FakeTime()
    _watch(t, t.check([2.5, 0.25]), duration=5.0, interval=1.0)
    # Round 1 overran slots 1 and 2: round 2 starts right after it (2.5), slot 1 is not
    # caught up in a burst, and round 3 is back on the grid at 3.
    assert t.starts == [0, 2.5, 3, 4]
    assert t.sleeps == [0.25, 0.75]


def test_schedule_does_not_accumulate_oversleep() -> None:
    t = FakeTime(oversleep=0.125)  # every sleep returns late
    _watch(t, t.check([0.0]), duration=4.0, interval=1.0)
    assert t.starts == [0, 1.125, 2.125, 3.125]  # late by one oversleep, never by a sum


def test_schedule_no_round_starts_after_the_window() -> None:
    t = FakeTime()
    report = _watch(t, t.check([0.0, 0.0, 5.0]), duration=3.5, interval=1.0)
    assert t.starts == [0, 1, 2]  # round 3 ran until 7 s: nothing starts past 3.5 s
    assert report.elapsed == 7.0
    assert report.rounds == 3
