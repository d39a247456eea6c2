"""What ``orchestrator init`` reads from the app's folder, its git config, the environment
and (with a key or token) the platforms' APIs: the edge where :class:`Draft` is filled in.

Nothing here changes anything: files are read, ``git config`` is read, and the API calls are
GETs (Neon: the key's organizations, their projects, the projects' endpoints, a branch; GitHub:
a branch). An API that refuses or cannot be reached leaves its value missing, with its message.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import children
from orchestrator.init.draft import (
    DEFAULT_GITHUB_API_URL,
    DEFAULT_NEON_API_URL,
    DEFAULT_VERCEL_API_URL,
    Draft,
    Missing,
    Slot,
    Sourced,
)
from orchestrator.init.drizzle_config import (
    DRIZZLE_DEFAULTS,
    ConfigUnreadable,
    DrizzleConfig,
    Expression,
    parse_drizzle_config,
)
from orchestrator.init.sources import (
    GitRemote,
    NeonHost,
    ProjectFileUnreadable,
    VercelProject,
    database_host,
    parse_neon_host,
    parse_remote,
    parse_vercel_project,
)
from orchestrator.platforms.http import ApiClient, ApiError

DRIZZLE_CONFIG_NAMES = (
    "drizzle.config.ts",
    "drizzle.config.mts",
    "drizzle.config.cts",
    "drizzle.config.js",
    "drizzle.config.mjs",
    "drizzle.config.cjs",
    "drizzle.config.json",
)
_MAX_PAGES = 20  # of an organization's project list (400 a page)


@dataclass(frozen=True)
class InitOptions:
    """What the command line says: where production's URL is, the API base URLs."""

    database_url: str | None = None  # --database-url; else the variable the config names
    via: str | None = None  # --via: push or github_pr (None: decide from the API)
    health_url: str | None = None
    monitor_duration: str = "15m"
    monitor_interval: str = "30s"
    neon_api_url: str = DEFAULT_NEON_API_URL
    github_api_url: str = DEFAULT_GITHUB_API_URL
    vercel_api_url: str = DEFAULT_VERCEL_API_URL


@dataclass(frozen=True)
class Discovery:
    """The draft, and one line per thing read (what init prints)."""

    draft: Draft
    report: tuple[str, ...]


def _get(name: str, base_url: str, token: str, path: str) -> Any:
    """GET ``path`` of an API as the holder of ``token``: its JSON answer."""
    return ApiClient(name, base_url, token).call("GET", path)


def discover(root: Path, environ: Mapping[str, str], options: InitOptions) -> Discovery:
    """Read everything init uses about the app in ``root``."""
    report: list[str] = []
    notes: list[str] = []

    config, config_name = _drizzle_config(root, report)
    migrations_dir, schema, table = _migrations(root, config, config_name, notes)
    url_env = config.url_env if config is not None and config.url_env else "DATABASE_URL"

    url = options.database_url or environ.get(url_env, "")
    neon = parse_neon_host(database_host(url) or "") if url else None
    if not url:
        report.append(f"database: ${url_env} is not set (the playbook names it; set it to deploy)")
    elif neon is None:
        report.append(f"database: ${url_env} is not a Neon endpoint (backup: restore_point)")
    neon_project, neon_branch = _neon(neon, environ, options, report, notes)

    remote, git_top = _git(root, report, notes)
    github_repo: Slot | None = None
    enterprise = options.github_api_url.rstrip("/") != DEFAULT_GITHUB_API_URL  # GHE API
    if remote is not None and remote.repo is not None and (remote.on_github or enterprise):
        github_repo = Sourced(remote.repo, f"from the origin remote ({remote.host})")
    elif options.via == "github_pr":  # never fall back to pushing to a protected target
        github_repo = Missing("origin names no GitHub repository: write it as owner/name")
    elif remote is not None:
        report.append(f"git: origin is on {remote.host}, not github.com: merges are pushed")
    via, via_reason = _via(github_repo, "main", environ, options, report)

    vercel = _vercel(root, report)
    return Discovery(
        draft=Draft(
            name=_name(root),
            url_env=url_env,
            migrations_dir=migrations_dir,
            migrations_schema=schema,
            migrations_table=table,
            git_top=git_top,
            via=via,  # type: ignore[arg-type]
            via_reason=via_reason,
            github_repo=github_repo,
            github_api_url=options.github_api_url,
            neon_endpoint=neon.endpoint_id if neon else None,
            neon_project=neon_project,
            neon_branch=neon_branch,
            neon_api_url=options.neon_api_url,
            vercel=vercel,
            vercel_api_url=options.vercel_api_url,
            health_url=options.health_url,
            monitor_duration=options.monitor_duration,
            monitor_interval=options.monitor_interval,
            notes=tuple(notes),
        ),
        report=tuple(report),
    )


