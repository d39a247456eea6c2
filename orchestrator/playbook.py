"""The deploy playbook: pydantic models of its YAML, duration parsing, and a precise loader.

A playbook says which database to migrate, where the Drizzle migrations live, how to back up,
which branches to merge and how to watch production afterwards. :func:`load_playbook` turns a
YAML file into a :class:`Playbook` or raises one :class:`~orchestrator.errors.UsageError` line
of the form ``<file>:<line>: <dotted.key>: <problem>``, so a typo is found without reading a
traceback. Relative paths in the file are resolved against the playbook's own folder.
"""

from __future__ import annotations

import difflib
import math
import re
import types
import typing
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from orchestrator.db.backoff import DEFAULT_ATTEMPTS, DEFAULT_INITIAL_S, DEFAULT_MAX_WAIT_S
from orchestrator.db.connect import redact
from orchestrator.errors import UsageError

# --------------------------------------------------------------------------- durations

DURATION_HINT = "use e.g. 500ms, 30s, 5min, 1h"

# Unit spellings and their length in seconds. The regex tries the longest spellings first, so
# "min" wins over "m" and "ms" over "m".
_UNITS: dict[str, float] = {
    "ms": 0.001,
    "msec": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hrs": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
}
_UNIT_ALTERNATION = "|".join(sorted(map(re.escape, _UNITS), key=len, reverse=True))
_COMPONENT = re.compile(rf"\s*(\d+(?:\.\d+)?|\.\d+)\s*({_UNIT_ALTERNATION})(?![a-z])", re.I)
_BARE_NUMBER = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*")


def parse_duration(value: str | int | float) -> float:
    """Seconds in a duration: ``500ms``, ``5s``, ``5sec``, ``15m``, ``5min``, ``1h``, ``1h30m``.

    A bare number (YAML int/float, or a string like ``"30"``) means seconds. Components of a
    compound duration must go from larger to smaller units (``1h30m``, not ``30m1h``). Negative,
    infinite or unparseable values raise :class:`ValueError` with a one-line explanation.
    """
    # bool is an int subclass; YAML turns `yes`/`on` into True, which is never a duration.
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r} ({DURATION_HINT})")
    if isinstance(value, int | float):
        if math.isnan(value) or math.isinf(value) or value < 0:
            raise ValueError(f"invalid duration {value!r} (must be a finite number, not negative)")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"invalid duration of type {type(value).__name__} ({DURATION_HINT})")
    if value.strip().startswith("-"):
        raise ValueError(f"invalid duration {value!r} (must not be negative)")
    bare = _BARE_NUMBER.fullmatch(value)
    if bare:
        return float(bare.group(1))
    return _parse_compound(value)


def _parse_compound(text: str) -> float:
    """Sum of the ``<number><unit>`` components of ``text``, each unit smaller than the last."""
    total = 0.0
    position = 0
    last_unit = math.inf
    while position < len(text):
        if not text[position:].strip():
            break
        match = _COMPONENT.match(text, position)
        if not match:
            raise ValueError(f"invalid duration {text!r} ({DURATION_HINT})")
        unit = _UNITS[match.group(2).lower()]
        if unit >= last_unit:
            raise ValueError(f"invalid duration {text!r} (put larger units first, e.g. 1h30m)")
        last_unit = unit
        total += float(match.group(1)) * unit
        position = match.end()
    if math.isinf(last_unit):  # nothing matched: empty or blank string
        raise ValueError(f"invalid duration {text!r} ({DURATION_HINT})")
    return total


def _duration(value: object) -> object:
    """Pydantic pre-validator: durations arrive as YAML strings, ints or floats."""
    if isinstance(value, str | int | float):
        return parse_duration(value)
    return value  # let pydantic report the wrong type


def _positive_duration(value: object) -> object:
    seconds = _duration(value)
    if isinstance(seconds, float) and seconds <= 0:
        raise ValueError(f"duration must be greater than zero (got {value!r})")
    return seconds


