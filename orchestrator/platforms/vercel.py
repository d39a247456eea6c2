"""A small client of Vercel's REST API (``https://api.vercel.com``, as its published
reference describes it): the calls the release gate needs.

- ``GET /v6/deployments?projectId=...&teamId=...&target=production[&sha=...]`` (list
  deployments), newest first: ``uid``, ``url``, ``state`` / ``readyState``, ``readySubstate``
  of a READY one (STAGED: never given production traffic; ROLLING: a rolling release moving
  traffic to it; PROMOTED: "has seen production traffic", still so after an instant rollback),
  ``meta.githubCommitSha``, ``created`` / ``createdAt`` (ms).
- ``GET /v9/projects/{idOrName}?teamId=...`` (find a project by id or name):
  ``targets.production``, the deployment production's domains point to now (``id`` and the
  fields above), null or absent while there is none; a promote or an instant rollback moves it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import UsageError
from orchestrator.platforms.http import ApiClient, read_secret
from orchestrator.playbook import Playbook


@dataclass(frozen=True)
class Deployment:
    """A Vercel deployment (the fields the release gate uses)."""

    uid: str
    url: str
    state: str  # READY, BUILDING, ERROR, CANCELED, DELETED, QUEUED, INITIALIZING, BLOCKED
    commit: str | None  # meta.githubCommitSha
    created: int  # ms since the epoch
    substate: str | None = None  # readySubstate of a READY one: STAGED, ROLLING, PROMOTED

    @property
    def serving(self) -> bool:
        """Whether, as production's deployment, it takes all of production's traffic: READY
        and promoted (or no substate said), not STAGED nor still ROLLING."""
        return self.state == "READY" and self.substate in (None, "PROMOTED")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Deployment:
        """From a deployment of the list (``uid``) or a project's target (``id``)."""
        meta = data.get("meta") or {}
        url = str(data.get("url") or "")
        substate = data.get("readySubstate")
        return cls(
            uid=str(data.get("uid") or data.get("id") or ""),
            url=url if not url or "://" in url else f"https://{url}",
            state=str(data.get("readyState") or data.get("state") or "UNKNOWN").upper(),
            commit=meta.get("githubCommitSha") or None,
            created=int(data.get("createdAt") or data.get("created") or 0),
            substate=str(substate).upper() if substate else None,
        )


@dataclass
class VercelApi:
    """Calls for one project (and its team, if any)."""

    project_id: str
    team_id: str | None
    client: ApiClient

    def production_deployments(self, sha: str | None = None) -> list[Deployment]:
        """The project's production deployments, newest first; only those of commit
        ``sha`` when given (the API's own ``sha`` filter)."""
        params = {"projectId": self.project_id, "target": "production", "limit": "20"}
        if self.team_id:
            params["teamId"] = self.team_id
        if sha:
            params["sha"] = sha
        data = self.client.call("GET", "/v6/deployments", params=params)
        found = [Deployment.from_json(d) for d in (data or {}).get("deployments") or ()]
        return sorted(found, key=lambda d: d.created, reverse=True)

    def production(self) -> Deployment | None:
        """The deployment production serves now (the project's ``targets.production``)."""
        params = {"teamId": self.team_id} if self.team_id else {}
        data = self.client.call("GET", f"/v9/projects/{self.project_id}", params=params)
        target = ((data or {}).get("targets") or {}).get("production")
        return Deployment.from_json(target) if target else None


def vercel_api(playbook: Playbook, environ: Mapping[str, str]) -> VercelApi:
    """The client of the playbook's Vercel project; UsageError without the token."""
    release = playbook.release
    spec = release.vercel if release is not None else None
    if spec is None:
        raise UsageError("the release gate has no vercel: block")
    token = read_secret(environ, spec.token_env, "Vercel token")
    return VercelApi(spec.project_id, spec.team_id, ApiClient("Vercel API", spec.api_url, token))
