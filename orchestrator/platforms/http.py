"""The transport every platform client shares (GitHub, Vercel and Neon's
:mod:`orchestrator.neon.api`): one JSON call with a bearer token.

429 and 5xx answers (and whatever more a client names: Neon's 423) and dropped connections
are retried with the project's backoff, honouring ``Retry-After``; other refusals raise
:class:`ApiError` (or the client's subclass of it) carrying the HTTP status and the API's
own message. The token is read from the environment variable the playbook names, sent only
in the ``Authorization`` header and never appears in a message, a repr or a log line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from orchestrator.db.retry import RetryPolicy
from orchestrator.errors import ExitCode, OrchestratorError, UsageError
from orchestrator.playbook import Playbook
from orchestrator.redaction import redact

__all__ = [
    "RETRIED_STATUSES",
    "ApiClient",
    "ApiError",
    "api_message",
    "check_tokens",
    "playbook_tokens",
    "read_token",
    "retry_after",
]

RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})  # what every API may answer anew
_TIMEOUT_S = 30.0


class ApiError(OrchestratorError):
    """A platform API refused a call (a failed check: exit 21). ``status`` is the HTTP
    status, ``None`` when the API could not be reached at all."""

    exit_code = ExitCode.GUARD_FAILED

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def read_token(environ: Mapping[str, str], name: str, what: str) -> str:
    """The token held by ``$name``; :class:`UsageError` (exit 2) when it is unset."""
    token = environ.get(name, "")
    if not token:
        raise UsageError(f"${name} is not set: it must hold the {what} token")
    return token


def _token_envs(playbook: Playbook) -> list[tuple[str, str]]:
    """(variable, platform) for each token the playbook's platforms need."""
    needed = []
    if playbook.git.via == "github_pr" and playbook.git.github is not None:
        needed.append((playbook.git.github.token_env, "GitHub"))
    if playbook.release is not None and playbook.release.vercel is not None:
        needed.append((playbook.release.vercel.token_env, "Vercel"))
    return needed


def check_tokens(playbook: Playbook, environ: Mapping[str, str]) -> None:
    """Every token the playbook needs is set; UsageError (exit 2) before anything changes."""
    for name, what in _token_envs(playbook):
        read_token(environ, name, what)


def playbook_tokens(playbook: Playbook, environ: Mapping[str, str]) -> list[str]:
    """The values of the playbook's token variables, whatever their names, for redaction."""
    return [environ[name] for name, _what in _token_envs(playbook) if environ.get(name)]


@dataclass
class ApiClient:
    """JSON calls to ``base_url`` as the holder of ``token`` (kept out of ``repr``).

    ``retried``: the HTTP statuses answered anew after a pause; ``error``: the
    :class:`ApiError` subclass a refusal raises (a client's own, e.g. Neon's).
    """

    name: str  # "GitHub API", "Vercel API", "Neon API": how messages name the API
    base_url: str
    token: str = field(repr=False)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    headers: Mapping[str, str] = field(default_factory=dict)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    on_retry: Callable[[int, str, float], None] | None = field(default=None, repr=False)
    retried: frozenset[int] = field(default=RETRIED_STATUSES, repr=False)
    error: type[ApiError] = field(default=ApiError, repr=False)

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
        ``missing_ok``); :attr:`error` on a refusal or when retries run out."""
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/json",
            **self.headers,
        }
        attempts = max(1, self.retry.attempts)
        for attempt in range(1, attempts + 1):
            try:
                with httpx.Client(base_url=self.base_url, timeout=_TIMEOUT_S) as client:
                    response = client.request(
                        method, path, json=json, params=params, headers=headers
                    )
            except httpx.TransportError as exc:
                if attempt == attempts:
                    raise self.error(
                        f"{self.name} {method} {path}: {type(exc).__name__} "
                        f"(cannot reach {redact(self.base_url)})"
                    ) from None
                self._pause(attempt, type(exc).__name__, None)
                continue
            if response.status_code in self.retried and attempt < attempts:
                self._pause(attempt, f"HTTP {response.status_code}", response)
                continue
            if response.status_code == 404 and missing_ok:
                return None
            if response.status_code >= 400:
                raise self.error(
                    f"{self.name} {method} {path}: HTTP {response.status_code}: "
                    f"{api_message(response)}",
                    status=response.status_code,
                )
            try:
                return response.json() if response.content else {}
            except ValueError:
                raise self.error(
                    f"{self.name} {method} {path}: the answer is not JSON",
                    status=response.status_code,
                ) from None
        raise AssertionError("unreachable")  # the loop returns or raises

    def _pause(self, attempt: int, what: str, response: httpx.Response | None) -> None:
        wait = self.retry.wait(attempt)
        if response is not None:
            after = retry_after(response.headers.get("Retry-After", ""))
            if after is not None:
                wait = min(after, self.retry.max_wait)
        if self.on_retry is not None:
            self.on_retry(attempt, what, wait)
        self.sleep(wait)


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
