"""The pydantic models of the playbook's YAML: one spec per section, and the whole.

Unknown keys are errors and values are frozen after loading; relative paths are settled
against the playbook file's folder during validation.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from orchestrator.db.backoff import (
    DEFAULT_ATTEMPTS,
    DEFAULT_INITIAL_S,
    DEFAULT_LOCK_RETRIES,
    DEFAULT_LOCK_TIMEOUT_S,
    DEFAULT_MAX_WAIT_S,
)
from orchestrator.playbook.durations import Duration, PositiveDuration, ServerTimeout
from orchestrator.redaction import redact

# Integers must be written as integers: pydantic's lax mode would accept `yes` (True) or "5".
StrictCount = Annotated[int, Field(strict=True)]
NonEmptyStr = Annotated[str, Field(min_length=1)]


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # A query is masked as if written with http://; userinfo after a mangled scheme
        # (http//user:pw@host) is not found by redact(): a value with an @ is not shown.
        shown = redact(f"http://{value}").removeprefix("http://")
        got = " (not shown: it holds an @)" if "@" in value else f", got {shown!r}"
        raise ValueError(f"must be an http:// or https:// URL with a host{got}")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
# An API's base URL, without a trailing / (the paths joined to it start with one).
ApiUrl = Annotated[HttpUrl, AfterValidator(lambda url: url.rstrip("/"))]

_ENV_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A pasted token can pass for a name: GitHub's and Neon's by their prefix and length, others
# (Vercel's) as 20 letters and digits or more, no underscore, mixing lower and upper case and
# digits (a variable's name has an underscore, or is not mixed case).
_TOKEN = re.compile(
    r"gh[opsur]_[A-Za-z0-9]{30,}|github_pat_\w{30,}|napi_\w{30,}"
    r"|(?=.*[a-z])(?=.*[A-Z])(?=.*[0-9])[A-Za-z0-9]{20,}"
)
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+")


class _Spec(BaseModel):
    """Every playbook section: unknown keys are errors, values are immutable after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyProblem(ValueError):
    """A problem a model-level check finds with one key of its mapping (``key``, the path
    from the mapping): the loader reports it at that key's line, not at the mapping's."""

    def __init__(self, key: tuple[str, ...], problem: str) -> None:
        super().__init__(problem)
        self.key = key


# --------------------------------------------------------------------------- sections


def _env_var_name(holds: str) -> Callable[[str], str]:
    """A validator of the NAME of a variable holding ``holds``. A value it refuses is not
    echoed back: it may be the pasted secret itself (a URL with a password, a token)."""

    def check(value: str) -> str:
        if not _ENV_VAR.fullmatch(value):
            raise ValueError(
                f"must be the NAME of an environment variable (letters, digits, _), not {holds}"
            )
        if _TOKEN.fullmatch(value):
            raise ValueError(f"is not a variable name (did you paste {holds}?)")
        return value

    return check


class DatabaseSpec(_Spec):
    """Where the connection string comes from. Never the URL itself: it may hold a password."""

    url_env: str = "DATABASE_URL"
    # A remote host without sslmode=require (or stronger) is refused rather than warned about.
    require_ssl: Annotated[bool, Field(strict=True)] = False

    _url_env = field_validator("url_env")(_env_var_name("the connection string itself"))


class MigrationsSpec(_Spec):
    """The Drizzle migrations folder and where drizzle tracks applied migrations."""

    # Dumps use the YAML key too, so a dumped playbook validates again.
    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)

    dir: Path
    # `schema` would shadow BaseModel.schema(); the YAML key is still "schema".
    schema_: NonEmptyStr = Field(alias="schema")
    table: NonEmptyStr = "__drizzle_migrations"
    # Short, retried with backoff within about a minute: see docs/live-traffic.md.
    # Units must be written: PostgreSQL reads a bare timeout as milliseconds.
    lock_timeout: ServerTimeout = DEFAULT_LOCK_TIMEOUT_S
    statement_timeout: ServerTimeout = 300.0
    # After a lock timeout, re-run the migration transaction this many times (0: give up).
    lock_retries: StrictCount = Field(default=DEFAULT_LOCK_RETRIES, ge=0)
    # Run migrations with CONCURRENTLY (or ADD VALUE used later) outside a transaction.
    concurrent: Annotated[bool, Field(strict=True)] = False


