"""Is the pushed commit live? One look at a version endpoint or at Vercel's deployments.

The judgements are pure functions of what was seen (:func:`judge_version`,
:func:`judge_deployments`); the probes (:func:`probe_url`, :func:`probe_vercel`) do the one
HTTP call each and hand the answer to them. A look ends ``live``, ``waiting`` (not yet: ask
again later) or ``failed`` (the deployment of the commit will never be live).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import httpx

from orchestrator.platforms.vercel import Deployment, VercelApi
from orchestrator.redaction import redact

__all__ = [
    "Sighting",
    "judge_deployments",
    "judge_version",
    "names_commit",
    "probe_url",
    "probe_vercel",
]

MIN_PREFIX = 7  # git's shortest abbreviation
# A hex run of 7 to 40 characters standing on its own (not a slice of a longer digest).
_HEX = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{7,40}(?![0-9a-fA-F])")
_FAILED = frozenset({"ERROR", "CANCELED"})


@dataclass(frozen=True)
class Sighting:
    """One look at production: is ``commit`` live, not yet, or never going to be?"""

    state: Literal["live", "waiting", "failed"]
    detail: str
    url: str | None = None  # the endpoint or the deployment's URL
    deployment_state: str | None = None  # READY, BUILDING, ... or "HTTP 200"
    deployment_id: str | None = None


def names_commit(body: str, sha: str) -> bool:
    """Whether ``body`` names commit ``sha``: in full or by a prefix of at least 7 hex
    characters standing on its own (pure)."""
    full = sha.lower()
    return any(full.startswith(token.lower()) for token in _HEX.findall(body))


def judge_version(status: int, body: str, sha: str, url: str) -> Sighting:
    """A version endpoint's answer judged: live when 200 and the body names ``sha``."""
    shown = redact(url)
    if status != 200:
        return Sighting("waiting", f"{shown} answered HTTP {status}", shown, f"HTTP {status}")
    if names_commit(body, sha):
        return Sighting("live", f"{shown} serves {sha[:12]}", shown, "HTTP 200")
    seen = _HEX.search(body)
    serving = f"serves {seen.group(0)[:12]}" if seen else "names no commit"
    return Sighting("waiting", f"{shown} {serving}, not {sha[:12]} yet", shown, "HTTP 200")


def judge_deployments(deployments: Sequence[Deployment], sha: str) -> Sighting:
    """Vercel's production deployments (newest first) judged for commit ``sha`` (pure).

    The newest deployment of the commit decides: READY is live, ERROR or CANCELED failed,
    anything else (QUEUED, BUILDING, INITIALIZING) not yet.
    """
    mine = [d for d in deployments if d.commit and _same_commit(d.commit, sha)]
    if not mine:
        newest = deployments[0] if deployments else None
        was = f" (newest: {str(newest.commit)[:12]} {newest.state})" if newest is not None else ""
        return Sighting("waiting", f"no production deployment of {sha[:12]} yet{was}")
    d = mine[0]
    where = f"deployment {d.uid} ({d.url}) of {sha[:12]} is {d.state}"
    if d.state == "READY":
        return Sighting("live", where, d.url, d.state, d.uid)
    if d.state in _FAILED:
        return Sighting("failed", where, d.url, d.state, d.uid)
    return Sighting("waiting", where, d.url, d.state, d.uid)


def _same_commit(a: str, b: str) -> bool:
    short = min(len(a), len(b))
    return short >= MIN_PREFIX and a[:short].lower() == b[:short].lower()


def probe_url(url: str, sha: str, *, timeout: float = 10.0) -> Sighting:
    """GET ``url`` once and judge its answer; an endpoint not answering is not live yet."""
    try:
        with httpx.Client(timeout=timeout, follow_redirects=True) as client:
            response = client.get(url, headers={"Cache-Control": "no-cache"})
    except httpx.HTTPError as exc:
        shown = redact(url)
        return Sighting("waiting", f"{shown} does not answer: {type(exc).__name__}", shown)
    return judge_version(response.status_code, response.text[:100_000], sha, url)


def probe_vercel(api: VercelApi, sha: str) -> Sighting:
    """List the project's production deployments once and judge them for ``sha``."""
    return judge_deployments(api.production_deployments(), sha)
