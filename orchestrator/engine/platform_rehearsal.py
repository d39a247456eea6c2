"""The rehearsal of the platform parts of a deploy: the pull request (``git.via:
github_pr``) and the release gate. Read-only: no pull request is opened, nothing merged.

:func:`look_at_platforms` asks GitHub and the release endpoint (or Vercel) once, before the
walk; the walk's rehearsal forms of ``preflight``, ``merge`` and ``release`` predict from
what they said (:func:`predict_pull_request`, :func:`predict_release`, both pure).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.errors import GuardError, MonitorUnhealthyError
from orchestrator.platforms.github import Mergeability, github_api, judge_pull
from orchestrator.platforms.http import ApiError
from orchestrator.platforms.liveness import probe_url
from orchestrator.platforms.vercel import vercel_api
from orchestrator.playbook import Playbook

__all__ = ["PlatformLook", "look_at_platforms", "predict_pull_request", "predict_release"]


@dataclass(frozen=True)
class PlatformLook:
    """What GitHub and the release endpoint said to the rehearsal."""

    pull_request: str | None = None  # "#12 https://..." or None: none open yet
    mergeability: Mergeability | None = None
    release_answers: bool | None = None  # None: no release gate
    release_detail: str = ""


def look_at_platforms(playbook: Playbook, environ: Mapping[str, str], source: str) -> PlatformLook:
    """Ask once: the pull request's mergeability (github_pr) and whether the release gate's
    endpoint or API answers. A missing token is a UsageError (exit 2)."""
    pull, verdict = None, None
    spec = playbook.git
    if spec.via == "github_pr":
        api = github_api(playbook, environ)
        try:
            pr = api.find_open_pull(spec.source, spec.target)
        except ApiError as exc:
            verdict = Mergeability("refused", f"GitHub does not answer: {exc}")
        else:
            if pr is not None:
                pull = f"#{pr.number} {pr.url}"
                verdict = judge_pull(pr, api.checks(pr.head_sha))
                if pr.head_sha != source:
                    verdict = Mergeability(
                        "refused", f"{pull} heads {pr.head_sha[:12]}, not {source[:12]}"
                    )
    answers, detail = None, ""
    release = playbook.release
    if release is not None and release.url is not None:
        seen = probe_url(release.url, "0" * 40, timeout=min(10.0, release.timeout))
        answers = seen.deployment_state is not None
        detail = seen.detail
    elif release is not None:
        vercel = vercel_api(playbook, environ)
        try:
            found = vercel.production_deployments()
        except ApiError as exc:
            answers, detail = False, str(exc)
        else:
            newest = found[0] if found else None
            answers = True
            detail = (
                f"Vercel lists {len(found)} production deployment(s); newest "
                f"{str(newest.commit)[:12]} {newest.state} ({newest.url})"
                if newest is not None
                else "Vercel lists no production deployment yet"
            )
    return PlatformLook(pull, verdict, answers, detail)


def predict_pull_request(look: PlatformLook, playbook: Playbook) -> str | None:
    """What pre-flight would do with the pull request (None without github_pr); raises
    GuardError (exit 21) when it would refuse to start."""
    spec = playbook.git
    if spec.via != "github_pr":
        return None
    verdict = look.mergeability
    if verdict is not None and verdict.verdict == "refused":
        raise GuardError(
            f"GitHub cannot merge {look.pull_request or 'the release'}: {verdict.reason}"
        )
    if look.pull_request is None:
        return f"would open a pull request {spec.source} -> {spec.target} on {_repo(playbook)}"
    note = verdict.reason if verdict is not None else ""
    return f"pull request {look.pull_request}: GitHub would merge it ({note})"


def predict_release(look: PlatformLook, playbook: Playbook) -> str:
    """What the release gate would do; raises (exit 22) when its endpoint does not answer."""
    release = playbook.release
    if release is None:
        return "no release: block; the monitor starts right after the merge"
    what = release.url or "Vercel's deployments API"
    if not look.release_answers:
        error = MonitorUnhealthyError(
            f"the release gate's {what} does not answer ({look.release_detail}): the gate "
            f"would wait {release.timeout:g}s and halt"
        )
        raise error
    return (
        f"would wait up to {release.timeout:g}s, every {release.interval:g}s, for the merge "
        f"to be live; {what} answers now: {look.release_detail}"
    )


def _repo(playbook: Playbook) -> str:
    github = playbook.git.github
    return github.repo if github is not None else "GitHub"