class BackupSpec(_Spec):
    """How the pre-migration backup is taken (or confirmed, for ``manual``)."""

    kind: Literal["restore_point", "pg_dump", "manual", "neon_branch"]
    # validate_default so the rule below also runs when `path` is absent.
    path: Path | None = Field(default=None, validate_default=True)

    @field_validator("path")
    @classmethod
    def _path_only_for_pg_dump(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        kind = info.data.get("kind")
        if kind == "pg_dump" and value is None:
            raise ValueError("required when kind is pg_dump (the dump file to write)")
        if kind in ("restore_point", "manual", "neon_branch") and value is not None:
            raise ValueError(f"only allowed when kind is pg_dump (kind is {kind})")
        return value


class NeonSpec(_Spec):
    """The Neon project whose branch is production (for ``backup.kind: neon_branch``, and
    ``--rehearse-on neon-branch``)."""

    project_id: NonEmptyStr
    branch: NonEmptyStr = "main"  # production's branch, by name or id (br-...)
    api_key_env: NonEmptyStr = "NEON_API_KEY"  # the variable holding the key; never printed
    api_url: ApiUrl = "https://console.neon.tech/api/v2"

    _api_key_env = field_validator("api_key_env")(_env_var_name("the API key itself"))


class GitHubSpec(_Spec):
    """The GitHub repository a release merges through (for ``git.via: github_pr``)."""

    repo: NonEmptyStr  # owner/name
    token_env: NonEmptyStr = "GITHUB_TOKEN"  # the variable holding the token; never printed
    api_url: ApiUrl = "https://api.github.com"
    checks_timeout: PositiveDuration = 600.0  # how long the merge waits for running checks
    checks_interval: PositiveDuration = 10.0  # how often it asks meanwhile
    # How GitHub merges the pull request; None: the first the repository allows of merge,
    # squash, rebase. Pre-flight refuses one the repository does not allow.
    merge_method: Literal["merge", "squash", "rebase"] | None = None

    @field_validator("repo")
    @classmethod
    def _owner_slash_name(cls, value: str) -> str:
        if not _REPO.fullmatch(value):
            raise ValueError(f"must be owner/name, got {value!r}")
        return value

    _token_env = field_validator("token_env")(_env_var_name("the token itself"))


class GitSpec(_Spec):
    """The repository and the branches a release goes between, and how it gets there."""

    repo: Path = Path(".")
    remote: NonEmptyStr = "origin"
    source: NonEmptyStr = "staging"
    target: NonEmptyStr = "main"
    via: Literal["push", "github_pr"] = "push"
    github: GitHubSpec | None = None

    @field_validator("target")
    @classmethod
    def _differs_from_source(cls, value: str, info: ValidationInfo) -> str:
        if value == info.data.get("source"):
            raise ValueError(f"must differ from git.source (both are {value!r})")
        return value

    @model_validator(mode="after")
    def _github_for_pull_requests(self) -> GitSpec:
        if self.via == "github_pr" and self.github is None:
            raise KeyProblem(("via",), "github_pr needs the github: block (repo: owner/name, ...)")
        return self


class VercelSpec(_Spec):
    """The Vercel project whose production deployments the release gate watches."""

    project_id: NonEmptyStr
    team_id: NonEmptyStr | None = None
    token_env: NonEmptyStr = "VERCEL_TOKEN"  # the variable holding the token; never printed
    api_url: ApiUrl = "https://api.vercel.com"

    _token_env = field_validator("token_env")(_env_var_name("the token itself"))


class ReleaseSpec(_Spec):
    """The release gate: wait, between merge and monitor, until the pushed commit is live.

    Exactly one of ``url`` (an endpoint whose body names the live commit) and ``vercel``.
    """

    timeout: PositiveDuration = 900.0
    interval: PositiveDuration = 10.0
    url: HttpUrl | None = None
    vercel: VercelSpec | None = None

    @field_validator("interval")
    @classmethod
    def _fits_in_timeout(cls, value: float, info: ValidationInfo) -> float:
        timeout = info.data.get("timeout")
        if timeout is not None and value > timeout:
            raise ValueError(f"must not exceed release.timeout ({value:g}s > {timeout:g}s)")
        return value

    @model_validator(mode="after")
    def _one_way_to_look(self) -> ReleaseSpec:
        if (self.url is None) == (self.vercel is None):
            raise ValueError("needs exactly one of url and vercel")
        return self


class HttpCheck(_Spec):
    """One HTTP probe of the monitor window: healthy when the status is as expected."""

    url: HttpUrl
    expect_status: StrictCount = Field(default=200, ge=100, le=599)
    timeout: PositiveDuration = 5.0
    name: NonEmptyStr | None = None

    @property
    def label(self) -> str:
        """What to call this check in logs and reports: its name, else its URL with the
        userinfo and query values masked (a check URL often carries its credential)."""
        return self.name or redact(self.url)


class SqlCheck(_Spec):
    """One SQL probe: a query returning a single number that must stay within bounds."""

    name: NonEmptyStr
    query: NonEmptyStr
    max: float | None = None
    min: float | None = None

    @model_validator(mode="after")
    def _has_a_bound(self) -> SqlCheck:
        if self.max is None and self.min is None:
            raise ValueError("needs a bound: set max, min or both")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is greater than max ({self.max:g})")
        return self


class MonitorSpec(_Spec):
    """The post-deploy watch: every ``interval`` for ``duration``, run every check."""

    duration: PositiveDuration
    interval: PositiveDuration
    failures_allowed: StrictCount = Field(default=0, ge=0)
    http: list[HttpCheck] = Field(default_factory=list)
    sql: list[SqlCheck] = Field(default_factory=list)

    @model_validator(mode="after")
    def _checks_something(self) -> MonitorSpec:
        # Refused here, before anything changes: the monitor only runs once the push is done.
        if not self.http and not self.sql:
            raise ValueError(
                "needs a check (http or sql): a window that checks nothing proves nothing"
            )
        return self

    @field_validator("interval")
    @classmethod
    def _fits_in_duration(cls, value: float, info: ValidationInfo) -> float:
        duration = info.data.get("duration")
        if duration is not None and value > duration:
            raise ValueError(f"must not exceed monitor.duration ({value:g}s > {duration:g}s)")
        return value

    @field_validator("sql")
    @classmethod
    def _unique_sql_names(cls, checks: list[SqlCheck]) -> list[SqlCheck]:
        seen: set[str] = set()
        for check in checks:
            if check.name in seen:
                raise ValueError(f"two checks are named {check.name!r}")
            seen.add(check.name)
        return checks


class ShadowSpec(_Spec):
    """Where the migrations are replayed to judge production: a server that is not
    production (each replay creates and drops a database of its own there). Without this
    section, a throwaway local cluster started from the PostgreSQL server binaries."""

    url_env: str

    _url_env = field_validator("url_env")(_env_var_name("the connection string itself"))


class RetrySpec(_Spec):
    """Backoff for transient database errors: ``attempts`` tries, exponential waits."""

    attempts: StrictCount = Field(default=DEFAULT_ATTEMPTS, ge=1)
    initial: Duration = DEFAULT_INITIAL_S
    max: Duration = DEFAULT_MAX_WAIT_S

    @field_validator("max")
    @classmethod
    def _not_below_initial(cls, value: float, info: ValidationInfo) -> float:
        initial = info.data.get("initial")
        if initial is not None and value < initial:
            raise ValueError(f"must be >= retry.initial ({value:g}s < {initial:g}s)")
        return value


class Playbook(_Spec):
    """A whole deploy playbook. ``path`` is the file it came from (set by the loader).

    After validation every relative path (``migrations.dir``, ``backup.path``, ``git.repo``)
    is absolute, resolved against the playbook file's folder.
    """

    name: NonEmptyStr
    database: DatabaseSpec
    migrations: MigrationsSpec
    backup: BackupSpec
    git: GitSpec
    monitor: MonitorSpec
    retry: RetrySpec = RetrySpec()
    shadow: ShadowSpec | None = None
    neon: NeonSpec | None = None
    release: ReleaseSpec | None = None  # the release gate; without it the gate passes at once
    path: Path  # the playbook file; the loader sets it, the YAML may not

    @model_validator(mode="after")
    def _resolve_paths(self) -> Playbook:
        # The models are frozen; this is the one place values are settled, during validation.
        path = self.path.resolve()
        object.__setattr__(self, "path", path)
        for section, key in (("migrations", "dir"), ("git", "repo"), ("backup", "path")):
            spec = getattr(self, section)
            if getattr(spec, key) is not None:  # backup.path is optional
                settled = spec.model_copy(update={key: _under(path.parent, getattr(spec, key))})
                object.__setattr__(self, section, settled)
        if self.backup.kind == "neon_branch" and self.neon is None:
            raise KeyProblem(
                ("backup", "kind"), "neon_branch needs the neon: block (project_id, ...)"
            )
        return self


def _under(base: Path, path: Path) -> Path:
    """``path`` made absolute against ``base`` (``~`` expanded, ``..`` and symlinks resolved)."""
    path = path.expanduser()
    return path if path.is_absolute() else (base / path).resolve()
