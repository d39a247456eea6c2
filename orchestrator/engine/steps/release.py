"""The release gate: between merge and monitor, wait until the pushed commit is live.

Every ``release.interval`` it looks once: the ``release.url`` answers 200 with a body that
names the commit (in full or by a prefix of at least 7 characters), or Vercel reports a
production deployment of the commit (``meta.githubCommitSha``) in state READY. A deployment
of the commit in ERROR or CANCELED ends the wait at once; so does ``release.timeout``. The
deployment's URL and state go into the audit trail (``release_waiting``, ``release_live``,
``release_failed``); the guard of the gate reads the outcome. Without a ``release:`` block
the gate passes at once: the monitor starts right after the merge, as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.engine.outcomes import MergeOutcome
from orchestrator.engine.settings import retry_policy
from orchestrator.engine.steps.base import Outcome, RunContext
from orchestrator.errors import GuardError
from orchestrator.platforms.liveness import Sighting, probe_url, probe_vercel
from orchestrator.platforms.vercel import vercel_api
from orchestrator.playbook import Playbook, ReleaseSpec


def looker(playbook: Playbook, environ: dict[str, str] | None = None) -> Callable[[str], Sighting]:
    """One look at production for a commit, as the playbook's release gate takes it."""
    spec = playbook.release
    assert spec is not None
    if spec.url is not None:
        url = spec.url
        timeout = min(10.0, max(1.0, spec.interval))
        return lambda sha: probe_url(url, sha, timeout=timeout)
    api = vercel_api(playbook, environ or {})
    api.client.retry = retry_policy(playbook)  # 429 and 5xx: the playbook's backoff
    return lambda sha: probe_vercel(api, sha)


def gate_of(spec: ReleaseSpec | None) -> str:
    """How the gate looks: ``none``, ``url`` or ``vercel``."""
    if spec is None:
        return "none"
    return "url" if spec.url is not None else "vercel"


@dataclass(frozen=True)
class ReleaseStep:
    """Poll until the pushed commit is live, fails to deploy, or the timeout passes."""

    name: str = "release"
    now: Callable[[], float] = field(default=time.monotonic, compare=False)
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def run(self, ctx: RunContext) -> Outcome:
        spec = ctx.playbook.release
        commit = MergeOutcome.of(ctx.record).pushed_commit
        if commit is None:
            raise GuardError("the release gate has no pushed commit to wait for")
        gate = gate_of(spec)
        if spec is None:
            return {
                "gate": gate,
                "commit": commit,
                "live": True,
                "ending": "live",
                "detail": "no release: block; the gate passes at once",
            }
        look = looker(ctx.playbook, dict(ctx.environ))
        started = self.now()
        deadline = started + spec.timeout
        polls = 0
        last_state: tuple[str, str | None, str | None] | None = None
        while True:
            seen = look(commit)
            polls += 1
            waited = round(self.now() - started, 3)
            state = (seen.state, seen.deployment_state, seen.deployment_id)
            if seen.state == "live":
                ctx.log.info("release_live", **_event(seen, commit, waited, polls))
                return _outcome(gate, commit, seen, "live", waited, polls, spec.timeout)
            if seen.state == "failed":
                ctx.log.error("release_failed", **_event(seen, commit, waited, polls))
                return _outcome(gate, commit, seen, "failed", waited, polls, spec.timeout)
            if state != last_state:  # one event per change, not one per poll
                ctx.log.info("release_waiting", **_event(seen, commit, waited, polls))
                last_state = state
            ctx.on_progress(f"release gate: {seen.detail} (waited {waited:.0f}s)")
            if self.now() + spec.interval > deadline:
                ctx.log.error("release_timeout", **_event(seen, commit, waited, polls))
                return _outcome(gate, commit, seen, "timeout", waited, polls, spec.timeout)
            self.sleep(spec.interval)

    def done(self, ctx: RunContext) -> Outcome | None:
        return None  # a resumed run looks again: production may have changed meanwhile


def _event(seen: Sighting, commit: str, waited: float, polls: int) -> dict[str, object]:
    return {
        "commit": commit,
        "detail": seen.detail,
        "deployment_url": seen.url,
        "deployment_state": seen.deployment_state,
        "deployment_id": seen.deployment_id,
        "waited_s": waited,
        "polls": polls,
    }


def _outcome(
    gate: str,
    commit: str,
    seen: Sighting,
    ending: str,
    waited: float,
    polls: int,
    timeout: float,
) -> Outcome:
    return {
        "gate": gate,
        "commit": commit,
        "live": ending == "live",
        "ending": ending,
        "detail": seen.detail,
        "deployment_url": seen.url,
        "deployment_state": seen.deployment_state,
        "deployment_id": seen.deployment_id,
        "waited_s": waited,
        "polls": polls,
        "timeout_s": timeout,
    }
