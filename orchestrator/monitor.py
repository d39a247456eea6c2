"""The post-deploy monitor window: health probes (HTTP, SQL) run on a fixed schedule.

After a release is merged and pushed, production is watched for ``duration`` seconds: every
``interval`` seconds each check runs once (a *round*). Every failed check result counts as one
failure; as soon as the failures exceed ``failures_allowed`` the window ends early as unhealthy.

Probes never raise: whatever goes wrong (timeout, refused connection, SQL error, ...) becomes a
failed :class:`CheckResult` with a one-line, password-free ``detail``. Nothing here prints;
progress is reported through the ``on_result`` callback of :func:`watch`.
"""

from __future__ import annotations

import builtins  # sql_check's ``max`` parameter shadows the builtin inside it
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal
from urllib.parse import urlsplit

import httpx
import psycopg

from orchestrator.db.connect import check_url, connect, describe
from orchestrator.errors import DatabaseError, UsageError
from orchestrator.platforms.http import tls_context
from orchestrator.redaction import redact, redact_url


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one run of one check."""

    name: str  # label of the check (http: its name or URL; sql: its name)
    kind: Literal["http", "sql"]
    ok: bool
    detail: str  # one line, e.g. "200 in 12 ms", "value 3 > max 0", "connection refused"
    at: float  # time.time() when it finished
    value: float | None = None  # sql: the number read; http: the status code
    # False when the answer says nothing about production (a rehearsal's SQL check run on an
    # empty schema-only copy): reported, never counted as a pass or a failure.
    predictive: bool = True


@dataclass(frozen=True)
class MonitorReport:
    """What a monitor window saw."""

    healthy: bool
    rounds: int
    failures: int
    results: tuple[CheckResult, ...]
    ended_early: bool  # stopped before the window's end because failures exceeded the allowance
    elapsed: float  # seconds, measured with the clock given to watch()


Check = Callable[[], CheckResult]


# --------------------------------------------------------------------------- HTTP


def _one_line(text: str) -> str:
    """The first non-blank line of ``text``, passwords redacted."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return redact(lines[0]) if lines else ""


def _describe_http_failure(exc: BaseException, timeout: float) -> str:
    """A one-line description of why an HTTP request produced no status."""
    if isinstance(exc, httpx.TimeoutException):
        return f"timeout after {float(timeout)} s"
    cause: BaseException | None = exc
    while cause is not None:  # httpx wraps the socket's own error
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection reset by peer"
        cause = cause.__context__
    text = _one_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def http_check(
    url: str, *, expect_status: int = 200, timeout: float = 5.0, name: str | None = None
) -> Check:
    """A check that GETs ``url`` and is ok when the status is exactly ``expect_status``.

    Redirects are not followed (a 302 is a status like any other); userinfo in ``url`` is
    sent as HTTP basic auth. ``timeout`` bounds the connection and each read; only the status
    is read, never the body. The check never raises: any failure becomes a failed result
    with a one-line detail. Bad arguments raise :class:`UsageError` here, up front.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"health check URL must be http(s)://host/...: {redact_url(url)}")
    if not 100 <= expect_status <= 599:
        raise UsageError(f"expected HTTP status must be 100..599, got {expect_status}")
    if not timeout > 0:
        raise UsageError(f"HTTP check timeout must be > 0 s, got {timeout}")
    label = name or redact(url)
    # No redirect is followed, so a credential only goes to the host it was written for; the
    # environment's proxies are honoured. Made once: each probe opens a fresh connection.
    limits = httpx.Limits(max_keepalive_connections=0)
    client = httpx.Client(timeout=timeout, limits=limits, verify=tls_context())

    def run() -> CheckResult:
        started = time.monotonic()
        try:
            with client.stream("GET", url) as response:  # the status: the body may not end
                status = response.status_code
        except Exception as exc:  # never raise: a probe that crashes proves nothing
            return CheckResult(
                name=label,
                kind="http",
                ok=False,
                detail=_describe_http_failure(exc, timeout),
                at=time.time(),
            )
        ms = round((time.monotonic() - started) * 1000)
        ok = status == expect_status
        detail = f"{status} in {ms} ms" if ok else f"expected {expect_status}, got {status}"
        return CheckResult(
            name=label, kind="http", ok=ok, detail=detail, at=time.time(), value=float(status)
        )

    return run


# --------------------------------------------------------------------------- SQL


def _format_number(value: float) -> str:
    """``3`` rather than ``3.0``; other numbers as Python prints them."""
    return str(int(value)) if math.isfinite(value) and value == int(value) else str(value)


def judge_value(value: float, *, min: float | None, max: float | None) -> tuple[bool, str]:
    """Pure: whether ``value`` lies within ``[min, max]`` and a one-line detail saying so."""
    shown = _format_number(value)
    if math.isnan(value):
        return False, "value NaN is not a number"
    if max is not None and value > max:
        return False, f"value {shown} > max {_format_number(max)}"
    if min is not None and value < min:
        return False, f"value {shown} < min {_format_number(min)}"
    bounds = [f"min {_format_number(min)}"] if min is not None else []
    bounds += [f"max {_format_number(max)}"] if max is not None else []
    return True, f"value {shown}" + (f" ({', '.join(bounds)})" if bounds else "")


def judge_row(
    row: Sequence[object] | None, *, min: float | None, max: float | None
) -> tuple[bool, str, float | None]:
    """Pure: an SQL check's verdict on the first row its query returned (ok, detail, value)."""
    if row is None:
        return False, "query returned no rows", None
    if not row:
        return False, "query returned no columns", None
    cell = row[0]
    if cell is None:
        return False, "query returned NULL", None
    if isinstance(cell, bool) or not isinstance(cell, int | float | Decimal):  # bool is no number
        return False, f"not a number: {_one_line(repr(cell))[:80]}", None
    value = float(cell)
    ok, detail = judge_value(value, min=min, max=max)
    return ok, detail, value