# ----------------------------------------------------------------------------- drizzle


def _drizzle_config(root: Path, report: list[str]) -> tuple[DrizzleConfig | None, str | None]:
    for name in DRIZZLE_CONFIG_NAMES:
        path = root / name
        if not path.is_file():
            continue
        try:
            config = parse_drizzle_config(
                path.read_text(encoding="utf-8"), json_file=name.endswith(".json")
            )
        except (ConfigUnreadable, UnicodeDecodeError) as exc:
            report.append(f"drizzle: {name} could not be read without running it ({exc})")
            return None, name
        report.append(f"drizzle: read {name}")
        return config, name
    report.append("drizzle: no drizzle.config.(ts|js|json) here")
    return None, None


def _migrations(
    root: Path, config: DrizzleConfig | None, config_name: str | None, notes: list[str]
) -> tuple[Slot, Slot, Slot]:
    if config is None and config_name:  # a config init cannot read may set any of the three
        how = f"{config_name} sets it in a way init cannot read: copy its value here"
        return Missing(how), Missing(how), Missing(how)
    where = config_name or "the drizzle config"

    def slot(value: str | Expression | None, key: str) -> Slot:
        if value is None:  # not written
            return Sourced(DRIZZLE_DEFAULTS[key], "drizzle-kit's default")
        if isinstance(value, Expression) and value.source.startswith("..."):
            return Missing(f"{where} may set {key} through `{value.source}`: write its value here")
        if isinstance(value, Expression):
            return Missing(f"{where} sets {key} to `{value.source}`: write its value here")
        return Sourced(value, f"{key} in {where}")

    config = config or DrizzleConfig()  # no config file: drizzle-kit's defaults throughout
    folder = slot(config.out, "out")
    journal = "meta/_journal.json"
    if isinstance(folder, Sourced) and not (root / folder.value / journal).is_file():
        if config_name is None:  # no config and no folder: the migrations may be anywhere
            folder = Missing(f"the folder drizzle-kit generate writes (holding {journal})")
        else:
            notes.append(f"{folder.value}/{journal} does not exist yet: run drizzle-kit generate")
    if config.dialect is not None and config.dialect != "postgresql":
        notes.append(f"{where} says dialect {config.dialect}: orchestrator needs postgresql")
    return folder, slot(config.schema, "migrations.schema"), slot(config.table, "migrations.table")


# ----------------------------------------------------------------------------- Neon


def _neon(
    neon: NeonHost | None,
    environ: Mapping[str, str],
    options: InitOptions,
    report: list[str],
    notes: list[str],
) -> tuple[Slot | None, str]:
    """The project holding the endpoint, and production's branch (by name)."""
    if neon is None:
        return None, "main"
    report.append(f"database: Neon endpoint {neon.endpoint_id} ({neon.region})")
    if neon.pooled:
        notes.append(
            f"The database URL uses the pooled host: migrations need the direct one, "
            f"{neon.direct_host} (drop -pooler)."
        )
    key = environ.get("NEON_API_KEY", "")
    if not key:
        how = "set NEON_API_KEY and run init again, or copy it from the Neon console"
        report.append("neon: NEON_API_KEY is not set: the project is left to fill in")
        return Missing(how), "main"
    try:
        found = _find_endpoint(neon.endpoint_id, key, options.neon_api_url)
    except ApiError as exc:
        report.append(f"neon: {exc}")
        return Missing(f"the Neon API refused ({exc}); copy it from the Neon console"), "main"
    if found is None:
        how = "no project this API key sees has the endpoint: copy it from the Neon console"
        report.append(f"neon: no project has endpoint {neon.endpoint_id}")
        return Missing(how), "main"
    project, branch = found  # the branch's id, until Neon names it
    try:
        path = f"/projects/{project}/branches/{branch}"
        answer = _get("Neon API", options.neon_api_url, key, path)
        branch = str(answer.get("branch", {}).get("name") or branch)
    except ApiError as exc:
        report.append(f"neon: branch {branch}: {exc} (named by its id)")
    report.append(f"neon: project {project}, branch {branch} (through the API)")
    return Sourced(project, f"holds endpoint {neon.endpoint_id}"), branch


