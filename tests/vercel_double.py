"""A contract double of the Vercel REST API subset the release gate uses, on a local HTTP
server, with bearer-token authentication and ``{"error": {"code", "message"}}`` errors, in
the shapes of Vercel's published REST reference:

- ``GET /v6/deployments`` ("Deployments": List deployments; ``projectId``, ``teamId``,
  ``target=production``, ``sha``): ``uid``, ``state`` and ``readyState``, ``readySubstate``,
  ``created`` and ``createdAt``, ``meta.githubCommitSha``;
- ``GET /v9/projects/{idOrName}`` ("Projects": Find a project by id or name,
  https://vercel.com/docs/rest-api/projects/find-a-project-by-id-or-name; ``teamId``): the
  project's required fields and ``targets.production``, the deployment production's domains
  point to (``id``, not ``uid``; ``url``, ``readyState``, ``readySubstate``, ``meta``,
  ``createdAt``, ...), ``null`` while there is none (the reference's ``targets`` is a map of
  nullable deployments; as @vercel/sdk, generated from it, types it:
  ``targets?: { [k: string]: GetProjectTargets | null }``). 404 ``not_found`` for another
  project.

Deployments follow the real bare origin (:class:`tests.production_double.LiveCommit`'s
origin and branch): each new tip of the target branch gets a production deployment with
``meta.githubCommitSha``, BUILDING for ``build_seconds``, then ``final_state`` (READY, or
ERROR / CANCELED / DELETED / BLOCKED to make a release fail). A READY one carries
``ready_substate``: PROMOTED (has seen production traffic: it becomes
``targets.production``), or STAGED (a production deployment that was not promoted: it never
gets production traffic) or ROLLING (a rolling release moving traffic to it; the double
leaves ``targets.production`` as it was).
:meth:`VercelState.roll_back` is an instant rollback (``POST
/v1/projects/{projectId}/rollback/{deploymentId}``, "points all production domains for a
project to the given deploy"): ``targets.production`` moves back while every deployment keeps
its ``readyState`` and ``readySubstate`` (PROMOTED stays: it "has seen production traffic").
Tests can queue failures (429 with Retry-After).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.sandbox.release import git
from tests.http_double import Reply, Request, queued_failure, serve


@dataclass
class VercelState:
    """What the double holds and what tests inspect."""

    origin: Path
    project_id: str
    team_id: str
    token: str
    branch: str = "main"
    build_seconds: float = 1.0
    final_state: str = "READY"
    ready_substate: str = "PROMOTED"  # what a READY deployment says: PROMOTED, STAGED, ROLLING
    deployments: list[dict[str, Any]] = field(default_factory=list)  # newest first
    production: str | None = None  # uid of targets.production: what production serves now
    requests: list[tuple[str, str]] = field(default_factory=list)
    failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def deploy_tip(self, *, ready: bool = False) -> None:
        """A production deployment of the branch tip, unless the newest already is one."""
        tip = git(self.origin, "rev-parse", f"refs/heads/{self.branch}")
        if self.deployments and self.deployments[0]["meta"]["githubCommitSha"] == tip:
            return
        n = next(self._ids)
        self.deployments.insert(
            0,
            {
                "uid": f"dpl_{n:04d}",
                "name": "service-desk",
                "url": f"service-desk-{n:04d}.vercel.app",
                "created": int(time.time() * 1000),
                "state": "READY" if ready else "BUILDING",
                "readySubstate": "PROMOTED" if ready else None,
                "target": "production",
                "meta": {"githubCommitSha": tip, "githubCommitRef": self.branch},
                "_since": time.monotonic(),
            },
        )
        if ready:
            self.promote(self.deployments[0])

    def advance(self) -> None:
        """Builds that have run ``build_seconds`` end in ``final_state``."""
        self.deploy_tip()
        for d in self.deployments:
            if d["state"] == "BUILDING" and time.monotonic() - d["_since"] >= self.build_seconds:
                d["state"] = self.final_state
                if d["state"] == "READY":
                    d["readySubstate"] = self.ready_substate
                    if d["readySubstate"] == "PROMOTED":
                        self.promote(d)

    def promote(self, d: dict[str, Any]) -> None:
        """Production's domains point to ``d`` from now on."""
        d["_served"] = True
        self.production = d["uid"]

    def roll_back(self) -> dict[str, Any]:
        """An instant rollback: production goes back to the newest deployment before the
        current one that served production. Only ``targets.production`` moves; the one rolled
        back from stays READY and PROMOTED. Returns the deployment production serves now."""
        uids = [d["uid"] for d in self.deployments]
        older = self.deployments[uids.index(self.production) + 1 :]
        previous = next(d for d in older if d.get("_served"))
        self.production = previous["uid"]
        return previous