def sql_check(
    database_url: str,
    *,
    name: str,
    query: str,
    max: float | None = None,
    min: float | None = None,
    timeout: float = 10.0,
) -> Check:
    """A check that reads one number with ``query`` and is ok when it lies in ``[min, max]``.

    Each run opens its own connection (a dead server must show up as a failure, not as a
    stale pooled connection), runs ``query`` as a single statement in a READ ONLY transaction
    with ``statement_timeout = timeout`` and reads the first column of the first row; a peer
    silent for ``timeout`` (a dead network) breaks the connection. NULL, a non-number, no row,
    SQL or connection errors are failures with a one-line detail that never contains a
    password. The returned check never raises; bad arguments raise UsageError up front.
    """
    check_url(database_url)
    if not name.strip():
        raise UsageError("an SQL check needs a name")
    if not query.strip():
        raise UsageError(f"SQL check {name!r} has an empty query")
    if min is not None and max is not None and min > max:
        raise UsageError(f"SQL check {name!r}: min {min} > max {max}")
    if not timeout > 0:
        raise UsageError(f"SQL check {name!r}: timeout must be > 0 s, got {timeout}")
    timeout_ms = builtins.max(1, round(timeout * 1000))
    # Whole seconds, as libpq counts connect_timeout (1 acts as 2) and connect() dead_peer_s.
    whole_s = builtins.max(1, math.ceil(timeout))

    def failed(detail: str) -> CheckResult:
        return CheckResult(name=name, kind="sql", ok=False, detail=detail, at=time.time())

    def run() -> CheckResult:
        try:
            conn = connect(database_url, connect_timeout=whole_s, dead_peer_s=whole_s)
        except DatabaseError as exc:
            return failed(_one_line(str(exc)))
        except Exception as exc:  # never raise
            return failed(f"cannot connect to {redact_url(database_url)}: {describe(exc)}")
        try:
            conn.read_only = True  # BEGIN READ ONLY: a health probe must not write
            with conn.cursor() as cur:
                cur.execute("SELECT set_config('statement_timeout', %s, true)", (str(timeout_ms),))
                # prepare=True sends the query through the extended protocol, which accepts a
                # single statement only: "COMMIT; DELETE ..." cannot escape the READ ONLY block.
                cur.execute(query, prepare=True)
                if cur.description is None:
                    return failed("query returned no result set")
                row = cur.fetchone()
        except psycopg.errors.QueryCanceled:
            return failed(f"timeout after {float(timeout)} s")
        except Exception as exc:  # never raise
            return failed(describe(exc))
        finally:
            conn.close()  # also rolls the read-only transaction back
        ok, detail, value = judge_row(row, min=min, max=max)
        return CheckResult(name=name, kind="sql", ok=ok, detail=detail, at=time.time(), value=value)

    return run


# --------------------------------------------------------------------------- the window


def evaluate(results: Sequence[CheckResult], failures_allowed: int) -> bool:
    """Pure: healthy while the failed results do not exceed ``failures_allowed``."""
    return sum(1 for r in results if not r.ok) <= failures_allowed


def next_slot(previous_slot: int, elapsed: float, interval: float) -> int:
    """Pure: the schedule slot (round k starts at ``k * interval``) of the next round.

    Normally ``previous_slot + 1``. When a round overran one or more slots, the slots already
    passed are skipped rather than caught up in a burst: the next round is the current slot
    (started right away), and later rounds stay on the grid, so lateness never accumulates.
    """
    return max(previous_slot + 1, math.floor(elapsed / interval))


def watch(
    checks: Sequence[Check],
    *,
    duration: float,
    interval: float,
    failures_allowed: int,
    on_result: Callable[[CheckResult, int, int], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> MonitorReport:
    """Run every check once per round, rounds starting at 0, interval, 2*interval, ...

    A round starts only while the elapsed time is below ``duration``. The window ends early as
    soon as the failures exceed ``failures_allowed`` (mid-round if need be). ``on_result`` is
    called after each check with (result, failures so far, round number starting at 1).
    ``clock``/``sleep`` are injectable so the scheduling can be tested without waiting.
    Checks are expected not to raise (those of this module never do).
    """
    if not checks:
        raise UsageError("the monitor has no checks: a window that checks nothing proves nothing")
    if not duration > 0:
        raise UsageError(f"monitor duration must be > 0 s, got {duration}")
    if not interval > 0:
        raise UsageError(f"monitor interval must be > 0 s, got {interval}")
    if failures_allowed < 0:
        raise UsageError(f"failures allowed must be >= 0, got {failures_allowed}")

    start = clock()
    results: list[CheckResult] = []
    failures = 0
    rounds = 0
    slot = 0
    ended_early = False
    while rounds == 0 or clock() - start < duration:
        rounds += 1
        for check in checks:
            result = check()
            results.append(result)
            if not result.ok:
                failures += 1
            if on_result is not None:
                on_result(result, failures, rounds)
            if failures > failures_allowed:
                ended_early = True
                break
        if ended_early:
            break
        slot = next_slot(slot, clock() - start, interval)
        if slot * interval >= duration:
            break  # no round is due inside the window any more: waiting would prove nothing
        # Re-read the clock so the wait is exact and never negative.
        wait = start + slot * interval - clock()
        if wait > 0:
            sleep(wait)

    return MonitorReport(
        healthy=evaluate(results, failures_allowed),
        rounds=rounds,
        failures=failures,
        results=tuple(results),
        ended_early=ended_early,
        elapsed=clock() - start,
    )