def _project_ids(key: str, api_url: str) -> Iterator[str]:
    """The key's projects, organization by organization: Neon lists a personal key's
    projects only for the organization it names (``org_id``), which are the user's
    (``GET /users/me/organizations``; an organization key's own only)."""
    for org in _get("Neon API", api_url, key, "/users/me/organizations").get("organizations") or []:
        cursor = ""
        for _page in range(_MAX_PAGES):
            page = f"&cursor={cursor}" if cursor else ""
            answer = _get("Neon API", api_url, key, f"/projects?limit=400&org_id={org['id']}{page}")
            projects = [p for p in answer.get("projects") or [] if isinstance(p, dict)]
            yield from (str(project["id"]) for project in projects)
            following = str((answer.get("pagination") or {}).get("cursor") or "")
            if not projects or not following or following == cursor:
                break
            cursor = following


def _find_endpoint(endpoint_id: str, key: str, api_url: str) -> tuple[str, str] | None:
    """(project id, branch id) of the endpoint, looking through the key's projects."""
    for project in _project_ids(key, api_url):
        listed = _get("Neon API", api_url, key, f"/projects/{project}/endpoints")
        for endpoint in listed.get("endpoints") or []:
            if isinstance(endpoint, dict) and endpoint.get("id") == endpoint_id:
                return project, str(endpoint.get("branch_id") or "main")
    return None


# ----------------------------------------------------------------------------- git


def _git_answer(root: Path, *args: str) -> str | None:
    """What ``git ARGS`` prints in ``root``; None when it fails or git cannot run."""
    try:
        done = children.run(["git", *args], cwd=root)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _git(root: Path, report: list[str], notes: list[str]) -> tuple[GitRemote | None, str]:
    """origin's host and repository, and the work tree's top from ``root`` (a package of a
    monorepo is in one; without git, ``root``). The branches are staging -> main."""
    top = _git_answer(root, "rev-parse", "--show-toplevel")
    top = Path(os.path.relpath(top, root.resolve())).as_posix() if top else "."
    url = _git_answer(root, "config", "--get", "remote.origin.url")
    if not url:
        report.append("git: no origin remote (git.remote: origin is written; add it)")
        notes.append("This folder has no `origin` remote yet: deploy fetches and pushes there.")
        return None, top
    for branch in ("staging", "main"):
        refs = (f"refs/remotes/origin/{branch}", branch)
        if not any(_git_answer(root, "rev-parse", "--verify", "--quiet", r) for r in refs):
            notes.append(f"Branch {branch} is not on origin yet: set git.source / git.target.")
    remote = parse_remote(url)
    if remote is None:
        report.append("git: origin is a local path")
    elif remote.repo is not None:
        report.append(f"git: origin is {remote.host}/{remote.repo}")
    return remote, top


def _via(
    repo: Slot | None,
    target: str,
    environ: Mapping[str, str],
    options: InitOptions,
    report: list[str],
) -> tuple[str, str]:
    """push, or github_pr when asked or when GitHub says the target is protected."""
    if options.via is not None:
        return options.via, f"--via {options.via}"
    if not isinstance(repo, Sourced):
        return "push", ""
    token = environ.get("GITHUB_TOKEN", "")
    if not token:
        report.append("github: GITHUB_TOKEN is not set: branch protection not checked (push)")
        return "push", ""
    try:
        branch = _get(
            "GitHub API", options.github_api_url, token, f"/repos/{repo.value}/branches/{target}"
        )
    except ApiError as exc:
        report.append(f"github: {exc} (push)")
        return "push", ""
    if isinstance(branch, dict) and branch.get("protected") is True:
        report.append(f"github: {target} is protected: merges go through a pull request")
        return "github_pr", f"GitHub says {target} is protected"
    report.append(f"github: {target} is not protected (push)")
    return "push", ""


# ----------------------------------------------------------------------------- Vercel, name


def _vercel(root: Path, report: list[str]) -> VercelProject | Missing | None:
    path = root / ".vercel" / "project.json"
    if not path.is_file():
        report.append("vercel: no .vercel/project.json (no release gate written)")
        return None
    try:
        project = parse_vercel_project(path.read_text(encoding="utf-8"))
    except (ProjectFileUnreadable, UnicodeDecodeError) as exc:
        report.append(f"vercel: .vercel/project.json: {exc}")
        return Missing(f".vercel/project.json is unreadable ({exc}): run `vercel link`")
    report.append(f"vercel: project {project.project_id} (.vercel/project.json)")
    return project


_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def _name(root: Path) -> str:
    """The release label: package.json's name (without its @scope/), else the folder's."""
    name = ""
    package = root / "package.json"
    if package.is_file():
        try:
            data = json.loads(package.read_text(encoding="utf-8"))
            name = str(data.get("name") or "") if isinstance(data, dict) else ""
        except (ValueError, UnicodeDecodeError):
            name = ""
    name = _NAME_CHARS.sub("-", name.rsplit("/", 1)[-1]).strip("-.")
    return name or _NAME_CHARS.sub("-", root.resolve().name).strip("-.") or "release"