# Seconds, written in the YAML as a duration; zero is allowed (e.g. no initial backoff).
Duration = Annotated[float, BeforeValidator(_duration)]
# Seconds, strictly positive: timeouts, windows and intervals.
PositiveDuration = Annotated[float, BeforeValidator(_positive_duration)]

# Integers must be written as integers: pydantic's lax mode would accept `yes` (True) or "5".
StrictCount = Annotated[int, Field(strict=True)]
NonEmptyStr = Annotated[str, Field(min_length=1)]

_ENV_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Spec(BaseModel):
    """Every playbook section: unknown keys are errors, values are immutable after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- sections


class DatabaseSpec(_Spec):
    """Where the connection string comes from. Never the URL itself: it may hold a password."""

    url_env: str = "DATABASE_URL"
    # A remote host without sslmode=require (or stronger) is refused rather than warned about.
    require_ssl: Annotated[bool, Field(strict=True)] = False

    @field_validator("url_env")
    @classmethod
    def _is_env_var_name(cls, value: str) -> str:
        if not _ENV_VAR.fullmatch(value):
            # The value may be a pasted URL with a password: don't echo it back.
            raise ValueError(
                "must be the NAME of an environment variable (letters, digits, _), "
                "not the connection string itself"
            )
        return value


class MigrationsSpec(_Spec):
    """The Drizzle migrations folder and where drizzle tracks applied migrations."""

    # Dumps use the YAML key too, so a dumped playbook validates again.
    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)

    dir: Path
    # `schema` would shadow BaseModel.schema(); the YAML key is still "schema".
    schema_: NonEmptyStr = Field(alias="schema")
    table: NonEmptyStr = "__drizzle_migrations"
    lock_timeout: PositiveDuration = 5.0
    statement_timeout: PositiveDuration = 300.0


class BackupSpec(_Spec):
    """How the pre-migration backup is taken (or confirmed, for ``manual``)."""

    kind: Literal["restore_point", "pg_dump", "manual"]
    # validate_default so the rule below also runs when `path` is absent.
    path: Path | None = Field(default=None, validate_default=True)

    @field_validator("path")
    @classmethod
    def _path_only_for_pg_dump(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        kind = info.data.get("kind")
        if kind == "pg_dump" and value is None:
            raise ValueError("required when kind is pg_dump (the dump file to write)")
        if kind in ("restore_point", "manual") and value is not None:
            raise ValueError(f"only allowed when kind is pg_dump (kind is {kind})")
        return value


class GitSpec(_Spec):
    """The repository and the branches a release goes between."""

    repo: Path = Path(".")
    remote: NonEmptyStr = "origin"
    source: NonEmptyStr = "staging"
    target: NonEmptyStr = "main"

    @field_validator("target")
    @classmethod
    def _differs_from_source(cls, value: str, info: ValidationInfo) -> str:
        if value == info.data.get("source"):
            raise ValueError(f"must differ from git.source (both are {value!r})")
        return value


class HttpCheck(_Spec):
    """One HTTP probe of the monitor window: healthy when the status is as expected."""

    url: str
    expect_status: StrictCount = Field(default=200, ge=100, le=599)
    timeout: PositiveDuration = 5.0
    name: NonEmptyStr | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL with a host, got {value!r}")
        return value

    @property
    def label(self) -> str:
        """What to call this check in logs and reports."""
        return self.name or self.url


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
    path: Path  # the playbook file; the loader sets it, the YAML may not

    @model_validator(mode="after")
    def _resolve_paths(self) -> Playbook:
        # The models are frozen; this is the one place values are settled, during validation.
        path = self.path.resolve()
        base = path.parent
        object.__setattr__(self, "path", path)
        object.__setattr__(
            self,
            "migrations",
            self.migrations.model_copy(update={"dir": _under(base, self.migrations.dir)}),
        )
        object.__setattr__(
            self, "git", self.git.model_copy(update={"repo": _under(base, self.git.repo)})
        )
        if self.backup.path is not None:
            object.__setattr__(
                self,
                "backup",
                self.backup.model_copy(update={"path": _under(base, self.backup.path)}),
            )
        return self


def _under(base: Path, path: Path) -> Path:
    """``path`` made absolute against ``base`` (``~`` expanded, ``..`` and symlinks resolved)."""
    path = path.expanduser()
    return path if path.is_absolute() else (base / path).resolve()


# --------------------------------------------------------------------------- loading

Location = tuple[str | int, ...]


def load_playbook(path: Path) -> Playbook:
    """Read, parse and validate the playbook at ``path``.

    Every problem becomes a single-line :class:`UsageError`:
    ``<file>:<line>: <dotted.key>: <problem>``.
    """
    shown = str(path)
    text = _read_text(path, shown)
    lines = _compose(text, shown)
    data = _construct(text, shown)
    if not isinstance(data, dict):  # _compose already checked; this is for the type checker
        raise UsageError(f"{shown}:1: top level must be a mapping of keys")
    if "path" in data:
        # `path` is where the playbook was read from; the file cannot claim another.
        raise UsageError(f"{shown}:{lines[('path',)]}: path: unknown key (set by the loader)")
    try:
        return Playbook.model_validate({**data, "path": path})
    except ValidationError as exc:
        raise UsageError(_describe_validation(exc, shown, lines)) from None


def _read_text(path: Path, shown: str) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{shown}: no such playbook file") from None
    except IsADirectoryError:
        raise UsageError(f"{shown}: is a directory, not a playbook file") from None
    except OSError as exc:
        raise UsageError(f"{shown}: cannot read the playbook: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UsageError(f"{shown}:{line}: not UTF-8 text (byte {exc.start})") from None


def _compose(text: str, shown: str) -> dict[Location, int]:
    """The 1-based line of every key and list item of the document (``()``: the top level)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise UsageError(_yaml_error(exc, shown)) from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{shown}: invalid YAML: {_one_line(str(exc))}") from None
    if root is None:
        raise UsageError(f"{shown}:1: empty playbook; expected a mapping of keys")
    if not isinstance(root, yaml.MappingNode):
        raise UsageError(
            f"{shown}:{root.start_mark.line + 1}: top level must be a mapping of keys, "
            f"got {_node_kind(root)}"
        )
    lines: dict[Location, int] = {(): root.start_mark.line + 1}
    _index_lines(root, (), lines, shown)
    return lines


