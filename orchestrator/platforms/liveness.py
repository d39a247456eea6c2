"""Is the pushed commit live? One look at a version endpoint or at Vercel's production.

The judgements are pure functions of what was seen (:func:`judge_version`,
:func:`judge_deployments`); the probes (:func:`probe_url`, :func:`probe_vercel`) ask over
HTTP and hand the answers to them. A look ends ``live``, ``waiting`` (not yet: ask
again later) or ``failed`` (the deployment of the commit will never be live).

Production may serve a newer commit than ours: someone merged after us and that one was
deployed first. A look that sees another commit carries it (``Sighting.instead``); whether it
contains ours is git's question, asked at the edge, and :func:`judge_contained` (pure) counts
it live when it does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import httpx

from orchestrator.platforms.vercel import Deployment, VercelApi
from orchestrator.redaction import redact

MIN_PREFIX = 7  # git's shortest abbreviation
# A hex run of 7 to 40 characters standing on its own (not a slice of a longer digest).
_HEX = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{7,40}(?![0-9a-fA-F])")
# Final: never going to serve. BLOCKED: not until a person acts (Vercel's "Troubleshoot project
# collaboration": a committer the team must approve); resume looks again once they have.
_FAILED = frozenset({"ERROR", "CANCELED", "DELETED", "BLOCKED"})
_UNDER_WAY = frozenset({"QUEUED", "BUILDING", "INITIALIZING"})


@dataclass(frozen=True)
class Sighting:
    """One look at production: is ``commit`` live, not yet, or never going to be?"""

    state: Literal["live", "waiting", "failed"]
    detail: str
    url: str | None = None  # the endpoint or the deployment's URL
    deployment_state: str | None = None  # READY, BUILDING, ... or "HTTP 200"
    deployment_id: str | None = None
    commit: str | None = None  # the commit production was seen serving, when it is named
    # Production serves another commit than ours: that one, seen live (ours if it contains it).
    instead: Sighting | None = None


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
        return Sighting("live", f"{shown} serves {sha[:12]}", shown, "HTTP 200", commit=sha)
    if (seen := _HEX.search(body)) is None:
        return Sighting(
            "waiting", f"{shown} names no commit, not {sha[:12]} yet", shown, "HTTP 200"
        )
    other = seen.group(0)
    serves = f"{shown} serves {other[:12]}"
    instead = Sighting("live", serves, shown, "HTTP 200", commit=other)
    return Sighting(
        "waiting", f"{serves}, not {sha[:12]} yet", shown, "HTTP 200", commit=other, instead=instead
    )


def judge_deployments(
    deployments: Sequence[Deployment], sha: str, current: Deployment | None
) -> Sighting:
    """Vercel's production deployments (newest first) judged for commit ``sha``, given the
    ``current`` one production serves (``targets.production``; None: none) (pure).

    Live when ``current`` is of the commit and serving (READY, no ``readySubstate`` or
    PROMOTED); else the newest deployment of the commit decides: ERROR, CANCELED (unless a
    newer one is being built: Vercel cancels a queued build for a newer commit's), DELETED or
    BLOCKED failed; others wait, READY too (STAGED, ROLLING, or PROMOTED: "has seen production
    traffic", as after an instant rollback). ``instead``: another commit production serves.
    """
    instead = None
    if current is not None and current.serving and current.commit:
        where = f"deployment {current.uid} ({current.url}) of {current.commit[:12]} in production"
        if _same_commit(current.commit, sha):
            return Sighting("live", where, current.url, current.state, current.uid, commit=sha)
        instead = Sighting("live", where, current.url, "READY", current.uid, commit=current.commit)
    serving = instead.commit if instead is not None else None
    mine = [d for d in deployments if d.commit and _same_commit(d.commit, sha)]
    if not mine:
        newest = deployments[0] if deployments else None
        was = f" (newest: {str(newest.commit)[:12]} {newest.state})" if newest is not None else ""
        detail = f"no production deployment of {sha[:12]} yet{was}"
        return Sighting("waiting", detail, commit=serving, instead=instead)
    d = mine[0]
    shown = f"{d.state} {d.substate}" if d.substate and d.state == "READY" else d.state
    where = f"deployment {d.uid} ({d.url}) of {sha[:12]} is {shown}"
    if d.state == "READY":
        where += " (production does not serve it)"
        return Sighting("waiting", where, d.url, shown, d.uid, commit=serving, instead=instead)
    # Vercel cancels a queued build when a newer commit of the branch comes: that one's
    # build, still running, may carry ours.
    newer = [x for x in deployments if x.created > d.created and x.state in _UNDER_WAY]
    if d.state == "CANCELED" and newer:
        where += f" (for the newer {newer[-1].uid}, {newer[-1].state})"
    failed = d.state in _FAILED and not (d.state == "CANCELED" and newer)
    state: Literal["failed", "waiting"] = "failed" if failed else "waiting"
    return Sighting(state, where, d.url, d.state, d.uid, commit=serving, instead=instead)


def judge_contained(seen: Sighting, sha: str, contains: bool) -> Sighting:
    """A look at production, given git's answer to "does the commit production serves
    instead contain ``sha``?" (pure).

    A newer commit merged after ours and deployed first carries our release: it counts live
    (``live via <sha>, which contains the release``), even over a deployment of ours that
    failed or was canceled in its favour. Anything else stands as seen.
    """
    other = seen.instead
    if seen.state == "live" or other is None or other.commit is None or not contains:
        return seen
    detail = f"live via {other.commit[:12]}, which contains the release {sha[:12]}: {other.detail}"
    return replace(other, detail=detail)


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
    """Ask Vercel which deployment production serves now; unless it is ours, list the project's
    production deployments of ``sha`` (the API's ``sha`` filter) and the newest of any commit
    (a newer build may be under way for a canceled one of ours), and judge them."""
    production = api.production()
    seen = judge_deployments([], sha, production)  # live or not: production's answer alone
    if seen.state == "live":
        return seen
    mine = api.production_deployments(sha)
    known = {d.uid for d in mine}
    others = [d for d in api.production_deployments() if d.uid not in known]
    return judge_deployments(sorted([*mine, *others], key=lambda d: -d.created), sha, production)