def _public(d: dict[str, Any]) -> dict[str, Any]:
    """A deployment as the v6 list shows it."""
    shown = {k: v for k, v in d.items() if not k.startswith("_") and v is not None}
    shown["readyState"] = shown["state"]
    shown["createdAt"] = shown["created"]
    return shown


def _project(state: VercelState) -> dict[str, Any]:
    """The project as ``GET /v9/projects/{idOrName}`` shows it: the reference's required
    fields, and ``targets.production`` (the deployment production serves, or null)."""
    served = next((d for d in state.deployments if d["uid"] == state.production), None)
    target = None
    if served is not None:
        shown = _public(served)
        target = {
            "id": shown.pop("uid"),
            **{k: v for k, v in shown.items() if k not in ("state", "created")},
            "createdIn": "iad1",
            "creator": {"uid": "usr_release", "email": "release@example.com", "username": "rel"},
            "deploymentHostname": served["url"].removesuffix(".vercel.app"),
            "plan": "pro",
            "private": True,
            "type": "LAMBDAS",
        }
    regions = {"functionDefaultRegions": ["iad1"]}
    return {
        "accountId": state.team_id,
        "id": state.project_id,
        "name": "service-desk",
        "alias": [],
        "deploymentExpiration": {"expirationDays": 180},
        "directoryListing": False,
        "nodeVersion": "22.x",
        "resourceConfig": regions,
        "defaultResourceConfig": regions,
        "targets": {"production": target},
    }


def _error(status: int, code: str, message: str) -> Reply:
    """Vercel's error shape, ``{"error": {"code", "message"}}``."""
    return status, {"error": {"code": code, "message": message}}


def _answer(state: VercelState, request: Request) -> Reply:
    """Authenticate, answer a queued failure, or answer the deployments asked for."""
    state.requests.append(("GET", request.target))
    if request.headers.get("Authorization") != f"Bearer {state.token}":
        return _error(403, "forbidden", "Not authorized")
    failure = queued_failure(
        state.failures, {"error": {"code": "rate_limited", "message": "slow down"}}
    )
    if failure is not None:
        return failure
    query = request.query
    if query.get("teamId", state.team_id) != state.team_id:
        return _error(403, "forbidden", "You don't have access to this team")
    state.advance()
    if request.path == "/v6/deployments":
        if query.get("projectId") != state.project_id:
            return _error(404, "not_found", "Project not found")
        found = [
            _public(d)
            for d in state.deployments
            if query.get("target") in (None, d["target"])
            and query.get("sha") in (None, d["meta"]["githubCommitSha"])
        ]
        return 200, {"deployments": found, "pagination": {"count": len(found)}}
    if request.path == f"/v9/projects/{state.project_id}":
        return 200, _project(state)
    if request.path.startswith("/v9/projects/"):
        return _error(404, "not_found", "Project not found")
    return _error(404, "not_found", "The requested path does not exist")


@contextmanager
def vercel_double(
    origin: Path,
    project_id: str = "prj_service_desk",
    team_id: str = "team_release",
    token: str = "vercel_test_token_5f1c",
) -> Iterator[tuple[str, VercelState]]:
    """Serve the double on 127.0.0.1; yields its API base URL and its state."""
    state = VercelState(origin, project_id, team_id, token)
    state.deploy_tip(ready=True)  # what production runs before the release
    with serve(lambda request: _answer(state, request)) as url:
        yield url, state