def _index_lines(node: yaml.Node, here: Location, lines: dict[Location, int], shown: str) -> None:
    """Record each key's line under its dotted location; refuse duplicated keys."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                line = key_node.start_mark.line + 1
                raise UsageError(
                    f"{shown}:{line}: {_dotted(here) or '(top level)'}: keys must be plain names"
                )
            location = (*here, str(key_node.value))
            if location in lines:
                raise UsageError(
                    f"{shown}:{key_node.start_mark.line + 1}: {_dotted(location)}: "
                    f"duplicate key (first set on line {lines[location]})"
                )
            lines[location] = key_node.start_mark.line + 1
            _index_lines(value_node, location, lines, shown)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            location = (*here, index)
            lines[location] = item.start_mark.line + 1
            _index_lines(item, location, lines, shown)


def _construct(text: str, shown: str) -> Any:
    """The Python value of the document (tags such as ``!!timestamp`` resolved)."""
    try:
        return yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise UsageError(_yaml_error(exc, shown)) from None


def _yaml_error(exc: yaml.MarkedYAMLError, shown: str) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"{shown}:{mark.line + 1}" if mark is not None else shown
    problem = exc.problem or exc.context or "unparseable"
    if "'\\t'" in problem:  # PyYAML spells a tab as '\t': say what to do about it
        problem = problem.replace("character '\\t'", "a tab") + "; indent with spaces"
    context = f" ({_one_line(exc.context)})" if exc.context and exc.problem else ""
    return f"{where}: invalid YAML: {_one_line(problem)}{context}"


def _node_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.ScalarNode):
        return "a single value"
    return "something else"


def _describe_validation(exc: ValidationError, shown: str, lines: dict[Location, int]) -> str:
    """One line for the first problem in file order, with a count of the others."""
    problems = []
    for order, error in enumerate(exc.errors()):
        loc: Location = tuple(error["loc"])
        # A missing key isn't in the file: point at the mapping that should hold it.
        missing = error["type"] == "missing"
        line = _line_of(loc[:-1] if missing else loc, lines)
        # Report what is written before what is absent: a misspelt key shows up as both an
        # unknown key and a missing one, and the unknown key is the one to fix.
        text = f"{shown}:{line}: {_dotted(loc)}: {_problem(error)}"
        problems.append((missing, line, order, text))
    problems.sort()
    message = problems[0][3]
    if len(problems) > 1:
        others = len(problems) - 1
        message += f" (and {others} more problem{'s' if others > 1 else ''})"
    return redact(message)


def _line_of(loc: Location, lines: dict[Location, int]) -> int:
    """The line of ``loc``, or of its nearest ancestor that is written in the file."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def _dotted(loc: Location) -> str:
    return ".".join(str(part) for part in loc)


