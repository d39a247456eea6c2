"""A small client of Vercel's REST API: the deployment calls the release gate needs.

Endpoints (Vercel's published REST reference, ``https://api.vercel.com``):

- ``GET /v6/deployments?projectId=...&teamId=...&target=production``  list deployments,
  newest first: ``uid``, ``url``, ``state`` (or ``readyState``): BUILDING, ERROR,
  INITIALIZING, QUEUED, READY, CANCELED; ``meta.githubCommitSha``; ``created`` (ms)
- ``GET /v13/deployments/{id}``                                      one deployment
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import UsageError
from orchestrator.platforms.http import ApiClient, read_token
from orchestrator.playbook import Playbook

__all__ = ["Deployment", "VercelApi", "vercel_api"]

DEFAULT_API_URL = "https://api.vercel.com"


@dataclass(frozen=True)
class Deployment:
    """A Vercel deployment (the fields the release gate uses)."""

    uid: str
    url: str
    state: str  # READY, BUILDING, ERROR, CANCELED, QUEUED, INITIALIZING
    commit: str | None  # meta.githubCommitSha
    created: int  # ms since the epoch

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Deployment:
        """From a deployment of the list (``uid``) or of ``GET /v13/deployments`` (``id``)."""
        meta = data.get("meta") or {}
        url = str(data.get("url") or "")
        return cls(
            uid=str(data.get("uid") or data.get("id") or ""),
            url=url if not url or "://" in url else f"https://{url}",
            state=str(data.get("state") or data.get("readyState") or "UNKNOWN").upper(),
            commit=meta.get("githubCommitSha") or None,
            created=int(data.get("created") or data.get("createdAt") or 0),
        )


@dataclass
class VercelApi:
    """Calls for one project (and its team, if any)."""

    project_id: str
    team_id: str | None
    client: ApiClient

    def production_deployments(self) -> list[Deployment]:
        """The project's production deployments, newest first."""
        params = {"projectId": self.project_id, "target": "production", "limit": "20"}
        if self.team_id:
            params["teamId"] = self.team_id
        data = self.client.call("GET", "/v6/deployments", params=params)
        found = [Deployment.from_json(d) for d in (data or {}).get("deployments") or ()]
        return sorted(found, key=lambda d: d.created, reverse=True)

    def deployment(self, uid: str) -> Deployment:
        """One deployment, as it is now."""
        params = {"teamId": self.team_id} if self.team_id else None
        return Deployment.from_json(
            self.client.call("GET", f"/v13/deployments/{uid}", params=params)
        )


def vercel_api(playbook: Playbook, environ: Mapping[str, str]) -> VercelApi:
    """The client of the playbook's Vercel project; UsageError without the token."""
    release = playbook.release
    spec = release.vercel if release is not None else None
    if spec is None:
        raise UsageError("the release gate has no vercel: block")
    token = read_token(environ, spec.token_env, "Vercel")
    return VercelApi(spec.project_id, spec.team_id, ApiClient("Vercel API", spec.api_url, token))
