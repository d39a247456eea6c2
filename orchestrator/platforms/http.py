"""The transport every platform client shares (GitHub, Vercel and Neon's
:mod:`orchestrator.neon.api`): one JSON call with a bearer token.

A read is asked again after a dropped connection or a 5xx. A request that changes something
is asked again only when the platform says it was not carried out (Neon's 503 and 423, or a
connection never opened); after a lost answer or another 5xx it raises :class:`ApiError` with
``ambiguous=True`` and the caller looks at the world, a few times (:func:`look_late`; Neon's
reference: POST, PATCH, DELETE and PUT "may have reached the server and been successfully
processed" when no answer came back). Rate limits are waited out as :func:`rate_limit_wait`
says. The token never appears in a message, a repr or a log line.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from orchestrator.db.retry import RetryPolicy, T
from orchestrator.errors import ExitCode, OrchestratorError, UsageError
from orchestrator.playbook import Playbook
from orchestrator.redaction import redact

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
RETRIED_STATUSES = frozenset({500, 502, 503, 504})  # a read is asked again after these
RATE_LIMIT_DEFAULT_S = 60.0  # GitHub: "wait for at least one minute before retrying"
RATE_LIMIT_TRIES = 10  # rate limits answered to one call before it gives up
DEFAULT_WAIT_LIMIT_S = 600.0
LATE_PAUSES = (0.0, 2.0, 4.0, 8.0)  # seconds before each look after an ambiguous answer
_TIMEOUT_S = 30.0
# Transport failures before the request could leave: nothing was carried out.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# The CA bundle, loaded once per process: httpx loads it again for each client it makes.
tls_context = functools.cache(httpx.create_ssl_context)


class ApiError(OrchestratorError):
    """A platform API refused a call (a failed check: exit 21). ``status`` is the HTTP
    status, ``None`` when the API could not be reached at all. ``ambiguous``: a request
    that changes something got no clear answer (the connection dropped, a 5xx the platform
    does not call safe): it may have been carried out, so look before doing anything else."""

    exit_code = ExitCode.GUARD_FAILED

    def __init__(self, message: str, *, status: int | None = None, ambiguous: bool = False):
        super().__init__(message)
        self.status = status
        self.ambiguous = ambiguous


def read_secret(environ: Mapping[str, str], name: str, what: str) -> str:
    """The ``what`` held by ``$name``; :class:`UsageError` (exit 2) when it is unset."""
    if not (value := environ.get(name, "")):
        raise UsageError(f"${name} is not set: it must hold the {what}")
    return value


def _token_envs(playbook: Playbook) -> list[tuple[str, str]]:
    """(variable, what it holds) for each token or key the playbook's platforms need."""
    needed = []
    if playbook.git.via == "github_pr" and playbook.git.github is not None:
        needed.append((playbook.git.github.token_env, "GitHub token"))
    if playbook.release is not None and playbook.release.vercel is not None:
        needed.append((playbook.release.vercel.token_env, "Vercel token"))
    if playbook.backup.kind == "neon_branch" and playbook.neon is not None:
        needed.append((playbook.neon.api_key_env, "Neon API key"))
    return needed


def check_tokens(playbook: Playbook, environ: Mapping[str, str]) -> None:
    """Every token the playbook needs is set; UsageError (exit 2) before anything changes."""
    for name, what in _token_envs(playbook):
        read_secret(environ, name, what)


def playbook_tokens(playbook: Playbook, environ: Mapping[str, str]) -> list[str]:
    """The values of the playbook's token variables, whatever their names, for redaction."""
    return [environ[name] for name, _what in _token_envs(playbook) if environ.get(name)]


def is_ambiguous(method: str, status: int | None, safe: frozenset[int] = frozenset()) -> bool:
    """Whether a failed ``method`` request may nevertheless have been carried out (pure):
    a request that changes something, answered with a 5xx not in ``safe`` (those the
    platform says mean it did nothing), or with no answer at all (``status`` None: the
    connection dropped after it was sent)."""
    if method.upper() in READ_METHODS:
        return False
    return status is None or (status >= 500 and status not in safe)


