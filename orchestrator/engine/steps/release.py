"""The release gate: between merge and monitor, wait until the pushed commit is live.

Every ``release.interval`` it looks once (:mod:`orchestrator.platforms.liveness` judges the
``release.url``'s body, or the deployment Vercel's production serves). A newer commit live
instead counts when it carries ours (:func:`carries_release`; the audit trail says ``live via
<sha>, which contains the release``). A failed deployment of the commit ends the wait at
once; so does ``release.timeout``. The deployment's URL and state go into the audit trail
(``release_waiting``, ``release_live``, ``release_failed``).

The guard of the gate asks :func:`live_now`: the gate's own live sighting when it is fresh
from this process, else one look at production. Without a ``release:`` block the gate
passes at once: the monitor starts right after the merge, as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from orchestrator.engine.outcomes import MergeOutcome, ReleaseOutcome
from orchestrator.engine.settings import retry_policy
from orchestrator.engine.steps.base import RunContext
from orchestrator.engine.world import carries_release
from orchestrator.errors import GuardError
from orchestrator.platforms.liveness import Sighting, judge_contained, probe_url, probe_vercel
from orchestrator.platforms.vercel import vercel_api
from orchestrator.playbook import Playbook


def prober(
    playbook: Playbook, environ: Mapping[str, str], on_wait: Callable[[str, float], None]
) -> Callable[[str], Sighting]:
    """One look at production's endpoint or API for a commit (no git question yet).

    Vercel's answers: 5xx asked again with the playbook's backoff; a rate limit waited out
    as Vercel asks (told to ``on_wait``), at most the gate's ``release.timeout``."""
    spec = playbook.release
    assert spec is not None
    if spec.url is not None:
        url = spec.url
        timeout = min(10.0, max(1.0, spec.interval))
        return lambda sha: probe_url(url, sha, timeout=timeout)
    api = vercel_api(playbook, environ)
    api.client.retry = retry_policy(playbook)
    api.client.wait_limit = spec.timeout
    api.client.on_wait = on_wait
    return lambda sha: probe_vercel(api, sha)


def looker(ctx: RunContext) -> Callable[[str], Sighting]:
    """One look at production for a commit, as the gate takes it: the endpoint or the API,
    then, when production serves another commit, git's answer to whether that one contains
    ours (:func:`carries_release`; each other commit asked about once per looker)."""

    def rate_limited(what: str, wait: float) -> None:
        ctx.log.warning("rate_limited", api="Vercel API", error=what, wait_s=round(wait, 2))
        ctx.on_progress(f"Vercel API rate limit: waiting {wait:.0f}s as Vercel asks")

    probe = prober(ctx.playbook, ctx.environ, rate_limited)
    answers: dict[tuple[str, str], bool] = {}

    def look(sha: str) -> Sighting:
        seen = probe(sha)
        other = seen.instead.commit if seen.instead is not None else None
        if seen.state == "live" or other is None:
            return seen
        if (other, sha) not in answers:
            try:
                before = (ctx.record.steps.merge or MergeOutcome()).previous_target_commit
                answers[other, sha] = carries_release(
                    ctx.playbook, ctx.repo, ctx.journal, other, sha, before
                )
            except GuardError as exc:  # git unreachable now: not ours this time, ask again
                return replace(seen, detail=f"{seen.detail}; git cannot place {other[:12]}: {exc}")
        return judge_contained(seen, sha, answers[other, sha])

    return look


@dataclass(frozen=True)
class SeenLive:
    """The gate saw ``commit`` (or a commit containing it) live at ``at``."""

    commit: str
    at: float  # time.monotonic() of the sighting


# The gate's last live sighting per run id, made by this process (never stored: a resumed
# process has none, and its guard looks at production itself).
_LIVE_HERE: dict[str, SeenLive] = {}


def is_fresh(seen: SeenLive | None, commit: str, age_limit: float, now: float) -> bool:
    """Whether a sighting of this process still answers "is ``commit`` live?" (pure): the
    same commit, seen within one gate interval (as recent as the gate's next look)."""
    return seen is not None and seen.commit == commit and now - seen.at <= age_limit


def live_now(ctx: RunContext, commit: str) -> bool:
    """Whether ``commit`` (or a commit containing it) is live now, for the guards.

    The gate's own sighting, if this process made it within one ``release.interval``;
    otherwise one look at production (logged as ``release_checked``). Without a
    ``release:`` block there is nothing to look at: True.
    """
    if (spec := ctx.playbook.release) is None:
        return True
    if is_fresh(_LIVE_HERE.get(ctx.record.run_id), commit, spec.interval, time.monotonic()):
        return True
    seen = looker(ctx)(commit)
    ctx.log.info(
        "release_checked",
        commit=commit,
        live=seen.state == "live",
        detail=seen.detail,
        deployment_url=seen.url,
        deployment_state=seen.deployment_state,
    )
    return seen.state == "live"


@dataclass(frozen=True)
class ReleaseStep:
    """Poll until the pushed commit is live, fails to deploy, or the timeout passes."""

    name: str = "release"

    def run(self, ctx: RunContext) -> ReleaseOutcome:
        spec = ctx.playbook.release
        commit = (ctx.record.steps.merge or MergeOutcome()).pushed_commit
        if not commit:
            raise GuardError("the release gate has no pushed commit to wait for")
        if spec is None:  # gate: none, the outcome's default
            return ReleaseOutcome(
                live=True,
                ending="live",
                commit=commit,
                detail="no release: block; the gate passes at once",
            )
        _LIVE_HERE.pop(ctx.record.run_id, None)  # only this walk's own sighting counts
        look = looker(ctx)
        started = time.monotonic()
        deadline = started + spec.timeout
        polls = 0
        last_state: tuple[str | None, ...] | None = None
        while True:
            seen = look(commit)
            polls += 1
            waited = round(time.monotonic() - started, 3)
            event = _event(seen, commit, waited, polls)
            state = (seen.state, seen.deployment_state, seen.deployment_id, seen.commit)
            if seen.state == "live":
                _LIVE_HERE[ctx.record.run_id] = SeenLive(commit, time.monotonic())
                ctx.log.info("release_live", **event)
                break
            if seen.state == "failed":
                ctx.log.error("release_failed", **event)
                break
            if state != last_state:  # one event per change, not one per poll
                ctx.log.info("release_waiting", **event)
                last_state = state
            ctx.on_progress(f"release gate: {seen.detail} (waited {waited:.0f}s)")
            if time.monotonic() + spec.interval > deadline:
                ctx.log.error("release_timeout", **event)
                break
            time.sleep(spec.interval)
        # How the gate ended, and what it last saw (as its audit event says).
        ending = "timeout" if seen.state == "waiting" else seen.state
        gate = "url" if spec.url is not None else "vercel"
        return ReleaseOutcome(
            gate=gate, live=ending == "live", ending=ending, timeout_s=spec.timeout, **event
        )

    def done(self, ctx: RunContext) -> ReleaseOutcome | None:
        return None  # a resumed run looks again: production may have changed meanwhile


def _event(seen: Sighting, commit: str, waited: float, polls: int) -> dict[str, Any]:
    """What one look saw, for the audit trail."""
    return {
        "commit": commit,
        "live_commit": seen.commit,  # ours, a newer one containing it, or what is served
        "detail": seen.detail,
        "deployment_url": seen.url,
        "deployment_state": seen.deployment_state,
        "deployment_id": seen.deployment_id,
        "waited_s": waited,
        "polls": polls,
    }
