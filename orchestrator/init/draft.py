"""The playbook ``orchestrator init`` writes, as plain data, and its YAML. Pure.

A :class:`Draft` holds every value init found, or a :class:`Missing` saying how to fill it;
:func:`questions` lists what a person at the terminal can answer; :func:`compose` renders
the YAML, each missing value as a commented line saying how to fill it. The YAML has the
shape of ``playbooks/strategy-a.yaml`` and loads with :func:`orchestrator.playbook.load_playbook`
once nothing required is missing.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from orchestrator.init.sources import VercelProject

DEFAULT_NEON_API_URL = "https://console.neon.tech/api/v2"
DEFAULT_GITHUB_API_URL = "https://api.github.com"
DEFAULT_VERCEL_API_URL = "https://api.vercel.com"


@dataclass(frozen=True)
class Missing:
    """A value init could not find; ``how`` says how to fill it in."""

    how: str


@dataclass(frozen=True)
class Sourced:
    """A value and where it came from (shown as the line's comment)."""

    value: str
    source: str = ""


Slot = Sourced | Missing


@dataclass(frozen=True)
class Draft:
    """Everything the written playbook says. ``None`` for a platform means the app does not
    use it (nothing is written); :class:`Missing` means it does but a value was not found."""

    name: str
    url_env: str
    migrations_dir: Slot  # relative to the app's folder
    migrations_schema: Slot
    migrations_table: Slot
    source: str = "staging"
    target: str = "main"
    via: Literal["push", "github_pr"] = "push"
    via_reason: str = ""
    github_repo: Slot | None = None
    github_api_url: str = DEFAULT_GITHUB_API_URL
    neon_endpoint: str | None = None  # the endpoint the database host names
    neon_project: Slot | None = None
    neon_branch: str = "main"
    neon_api_url: str = DEFAULT_NEON_API_URL
    vercel: VercelProject | Missing | None = None
    vercel_api_url: str = DEFAULT_VERCEL_API_URL
    health_url: str | None = None
    monitor_duration: str = "15m"
    monitor_interval: str = "30s"
    notes: tuple[str, ...] = field(default=())  # comments at the top: what init read, warnings
    repo: str = "."  # the app's folder, relative to the playbook's (paths resolve from there)
    git_top: str = "."  # the git work tree's top, relative to the app's folder

    @property
    def missing(self) -> list[str]:
        """The YAML keys still to fill, dotted (``migrations.dir``, ``neon.project_id``)."""
        slots = {
            "migrations.dir": self.migrations_dir,
            "migrations.schema": self.migrations_schema,
            "migrations.table": self.migrations_table,
            "neon.project_id": self.neon_project,
            "git.github.repo": self.github_repo if self.via == "github_pr" else None,
            "release.vercel.project_id": self.vercel,
        }
        return [key for key, slot in slots.items() if isinstance(slot, Missing)]


@dataclass(frozen=True)
class Question:
    """Something a person can answer: ``key`` (a :class:`Draft` field), the prompt, and the
    answer taken with ``--yes`` or an empty reply (``None``: leave it missing)."""

    key: str
    prompt: str
    default: str | None


def questions(draft: Draft) -> list[Question]:
    """What to ask at the terminal, in order: each missing value, then the choices."""
    asked: list[Question] = []
    for key, label in (
        ("migrations_dir", "Drizzle migrations folder (drizzle.config `out`)"),
        ("migrations_schema", "Schema of drizzle's tracking table (`migrations.schema`)"),
        ("migrations_table", "Name of drizzle's tracking table (`migrations.table`)"),
        ("neon_project", "Neon project id of production (Neon console > Settings)"),
    ):
        if isinstance(getattr(draft, key), Missing):
            asked.append(Question(key, label, None))
    if isinstance(draft.github_repo, Sourced):
        asked.append(
            Question(
                "via",
                f"Merge {draft.source} into {draft.target} through a GitHub pull request "
                "(push or github_pr)",
                draft.via,
            )
        )
    asked.append(Question("health_url", "Health check URL of production (empty: none)", None))
    return asked


def answer(draft: Draft, key: str, value: str) -> Draft:
    """``draft`` with the answer to question ``key``; an empty answer changes nothing."""
    value = value.strip()
    if not value:
        return draft
    if key == "via":
        if value not in ("push", "github_pr"):
            raise ValueError("answer push or github_pr")
        reason = "chosen at init" if value != draft.via else draft.via_reason
        return replace(draft, via=value, via_reason=reason)  # type: ignore[arg-type]
    if key == "health_url":
        if not re.match(r"https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return replace(draft, health_url=value)
    if key in ("migrations_dir", "migrations_schema", "migrations_table", "neon_project"):
        given: dict[str, Any] = {key: Sourced(value, "answered at init")}
        return replace(draft, **given)
    raise ValueError(f"no question {key!r}")


# ----------------------------------------------------------------------------- YAML

_PLAIN = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./@-]*")
# YAML 1.1 would read these as booleans or null
_YAML_WORDS = frozenset({"yes", "no", "on", "off", "true", "false", "null", "y", "n", "~"})


def _scalar(value: str) -> str:
    """A YAML scalar for ``value``: plain when unambiguous, else double-quoted (JSON)."""
    if (
        _PLAIN.fullmatch(value)
        and value.lower() not in _YAML_WORDS
        and not (re.fullmatch(r"[-+.\d_e:]+", value) and re.search(r"\d", value))
    ):
        return value
    return json.dumps(value)


def _line(indent: int, key: str, slot: Slot, *, placeholder: str) -> str:
    pad = "  " * indent
    if isinstance(slot, Missing):
        return f"{pad}# {key}: {placeholder}  # TODO: {slot.how}"
    comment = f"  # {slot.source}" if slot.source else ""
    return f"{pad}{key}: {_scalar(slot.value)}{comment}"


def compose(draft: Draft) -> str:
    """The playbook's YAML text."""
    lines = [
        "# Written by `orchestrator init`. Every key is explained in docs/playbook.md.",
        "# Rehearse before the first real deploy: orchestrator deploy --dry-run",
    ]
    lines += [f"# {note}" for note in draft.notes]
    if missing := draft.missing:
        lines.append(
            f"# Not found (the commented TODO lines say how to fill them): {', '.join(missing)}."
        )
    lines += [
        "",
        f"name: {_scalar(draft.name)}",
        "",
        "database:",
        f"  url_env: {draft.url_env}  # the variable holding production's URL (never the URL)",
        "",
        "migrations:",
        _line(1, "dir", _in_repo(draft, draft.migrations_dir), placeholder="drizzle"),
        _line(1, "schema", draft.migrations_schema, placeholder="drizzle"),
        _line(1, "table", draft.migrations_table, placeholder="__drizzle_migrations"),
        "",
    ]
    lines += [*_backup_and_neon(draft), *_git(draft), *_release(draft), *_monitor(draft)]
    return "\n".join(lines) + "\n"


def _in_repo(draft: Draft, slot: Slot) -> Slot:
    """A path of the app's folder as the playbook must write it (from its own folder)."""
    if isinstance(slot, Missing) or draft.repo == ".":
        return slot
    return Sourced(posixpath.normpath(posixpath.join(draft.repo, slot.value)), slot.source)


def _backup_and_neon(draft: Draft) -> list[str]:
    if draft.neon_project is None:
        return [
            "backup:",
            "  # records the server's time and WAL position: what a point-in-time restore",
            "  # needs. Other kinds: pg_dump (with path:), manual, neon_branch (needs neon:).",
            "  kind: restore_point",
            "",
        ]
    where = f"production's database is Neon endpoint {draft.neon_endpoint}"
    if isinstance(draft.neon_project, Missing):
        return [
            "backup:",
            f"  # {where}: once neon.project_id is filled in,",
            "  # use `kind: neon_branch` (a branch of production taken before migrating).",
            "  # Until then a person confirms a backup they took (or --backup-confirmed).",
            "  kind: manual",
            "",
            "# neon:",
            f"#   project_id: PROJECT_ID  # TODO: {draft.neon_project.how}",
            f"#   branch: {_scalar(draft.neon_branch)}",
            "",
        ]
    lines = [
        "backup:",
        f"  kind: neon_branch  # {where}",
        "",
        "neon:",
        _line(1, "project_id", draft.neon_project, placeholder=""),
        f"  branch: {_scalar(draft.neon_branch)}  # production's branch",
        "  api_key_env: NEON_API_KEY  # the variable holding the API key (never printed)",
    ]
    if draft.neon_api_url != DEFAULT_NEON_API_URL:
        lines.append(f"  api_url: {_scalar(draft.neon_api_url)}")
    return [*lines, ""]


def _git(draft: Draft) -> list[str]:
    lines = [
        "git:",
        _line(1, "repo", _in_repo(draft, Sourced(draft.git_top)), placeholder="."),
        "  remote: origin",
        f"  source: {_scalar(draft.source)}  # the branch being released",
        f"  target: {_scalar(draft.target)}  # production's branch",
    ]
    repo = draft.github_repo
    if draft.via == "github_pr" and repo is not None:  # a Missing repo stays a TODO line
        reason = f"  # {draft.via_reason}" if draft.via_reason else ""
        lines += [
            f"  via: github_pr{reason}",
            "  github:",
            _line(2, "repo", repo, placeholder="OWNER/NAME"),
            "    token_env: GITHUB_TOKEN  # the variable holding the token (never printed)",
        ]
        if draft.github_api_url != DEFAULT_GITHUB_API_URL:
            lines.append(f"    api_url: {_scalar(draft.github_api_url)}")
    else:
        lines.append("  via: push")
        if isinstance(repo, Sourced):
            lines += [
                f"  # To merge through a pull request (a protected {draft.target}):",
                "  # via: github_pr",
                f"  # github: {{repo: {repo.value}, token_env: GITHUB_TOKEN}}",
            ]
    return [*lines, ""]


def _release(draft: Draft) -> list[str]:
    if draft.vercel is None:
        return [
            "# The release gate: wait until the merged commit is live before the monitor.",
            "# release: {url: https://YOUR-APP/api/version}  # a URL whose body names the commit",
            "",
        ]
    if isinstance(draft.vercel, Missing):
        return [f"# release: {{vercel: {{project_id: prj_...}}}}  # TODO: {draft.vercel.how}", ""]
    vercel = [f"project_id: {_scalar(draft.vercel.project_id)}"]
    if draft.vercel.team_id is not None:
        vercel.append(f"team_id: {_scalar(draft.vercel.team_id)}")
    vercel.append("token_env: VERCEL_TOKEN")
    if draft.vercel_api_url != DEFAULT_VERCEL_API_URL:
        vercel.append(f"api_url: {_scalar(draft.vercel_api_url)}")
    return [
        "# The release gate: wait until Vercel's production serves a deployment of the merged",
        "# commit (from .vercel/project.json; the token in $VERCEL_TOKEN).",
        "release:",
        f"  vercel: {{{', '.join(vercel)}}}",
        "",
    ]


def _monitor(draft: Draft) -> list[str]:
    lines = [
        "monitor:",
        f"  duration: {_scalar(draft.monitor_duration)}  # how long to watch after the release",
        f"  interval: {_scalar(draft.monitor_interval)}  # time between two rounds of checks",
    ]
    if draft.health_url:
        lines.append(f"  http: [{{name: health, url: {json.dumps(draft.health_url)}}}]")
    else:
        # A window must check something (the monitor refuses an empty one): until the app's
        # health check is filled in, at least that production's database answers.
        lines += [
            "  # TODO: add production's health check, e.g.",
            "  # http: [{name: health, url: https://YOUR-APP/api/health}]",
            "  sql: [{name: database_answers, query: SELECT 1, min: 1}]",
        ]
    return lines