def look_late(sleep: Callable[[float], None], look: Callable[[], T | None]) -> T | None:
    """What ``look`` finds after a request that changes something got no clear answer, asked
    after each of :data:`LATE_PAUSES`: a platform may show work it did only a moment after
    failing to answer for it. None when it never shows: what happened is unknown."""
    for pause in LATE_PAUSES:
        sleep(pause)
        if (found := look()) is not None:
            return found
    return None


def rate_limit_wait(
    status: int, headers: Mapping[str, str], message: str, now: float, before: int = 0
) -> float | None:
    """Seconds to wait before asking again when the answer is a rate limit, else None (pure).

    GitHub (REST description, "Exceeding the rate limit"): 403 or 429; ``retry-after`` seconds when
    present; else, with ``x-ratelimit-remaining: 0``, until the UTC epoch second
    ``x-ratelimit-reset``; else at least a minute, doubling with each rate limit answered ``before``
    this one. A 403 with none of these and no word of a rate limit is a refusal (the token lacks a
    permission), not a rate limit. ``headers``' names are lower case; ``now`` is ``time.time()``.
    """
    if status not in (403, 429):
        return None
    if (after := retry_after(headers.get("retry-after", ""))) is not None:
        return after
    reset = headers.get("x-ratelimit-reset", "").strip()
    if headers.get("x-ratelimit-remaining", "").strip() == "0" and reset.isdigit():
        return max(0.0, float(reset) - now)
    if status == 429 or "rate limit" in message.lower():
        return RATE_LIMIT_DEFAULT_S * float(2**before)
    return None


