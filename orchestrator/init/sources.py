"""Reading what an app's own files say about where it runs. Pure: text in, values out.

- the ``origin`` remote's URL -> the GitHub repository (``owner/name``);
- the database URL's host -> the Neon endpoint it names (``ep-...``, pooled or not);
- ``.vercel/project.json`` -> the Vercel project and the team that owns it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class GitRemote:
    """Where a remote URL points: its host and, on a GitHub-shaped path, ``owner/name``."""

    host: str
    repo: str | None  # owner/name

    @property
    def on_github(self) -> bool:
        return self.host == "github.com" and self.repo is not None


_SCP_LIKE = re.compile(r"^(?:[^@/\s]+@)?(?P<host>[^:/\s]+):(?P<path>[^/].*)$")
_OWNER_NAME = re.compile(r"^/?(?P<owner>[A-Za-z0-9][A-Za-z0-9-]*)/(?P<name>[A-Za-z0-9._-]+?)/?$")


def parse_remote(url: str) -> GitRemote | None:
    """The host and ``owner/name`` of a git remote URL: ``https://github.com/o/r(.git)``,
    ``git@github.com:o/r.git``, ``ssh://git@github.com[:22]/o/r.git``, ``git://...``.
    None for a local path or a file:// URL (no host)."""
    text = url.strip()
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme == "file" or not parts.hostname:
            return None
        host, path = parts.hostname.lower(), parts.path
    else:
        match = _SCP_LIKE.match(text)
        if match is None or text.startswith(("/", ".", "~")):
            return None
        host, path = match["host"].lower(), match["path"]
    path = path.removesuffix("/").removesuffix(".git")
    found = _OWNER_NAME.match(path)
    repo = f"{found['owner']}/{found['name']}" if found else None
    return GitRemote(host=host.removeprefix("www."), repo=repo)


@dataclass(frozen=True)
class NeonHost:
    """A Neon compute endpoint named by a connection host."""

    endpoint_id: str  # ep-cool-darkness-123456
    region: str  # us-east-2 (azure: eastus2)
    pooled: bool  # the -pooler host: PgBouncer in transaction mode
    host: str  # as written

    @property
    def direct_host(self) -> str:
        """The unpooled host of the same endpoint (migrations need a direct session)."""
        return self.host.replace("-pooler.", ".", 1) if self.pooled else self.host


# ep-<words>-<id>[-pooler][.c-N].<region>[.aws|.azure].neon.tech (older forms: no cloud, no c-N).
_NEON_HOST = re.compile(
    r"^(?P<endpoint>ep-[a-z0-9]+(?:-[a-z0-9]+)*?)(?P<pooler>-pooler)?(?:\.c-\d+)?"
    r"\.(?P<region>[a-z0-9-]+)(?:\.(?:aws|azure))?\.neon\.tech$"
)


def parse_neon_host(host: str) -> NeonHost | None:
    """The Neon endpoint a database host names, or None when it is not a Neon host."""
    written = host.strip().lower().rstrip(".")
    if (match := _NEON_HOST.match(written)) is None:
        return None
    return NeonHost(
        endpoint_id=match["endpoint"],
        region=match["region"],
        pooled=bool(match["pooler"]),
        host=written,
    )


def database_host(url: str) -> str | None:
    """The host of a ``postgres://`` / ``postgresql://`` URL (None for anything else)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("postgres", "postgresql"):
        return None
    try:
        return parts.hostname
    except ValueError:
        return None


@dataclass(frozen=True)
class VercelProject:
    """``.vercel/project.json``: written by ``vercel link``."""

    project_id: str
    team_id: str | None  # None when the owner is a personal account (orgId is a user id)


class ProjectFileUnreadable(ValueError):
    """``.vercel/project.json`` is not what ``vercel link`` writes."""


def parse_vercel_project(text: str) -> VercelProject:
    """The project and its team from ``.vercel/project.json``. ``orgId`` names a team
    (``team_...``) or a personal account; only a team is passed to the API as ``teamId``."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ProjectFileUnreadable(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("projectId"), str):
        raise ProjectFileUnreadable("no projectId (run `vercel link` again)")
    org = data.get("orgId")
    team = org if isinstance(org, str) and org.startswith("team_") else None
    return VercelProject(project_id=data["projectId"], team_id=team)