def _problem(error: ErrorDetails) -> str:
    """The human half of a pydantic error, phrased for someone editing YAML."""
    kind = error["type"]
    loc: Location = tuple(error["loc"])
    value = error.get("input")
    if kind == "missing":
        return f"missing required key '{loc[-1]}'"
    if kind == "extra_forbidden":
        return f"unknown key{_suggest(loc)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of keys, got {_yaml_type(value)}"
    if kind == "list_type":
        return f"expected a list, got {_yaml_type(value)}"
    if kind == "string_type":
        # YAML reads 2025-10-21 as a date and 1.10 as a number; quoting keeps the text.
        hint = " (quote it)" if isinstance(value, int | float | date) else ""
        return f"expected a string, got {_described(value)}{hint}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {_described(value)}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, got {_described(value)}"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"must be one of {expected}, got {_short(value)}"
    if kind == "value_error":
        return error["msg"].removeprefix("Value error, ")
    return f"{error['msg'][:1].lower()}{error['msg'][1:]} (got {_short(value)})"


def _suggest(loc: Location) -> str:
    """`` (did you mean 'x'?)`` or `` (allowed: a, b)`` for an unknown key at ``loc``."""
    allowed = _allowed_keys(loc[:-1])
    if not allowed:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (allowed: {', '.join(allowed)})"


def _allowed_keys(loc: Location) -> list[str]:
    """The YAML keys the model at ``loc`` accepts, found by walking the model annotations."""
    current: object = Playbook
    for part in loc:
        if isinstance(part, int):
            continue  # list index: the item type was taken when the list field was entered
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = next((f for n, f in current.model_fields.items() if (f.alias or n) == part), None)
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        keys = [f.alias or n for n, f in current.model_fields.items()]
        return [k for k in keys if not (current is Playbook and k == "path")]
    return []


def _model_in(annotation: object) -> object:
    """The model class inside ``list[M]``, ``M | None`` or ``M``."""
    origin = typing.get_origin(annotation)
    if origin in (list, Union, types.UnionType):
        for arg in typing.get_args(annotation):
            inner = _model_in(arg)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return annotation


def _yaml_type(value: object) -> str:
    names = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        date: "a date",
        datetime: "a timestamp",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), f"a {type(value).__name__}")


def _described(value: object) -> str:
    """``a string '5 apples'``; containers by kind only."""
    if isinstance(value, dict | list) or value is None:
        return _yaml_type(value)
    return f"{_yaml_type(value)} {_short(value)}"


def _short(value: object) -> str:
    text = value.isoformat() if isinstance(value, date) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _one_line(text: str) -> str:
    return " ".join(text.split())
