"""The rehearsal of the platform parts of a deploy: the pull request (``git.via:
github_pr``) and the release gate. Read-only: no pull request is opened, nothing merged.

:func:`look_at_platforms` asks GitHub and the release endpoint (or Vercel) once, before the
walk; the walk's rehearsal forms of ``preflight``, ``merge`` and ``release`` predict from
what they said (:func:`predict_pull_request`, :func:`predict_release`, both pure).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.engine.steps.preflight import MERGEABILITY_WAIT_S
from orchestrator.engine.steps.pull_request import (
    await_pull,
    judge_for_preflight,
    through_pull_request,
)
from orchestrator.errors import GuardError, MonitorUnhealthyError
from orchestrator.platforms.github import Mergeability, choose_merge_method, github_api
from orchestrator.platforms.http import ApiError
from orchestrator.platforms.liveness import probe_url
from orchestrator.platforms.vercel import vercel_api
from orchestrator.playbook import Playbook

__all__ = ["PlatformLook", "look_at_platforms", "predict_pull_request", "predict_release"]


@dataclass(frozen=True)
class PlatformLook:
    """What GitHub and the release endpoint said to the rehearsal."""

    via_pull_request: bool = False  # pre-flight would find or open one (through_pull_request)
    pull_request: str | None = None  # "#12 https://..." or None: none open yet
    mergeability: Mergeability | None = None
    release_answers: bool | None = None  # None: no release gate
    release_detail: str = ""


def look_at_platforms(
    playbook: Playbook, environ: Mapping[str, str], source: str, *, already_merged: bool
) -> PlatformLook:
    """Ask once: the pull request's mergeability (when pre-flight would look for one: the
    same :func:`through_pull_request`) and whether the release gate's endpoint or API
    answers. ``already_merged``: the trial merge found the source in the target. A missing
    token is a UsageError (exit 2)."""
    pull, verdict = None, None
    spec = playbook.git
    via_pull_request = through_pull_request(spec.via, already_merged)
    if via_pull_request:
        api = github_api(playbook, environ)
        assert spec.github is not None  # the playbook requires it with github_pr
        try:
            method, why = choose_merge_method(spec.github.merge_method, api.repository())
            pr = api.find_open_pull(spec.source, spec.target)
        except ApiError as exc:
            verdict = Mergeability("refused", f"GitHub does not answer: {exc}")
        else:
            if method is None:
                verdict = Mergeability("refused", f"cannot merge through GitHub: {why}")
            elif pr is not None:
                pull = f"#{pr.number} {pr.url}"
                wait = min(MERGEABILITY_WAIT_S, spec.github.checks_timeout)  # as pre-flight
                pr, judged = await_pull(api, pr.number, spec.github, timeout=wait, for_checks=False)
                verdict = judge_for_preflight(pr, judged, source)
    answers, detail = None, ""
    release = playbook.release
    if release is not None and release.url is not None:
        seen = probe_url(release.url, "0" * 40, timeout=min(10.0, release.timeout))
        answers = seen.deployment_state is not None
        detail = seen.detail
    elif release is not None:
        try:  # what production serves now: the newest READY one may be rolled back from
            serving = vercel_api(playbook, environ).production()
        except ApiError as exc:
            answers, detail = False, str(exc)
        else:
            answers, detail = True, "production serves no deployment yet"
            if serving is not None:
                detail = f"production serves {str(serving.commit)[:12]} ({serving.url})"
    return PlatformLook(via_pull_request, pull, verdict, answers, detail)


def predict_pull_request(look: PlatformLook, playbook: Playbook) -> str | None:
    """What pre-flight would do with the pull request (None without github_pr); raises
    GuardError (exit 21) when it would refuse to start."""
    spec = playbook.git
    if spec.via != "github_pr":
        return None
    if not look.via_pull_request:
        return (
            f"{spec.source} is already in {spec.target}: no pull request to find or open "
            "(as pre-flight)"
        )
    verdict = look.mergeability
    if verdict is not None and verdict.verdict == "refused":
        raise GuardError(verdict.reason)  # worded by judge_for_preflight, or GitHub is down
    if look.pull_request is None:
        assert spec.github is not None  # the playbook requires it with github_pr
        return f"would open a pull request {spec.source} -> {spec.target} on {spec.github.repo}"
    note = verdict.reason if verdict is not None else ""
    return f"pull request {look.pull_request}: GitHub would merge it ({note})"


def predict_release(look: PlatformLook, playbook: Playbook) -> str:
    """What the release gate would do; raises (exit 22) when its endpoint does not answer."""
    if (release := playbook.release) is None:
        return "no release: block; the monitor starts right after the merge"
    what = release.url or "Vercel's API"
    if not look.release_answers:
        raise MonitorUnhealthyError(
            f"the release gate's {what} does not answer ({look.release_detail}): the gate "
            f"would wait {release.timeout:g}s and halt"
        )
    return (
        f"would wait up to {release.timeout:g}s, every {release.interval:g}s, for the merge "
        f"to be live; {what} answers now: {look.release_detail}"
    )