@dataclass
class ApiClient:
    """JSON calls to ``base_url`` as the holder of ``token`` (kept out of ``repr``).

    A read is asked again after :data:`RETRIED_STATUSES`, any request after ``safe`` (statuses the
    platform says mean it did nothing), with the backoff; ``fixed``: statuses any request is asked
    again after on a fixed schedule, ``{status: (times, seconds)}`` (Neon's 423, as Neon's own CLI
    does); ``error``: the :class:`ApiError` subclass a refusal raises (a client's own, e.g. Neon's).
    ``wait_limit``: the most one call waits out rate limits, in seconds (the step's timeout);
    ``on_wait(what, seconds)``: told of each such wait.
    """

    name: str  # "GitHub API", "Vercel API", "Neon API": how messages name the API
    base_url: str
    token: str = field(repr=False)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    headers: Mapping[str, str] = field(default_factory=dict)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    on_retry: Callable[[int, str, float], None] | None = field(default=None, repr=False)
    on_wait: Callable[[str, float], None] | None = field(default=None, repr=False)
    fixed: Mapping[int, tuple[int, float]] = field(default_factory=dict, repr=False)
    wait_limit: float = field(default=DEFAULT_WAIT_LIMIT_S, repr=False)
    clock: Callable[[], float] = field(default=time.time, repr=False)
    error: type[ApiError] = field(default=ApiError, repr=False)
    safe: frozenset[int] = field(default=frozenset(), repr=False)

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        missing_ok: bool = False,
    ) -> Any:
        """The decoded JSON answer (``{}`` when empty; ``None`` for a 404 if
        ``missing_ok``); :attr:`error` on a refusal, when retries run out, or (with
        ``ambiguous``) when a request that changes something got no clear answer."""
        return self.exchange(method, path, json=json, params=params, missing_ok=missing_ok)[0]

    def exchange(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        missing_ok: bool = False,
    ) -> tuple[Any, httpx.Headers]:
        """:meth:`call`, with the answer's headers (``Link``, for the next page)."""
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/json",
            **self.headers,
        }
        reads = method.upper() in READ_METHODS
        attempts = max(1, self.retry.attempts)
        attempt = 0
        fixed_used: dict[int, int] = {}
        waited = 0.0
        limited = 0  # rate limits answered so far
        where = f"{self.name} {method} {path}"
        while True:
            try:
                tls = tls_context()
                with httpx.Client(base_url=self.base_url, timeout=_TIMEOUT_S, verify=tls) as client:
                    response = client.request(
                        method, path, json=json, params=params, headers=headers
                    )
            except httpx.TransportError as exc:
                what = type(exc).__name__
                if not reads and not isinstance(exc, _NOT_SENT):
                    raise self.error(
                        f"{where}: {what}: no answer came back, the request may have been "
                        "carried out",
                        ambiguous=True,
                    ) from None
                attempt += 1
                if attempt >= attempts:
                    raise self.error(
                        f"{where}: {what} (cannot reach {redact(self.base_url)})"
                    ) from None
                self._pause(attempt, what, None)
                continue
            status = response.status_code
            lowered = {k.lower(): v for k, v in response.headers.items()}
            message = api_message(response) if status >= 400 else ""
            rate = rate_limit_wait(status, lowered, message, self.clock(), limited)
            if rate is not None:
                limited += 1
                if limited > RATE_LIMIT_TRIES or waited + rate > self.wait_limit:
                    raise self.error(
                        f"{where}: HTTP {status}: rate limited ({message}); the API asks to "
                        f"wait {rate:.0f}s more: beyond this step's {self.wait_limit:g}s, or "
                        f"after {RATE_LIMIT_TRIES} rate limits",
                        status=status,
                    )
                waited += rate
                if self.on_wait is not None:
                    self.on_wait(f"HTTP {status}: rate limited", rate)
                else:  # no one to tell of the wait: told as a retry
                    self._report(0, f"HTTP {status}: rate limited", rate)
                self.sleep(rate)
                continue
            if status in self.fixed:
                times, seconds = self.fixed[status]
                used = fixed_used.get(status, 0)
                if used < times:
                    fixed_used[status] = used + 1
                    waited += seconds
                    self._report(used + 1, f"HTTP {status}", seconds)
                    self.sleep(seconds)
                    continue
            elif status in (RETRIED_STATUSES | self.safe if reads else self.safe):
                attempt += 1
                if attempt < attempts:
                    waited += self._pause(attempt, f"HTTP {status}", lowered)
                    continue
            if status == 404 and missing_ok:
                return None, response.headers
            if status >= 400:
                ambiguous = is_ambiguous(method, status, self.safe)
                maybe = ": the request may have been carried out" if ambiguous else ""
                raise self.error(
                    f"{where}: HTTP {status}: {message}{maybe}", status=status, ambiguous=ambiguous
                )
            try:
                return (response.json() if response.content else {}), response.headers
            except ValueError:
                raise self.error(f"{where}: the answer is not JSON", status=status) from None

    def _pause(self, attempt: int, what: str, headers: Mapping[str, str] | None) -> float:
        wait = self.retry.wait(attempt)
        after = retry_after(headers.get("retry-after", "")) if headers is not None else None
        if after is not None:
            wait = min(after, self.wait_limit)
        self._report(attempt, what, wait)
        self.sleep(wait)
        return wait

    def _report(self, attempt: int, what: str, wait: float) -> None:
        if self.on_retry is not None:
            self.on_retry(attempt, what, wait)


def retry_after(value: str) -> float | None:
    """Seconds from a ``Retry-After`` header given in seconds (None otherwise). Pure."""
    text = value.strip()
    return float(text) if text.replace(".", "", 1).isdigit() else None


def api_message(response: httpx.Response) -> str:
    """The API's own error message on one line: GitHub's ``{"message"}``, Neon's
    ``{"code", "message"}``, Vercel's ``{"error": {"message"}}``, or the start of the body."""
    try:
        data = response.json()
    except ValueError:
        return redact(" ".join(response.text.split())[:200]) or "no message"
    message: Any = None
    if isinstance(data, dict):
        error = data.get("error")
        message = data.get("message") or (error.get("message") if isinstance(error, dict) else None)
    return redact(" ".join(str(message).split())[:300]) if message else "no message"
