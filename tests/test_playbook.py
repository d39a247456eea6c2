"""The playbook loader, its error messages, durations, and the shipped example release."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from orchestrator.cli import run
from orchestrator.errors import ExitCode, UsageError
from orchestrator.playbook import (
    HttpCheck,
    Playbook,
    RetrySpec,
    load_playbook,
    parse_duration,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
STRATEGY_A = REPO_ROOT / "playbooks" / "strategy-a.yaml"
EXAMPLES = REPO_ROOT / "playbooks" / "examples"
EXAMPLE_MIGRATIONS = EXAMPLES / "migrations"
BREAKPOINT = "--> statement-breakpoint"

# A valid playbook in block style; every bad input below is an edit of it.
VALID = """\
name: release-2025-10-21
database:
  url_env: PROD_DATABASE_URL
migrations:
  dir: ../app/drizzle
  schema: drizzle
  lock_timeout: 2s
  statement_timeout: 5min
backup:
  kind: restore_point
git:
  repo: ../app
  source: staging
  target: main
monitor:
  duration: 15m
  interval: 30s
  failures_allowed: 1
  http:
    - url: https://app.example.com/api/health
      timeout: 500ms
    - url: http://127.0.0.1:8080/ready
      name: ready
      expect_status: 204
  sql:
    - name: null_service_offerings
      query: SELECT count(*) FROM case_classification_results WHERE service_offering IS NULL
      max: 0
"""


def line_of(text: str, fragment: str) -> int:
    """1-based number of the one line of ``text`` containing ``fragment``."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if fragment in line]
    assert len(hits) == 1, f"{fragment!r} is on lines {hits}"
    return hits[0]


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str], Path]:
    """Write a playbook at tmp/deploy/playbook.yaml and return its path."""

    def _write(text: str) -> Path:
        path = tmp_path / "deploy" / "playbook.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return _write


def load_error(path: Path) -> str:
    with pytest.raises(UsageError) as caught:
        load_playbook(path)
    message = str(caught.value)
    assert "\n" not in message
    assert caught.value.exit_code == ExitCode.USAGE
    return message


# --------------------------------------------------------------------------- valid input


def test_valid_playbook_loads_with_absolute_paths_and_parsed_durations(
    write: Callable[[str], Path], tmp_path: Path
) -> None:
    path = write(VALID)
    playbook = load_playbook(path)

    assert playbook.path == path.resolve()
    assert playbook.migrations.dir == (tmp_path / "app" / "drizzle").resolve()
    assert playbook.git.repo == (tmp_path / "app").resolve()
    assert playbook.database.url_env == "PROD_DATABASE_URL"
    assert playbook.migrations.schema_ == "drizzle"
    assert playbook.migrations.table == "__drizzle_migrations"  # default
    assert playbook.migrations.lock_timeout == 2.0
    assert playbook.migrations.statement_timeout == 300.0
    assert playbook.backup.kind == "restore_point"
    assert playbook.backup.path is None
    assert playbook.git.remote == "origin"  # default
    assert (playbook.monitor.duration, playbook.monitor.interval) == (900.0, 30.0)
    assert playbook.monitor.failures_allowed == 1
    first, second = playbook.monitor.http
    assert (first.expect_status, first.timeout, first.label) == (
        200,
        0.5,
        "https://app.example.com/api/health",
    )
    assert (second.expect_status, second.timeout, second.label) == (204, 5.0, "ready")
    assert playbook.monitor.sql[0].max == 0.0
    assert playbook.monitor.sql[0].min is None
    assert playbook.retry == RetrySpec()  # omitted section -> defaults
    assert (playbook.retry.attempts, playbook.retry.initial, playbook.retry.max) == (5, 0.5, 20.0)


@pytest.mark.parametrize(
    "backup",
    [
        "kind: restore_point",
        "kind: pg_dump\n  path: backups/pre.dump",
        "kind: manual",
        "kind: neon_branch\nneon:\n  project_id: round-river-123456\n  branch: main",
    ],
)
def test_the_checklist_of_a_guided_deploy_names_every_kind_of_backup(
    write: Callable[[str], Path], backup: str
) -> None:
    from orchestrator.checklist import checklist

    playbook = load_playbook(write(VALID.replace("kind: restore_point", backup)))
    [line] = [line for line in checklist(playbook) if "Backup:" in line]
    assert len(line) > len("  [ ] Backup: ")


def test_pg_dump_path_resolves_against_the_playbook_folder_and_absolute_paths_stay(
    write: Callable[[str], Path], tmp_path: Path
) -> None:
    text = VALID.replace("kind: restore_point", "kind: pg_dump\n  path: dumps/pre.dump")
    text = text.replace("dir: ../app/drizzle", f"dir: {tmp_path / 'elsewhere'}")
    playbook = load_playbook(write(text))
    assert playbook.backup.path == (tmp_path / "deploy" / "dumps" / "pre.dump").resolve()
    assert playbook.migrations.dir == tmp_path / "elsewhere"


def test_durations_accept_yaml_numbers_as_seconds(write: Callable[[str], Path]) -> None:
    text = VALID.replace("duration: 15m", "duration: 60").replace("interval: 30s", "interval: 2.5")
    playbook = load_playbook(write(text))
    assert (playbook.monitor.duration, playbook.monitor.interval) == (60.0, 2.5)


def test_flow_style_playbook_from_the_brief_loads(write: Callable[[str], Path]) -> None:
    text = """\
name: release-2025-10-21
database: {url_env: DATABASE_URL}
migrations: {dir: migrations, schema: drizzle, table: __drizzle_migrations,
             lock_timeout: 5s, statement_timeout: 5min}
backup: {kind: restore_point}
git: {repo: ., remote: origin, source: staging, target: main}
monitor:
  duration: 15m
  interval: 30s
  failures_allowed: 0
  http: [{url: "https://app.example.com/api/health", expect_status: 200, timeout: 5s}]
  sql:  [{name: null_service_offerings, max: 0, query: "SELECT 1"}]
retry: {attempts: 3, initial: 0.5s, max: 20s}
"""
    path = write(text)
    playbook = load_playbook(path)
    assert playbook.git.repo == path.parent.resolve()
    assert playbook.migrations.dir == path.parent.resolve() / "migrations"
    assert playbook.retry.attempts == 3


def test_dump_round_trips_through_validation(write: Callable[[str], Path]) -> None:
    playbook = load_playbook(write(VALID))
    assert Playbook.model_validate(playbook.model_dump()) == playbook
    # A lock timeout is dumped with its unit: a bare number would be refused.
    assert playbook.model_dump()["migrations"]["lock_timeout"] == "2.0s"
    assert playbook.model_dump()["migrations"]["statement_timeout"] == "300.0s"


def test_neon_api_url_drops_a_trailing_slash_as_the_others(write: Callable[[str], Path]) -> None:
    neon = "neon:\n  project_id: round-river-123456\n  api_url: http://127.0.0.1:9/api/v2/\n"
    playbook = load_playbook(write(VALID + neon))
    assert playbook.neon is not None and playbook.neon.api_url == "http://127.0.0.1:9/api/v2"


def test_http_label_prefers_the_name() -> None:
    assert HttpCheck(url="http://h/x").label == "http://h/x"
    assert HttpCheck(url="http://h/x", name="x").label == "x"


@pytest.mark.parametrize("shipped", [STRATEGY_A, EXAMPLES / "release.yaml"], ids=lambda p: p.name)
def test_shipped_playbooks_load(shipped: Path) -> None:
    playbook = load_playbook(shipped)
    assert playbook.migrations.dir.is_absolute()
    assert playbook.monitor.sql[0].name == "null_service_offerings"


def test_example_release_points_at_the_example_migrations() -> None:
    playbook = load_playbook(EXAMPLES / "release.yaml")
    assert playbook.migrations.dir == EXAMPLE_MIGRATIONS.resolve()
    assert playbook.backup.kind == "restore_point"
    assert playbook.git.repo == EXAMPLES.resolve()
    assert playbook.monitor.http[0].url == "http://127.0.0.1:8080/api/health"


# --------------------------------------------------------------------------- bad input

# (id, edit of VALID, dotted key, fragment identifying the reported line, problem text)
BAD_EDITS: list[tuple[str, Callable[[str], str], str, str, str]] = [
    (
        "unknown top-level key",
        lambda t: t + "colour: red\n",
        "colour",
        "colour: red",
        "unknown key (allowed: name, database, migrations, backup, git, monitor, retry, shadow, "
        "neon, release)",
    ),
    (
        "unknown nested key",
        lambda t: t.replace("  schema: drizzle\n", "  schema: drizzle\n  colour: red\n"),
        "migrations.colour",
        "colour: red",
        "unknown key (allowed: dir, schema, table, lock_timeout, statement_timeout, "
        "lock_retries, concurrent)",
    ),
    (
        "misspelt key suggests the right one",
        lambda t: t.replace("interval: 30s", "intervall: 30s"),
        "monitor.intervall",
        "intervall: 30s",
        "unknown key (did you mean 'interval'?) (and 1 more problem)",
    ),
    (
        "unknown key inside a list item",
        lambda t: t.replace("      name: ready\n", "      name: ready\n      method: GET\n"),
        "monitor.http.1.method",
        "method: GET",
        "unknown key (allowed: url, expect_status, timeout, name)",
    ),
    (
        "wrong type: text for a count",
        lambda t: t.replace("failures_allowed: 1", "failures_allowed: lots"),
        "monitor.failures_allowed",
        "failures_allowed",
        "expected a whole number, got a string 'lots'",
    ),
    (
        "wrong type: boolean for a count",
        lambda t: t.replace("failures_allowed: 1", "failures_allowed: yes"),
        "monitor.failures_allowed",
        "failures_allowed",
        "expected a whole number, got a boolean True",
    ),
    (
        "wrong type: list for a section",
        lambda t: t.replace("database:\n  url_env: PROD_DATABASE_URL", "database: [PROD]"),
        "database",
        "database: [PROD]",
        "expected a mapping of keys, got a list",
    ),
    (
        "wrong type: YAML date for a name",
        lambda t: t.replace("name: release-2025-10-21", "name: 2025-10-21"),
        "name",
        "name: 2025-10-21",
        "expected a string, got a date 2025-10-21 (quote it)",
    ),
    (
        "missing top-level section",
        lambda t: t.replace("git:\n  repo: ../app\n  source: staging\n  target: main\n", ""),
        "git",
        "name: release",
        "missing required key 'git'",
    ),
    (
        "a monitor without a check",
        lambda t: t[: t.index("  http:\n")],
        "monitor",
        "monitor:",
        "needs a check (http or sql): a window that checks nothing proves nothing",
    ),
    (
        "missing nested field",
        lambda t: t.replace("  duration: 15m\n", ""),
        "monitor.duration",
        "monitor:",
        "missing required key 'duration'",
    ),
    (
        "bad duration",
        lambda t: t.replace("interval: 30s", "interval: 30 parsecs"),
        "monitor.interval",
        "interval:",
        "invalid duration '30 parsecs' (use e.g. 500ms, 30s, 5min, 1h)",
    ),
    (
        "bad duration in a list item",
        lambda t: t.replace("timeout: 500ms", "timeout: soon"),
        "monitor.http.0.timeout",
        "timeout: soon",
        "invalid duration 'soon' (use e.g. 500ms, 30s, 5min, 1h)",
    ),
    (
        "zero timeout",
        lambda t: t.replace("lock_timeout: 2s", "lock_timeout: 0s"),
        "migrations.lock_timeout",
        "lock_timeout",
        "duration must be greater than zero (got '0s')",
    ),
    (
        # PostgreSQL reads a bare lock_timeout as milliseconds; it used to be 500 s here.
        "lock timeout without a unit",
        lambda t: t.replace("lock_timeout: 2s", "lock_timeout: 500"),
        "migrations.lock_timeout",
        "lock_timeout",
        "500 needs a unit: 500ms (as PostgreSQL reads it) or 500s?",
    ),
    (
        "lock timeout as a bare fraction",
        lambda t: t.replace("lock_timeout: 2s", "lock_timeout: 0.5"),
        "migrations.lock_timeout",
        "lock_timeout",
        "0.5 needs a unit: 0.5ms (as PostgreSQL reads it) or 0.5s?",
    ),
    (
        "lock timeout as a quoted bare number",
        lambda t: t.replace("lock_timeout: 2s", 'lock_timeout: " 30 "'),
        "migrations.lock_timeout",
        "lock_timeout",
        "30 needs a unit: 30ms (as PostgreSQL reads it) or 30s?",
    ),
    (
        # The same for statement_timeout: 300000 was 83 hours here, 5 minutes in PostgreSQL.
        "statement timeout without a unit",
        lambda t: t.replace("statement_timeout: 5min", "statement_timeout: 300000"),
        "migrations.statement_timeout",
        "statement_timeout",
        "300000 needs a unit: 300000ms (as PostgreSQL reads it) or 300000s?",
    ),
    (
        "bare zero lock timeout",
        lambda t: t.replace("lock_timeout: 2s", "lock_timeout: 0"),
        "migrations.lock_timeout",
        "lock_timeout",
        "duration must be greater than zero (got 0)",
    ),
    (
        "neon api_url not a URL",
        lambda t: t + "neon:\n  project_id: round-river-123456\n  api_url: console.neon.tech\n",
        "neon.api_url",
        "api_url: console.neon.tech",
        "must be an http:// or https:// URL with a host, got 'console.neon.tech'",
    ),
    (
        "neon api_url without a host",
        lambda t: t + "neon:\n  project_id: round-river-123456\n  api_url: 'https:///api/v2'\n",
        "neon.api_url",
        "api_url:",
        "must be an http:// or https:// URL with a host, got 'https:///api/v2'",
    ),
    (
        # A check of the whole playbook: at the key that asks for the block, not line 1.
        "neon_branch backup without the neon block",
        lambda t: t.replace("kind: restore_point", "kind: neon_branch"),
        "backup.kind",
        "kind: neon_branch",
        "neon_branch needs the neon: block (project_id, ...)",
    ),
    (
        "github_pr without the github block",
        lambda t: t.replace("  target: main\n", "  target: main\n  via: github_pr\n"),
        "git.via",
        "via: github_pr",
        "github_pr needs the github: block (repo: owner/name, ...)",
    ),
    (
        "release with both ways to look",
        lambda t: t + "release:\n  url: https://app.example.com/v\n  vercel: {project_id: p}\n",
        "release",
        "release:",
        "needs exactly one of url and vercel",
    ),
    (
        "pg_dump without path",
        lambda t: t.replace("kind: restore_point", "kind: pg_dump"),
        "backup.path",
        "backup:",
        "required when kind is pg_dump (the dump file to write)",
    ),
    (
        "path with restore_point",
        lambda t: t.replace("kind: restore_point", "kind: restore_point\n  path: x.dump"),
        "backup.path",
        "path: x.dump",
        "only allowed when kind is pg_dump (kind is restore_point)",
    ),
    (
        "unknown backup kind",
        lambda t: t.replace("kind: restore_point", "kind: snapshot"),
        "backup.kind",
        "kind: snapshot",
        "must be one of 'restore_point', 'pg_dump', 'manual' or 'neon_branch', got 'snapshot'",
    ),
    (
        "bad URL scheme in http check",
        lambda t: t.replace("http://127.0.0.1:8080/ready", "ftp://127.0.0.1/ready"),
        "monitor.http.1.url",
        "ftp://",
        "must be an http:// or https:// URL with a host, got 'ftp://127.0.0.1/ready'",
    ),
    (
        "interval longer than duration",
        lambda t: t.replace("interval: 30s", "interval: 20min"),
        "monitor.interval",
        "interval:",
        "must not exceed monitor.duration (1200s > 900s)",
    ),
    (
        "sql check without bounds",
        lambda t: t.replace("      max: 0\n", ""),
        "monitor.sql.0",
        "- name: null_service_offerings",
        "needs a bound: set max, min or both",
    ),
    (
        "two sql checks of one name",
        lambda t: t + "    - name: null_service_offerings\n      query: SELECT 1\n      max: 0\n",
        "monitor.sql",
        "sql:",
        "two checks are named 'null_service_offerings'",
    ),
    (
        "retry max below initial",
        lambda t: t + "retry:\n  initial: 30s\n  max: 10s\n",
        "retry.max",
        "max: 10s",
        "must be >= retry.initial (10s < 30s)",
    ),
    (
        "retry attempts zero",
        lambda t: t + "retry:\n  attempts: 0\n",
        "retry.attempts",
        "attempts: 0",
        "input should be greater than or equal to 1 (got 0)",
    ),
    (
        "target equals source",
        lambda t: t.replace("target: main", "target: staging"),
        "git.target",
        "target: staging",
        "must differ from git.source (both are 'staging')",
    ),
    (
        "path may not be set in the file",
        lambda t: t + "path: /etc/passwd\n",
        "path",
        "path: /etc/passwd",
        "unknown key (set by the loader)",
    ),
    (
        "duration longer than any timer",
        lambda t: t.replace("duration: 15m", "duration: 99999999999999999999s"),
        "monitor.duration",
        "duration: 9",
        "invalid duration '99999999999999999999s' (0 to 24 days)",
    ),
    (
        "whole number of seconds longer than any timer",
        lambda t: t.replace("timeout: 500ms", f"timeout: {10**30}"),
        "monitor.http.0.timeout",
        "timeout: 1",
        f"invalid duration {10**30} (0 to 24 days)",
    ),
    (
        "duplicate top-level key",
        lambda t: t + "name: again\n",
        "name",
        "name: again",
        "duplicate key (first set on line 1)",
    ),
]


@pytest.mark.parametrize(
    ("edit", "key", "line_fragment", "problem"),
    [case[1:] for case in BAD_EDITS],
    ids=[case[0] for case in BAD_EDITS],
)
def test_bad_input_names_file_line_and_key(
    write: Callable[[str], Path],
    edit: Callable[[str], str],
    key: str,
    line_fragment: str,
    problem: str,
) -> None:
    text = edit(VALID)
    assert text != VALID
    path = write(text)
    line = line_of(text, line_fragment)
    assert load_error(path) == f"{path}:{line}: {key}: {problem}"


def test_duplicate_nested_key(write: Callable[[str], Path]) -> None:
    text = VALID.replace("  interval: 30s\n", "  interval: 30s\n  interval: 10s\n")
    path = write(text)
    first, second = line_of(text, "interval: 30s"), line_of(text, "interval: 10s")
    assert load_error(path) == (
        f"{path}:{second}: monitor.interval: duplicate key (first set on line {first})"
    )


def test_invalid_yaml_reports_the_line(write: Callable[[str], Path]) -> None:
    text = VALID.replace("  interval: 30s", "\tinterval: 30s")  # YAML forbids tab indents
    path = write(text)
    message = load_error(path)
    assert message.startswith(f"{path}:{line_of(text, 'interval')}: invalid YAML: ")
    assert "tab" in message


def test_unclosed_flow_sequence_is_invalid_yaml(write: Callable[[str], Path]) -> None:
    path = write("name: x\nmonitor: {http: [a, b}\n")
    assert load_error(path).startswith(f"{path}:2: invalid YAML: ")


def test_unsafe_tag_is_refused(write: Callable[[str], Path]) -> None:
    path = write("name: !!python/object/apply:os.system [true]\n")
    message = load_error(path)
    assert message.startswith(f"{path}:1: invalid YAML: could not determine a constructor")


ALIAS_IN_ANCHOR = "nested too deeply (an alias inside its own anchor?)"


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda t: t.replace("failures_allowed: 1", f"failures_allowed: {'9' * 5000}"), "4300"),
        (lambda t: t.replace("name: release-2025-10-21", "name: 2025-13-45"), "month"),
        (lambda t: t.replace("name: release-2025-10-21", "name: !!int 0xZZ"), "base 16"),
        (lambda t: t.replace("name: release-2025-10-21", "name: &x [*x]"), ALIAS_IN_ANCHOR),
        (lambda t: t.replace("database:\n", "database: &d\n  again: *d\n"), ALIAS_IN_ANCHOR),
        (lambda t: t.replace("release-2025-10-21", "[" * 5000 + "]" * 5000), "too deeply"),
    ],
    ids=[
        "int-of-5000-digits",
        "no-such-date",
        "not-an-int",
        "list-in-itself",
        "map-in-itself",
        "deep",
    ],
)
def test_a_value_yaml_cannot_construct_is_one_line_exit_2(
    write: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
    edit: Callable[[str], str],
    problem: str,
) -> None:
    path = write(edit(VALID))
    code = run(["deploy", "--dry-run", "--playbook", str(path)])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: invalid YAML: "), lines
    assert problem in lines[0] and "sys." not in lines[0]  # Python's advice is not the user's


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- name: x\n- name: y\n", "1: top level must be a mapping of keys, got a list"),
        ("\n\njust a string\n", "3: top level must be a mapping of keys, got a single value"),
        ("", "1: empty playbook; expected a mapping of keys"),
        ("# only a comment\n", "1: empty playbook; expected a mapping of keys"),
    ],
    ids=["list", "scalar", "empty", "comment-only"],
)
def test_top_level_must_be_a_mapping(
    write: Callable[[str], Path], text: str, expected: str
) -> None:
    path = write(text)
    assert load_error(path) == f"{path}:{expected}"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert load_error(path) == f"{path}: no such playbook file"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert load_error(tmp_path) == f"{tmp_path}: is a directory, not a playbook file"


def test_not_utf8(write: Callable[[str], Path]) -> None:
    path = write("")
    path.write_bytes(b"name: caf\xe9\n")
    assert load_error(path) == f"{path}:1: not UTF-8 text (byte 9)"


def test_several_problems_report_the_first_in_file_order(write: Callable[[str], Path]) -> None:
    text = VALID.replace("interval: 30s", "interval: x").replace("schema: drizzle", "schema: [1]")
    path = write(text)
    assert load_error(path) == (
        f"{path}:{line_of(text, 'schema:')}: migrations.schema: "
        "expected a string, got a list (and 1 more problem)"
    )


def test_password_in_url_env_is_never_echoed(write: Callable[[str], Path]) -> None:
    text = VALID.replace(
        "url_env: PROD_DATABASE_URL", "url_env: 'postgresql://app:hunter2@db.internal/prod'"
    )
    path = write(text)
    message = load_error(path)
    assert "hunter2" not in message
    assert message == (
        f"{path}:3: database.url_env: must be the NAME of an environment variable "
        "(letters, digits, _), not the connection string itself"
    )


GITHUB_PAT = "ghp_R2d2C3poBb8Yoda1Luke2Leia3Han4SoloX"
VERCEL_TOKEN = "Xk9aQ2mZ7pLr4Tb8Wc1Nd6Fh"
NEON_KEY = "napi_" + "k3y0f64lowercasecharactersanddigits" * 2


@pytest.mark.parametrize(
    ("edit", "key", "token", "what"),
    [
        (
            lambda t: t.replace("url_env: PROD_DATABASE_URL", f"url_env: {GITHUB_PAT}"),
            "database.url_env",
            GITHUB_PAT,
            "the connection string itself",
        ),
        (
            lambda t: t + f"shadow:\n  url_env: {GITHUB_PAT}\n",
            "shadow.url_env",
            GITHUB_PAT,
            "the connection string itself",
        ),
        (
            lambda t: t.replace(
                "  target: main\n",
                "  target: main\n  via: github_pr\n"
                f"  github: {{repo: a/b, token_env: {GITHUB_PAT}}}\n",
            ),
            "git.github.token_env",
            GITHUB_PAT,
            "the token itself",
        ),
        (
            lambda t: t + f"release:\n  vercel: {{project_id: p, token_env: {VERCEL_TOKEN}}}\n",
            "release.vercel.token_env",
            VERCEL_TOKEN,
            "the token itself",
        ),
        (
            lambda t: t + f"neon:\n  project_id: round-river-123456\n  api_key_env: {NEON_KEY}\n",
            "neon.api_key_env",
            NEON_KEY,
            "the API key itself",
        ),
    ],
    ids=["database", "shadow", "github", "vercel", "neon"],
)
def test_a_token_pasted_for_a_variable_name_is_never_echoed(
    write: Callable[[str], Path], edit: Callable[[str], str], key: str, token: str, what: str
) -> None:
    text = edit(VALID)
    path = write(text)
    problem = f"is not a variable name (did you paste {what}?)"
    assert load_error(path) == f"{path}:{line_of(text, token)}: {key}: {problem}"


def test_a_pasted_token_is_not_echoed_by_the_command_either(
    write: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(VALID.replace("url_env: PROD_DATABASE_URL", f"url_env: {GITHUB_PAT}"))
    assert run(["deploy", "--dry-run", "--playbook", str(path)]) == 2
    captured = capsys.readouterr()
    assert GITHUB_PAT not in captured.out + captured.err
    assert "did you paste" in captured.err


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("monitor.example.com/health?token=Sekret123", "monitor.example.com/health?token=***"),
        ("ftp://monitor.example.com/x?key=Sekret123", "ftp://monitor.example.com/x?key=***"),
        ("ops:Sekret123@monitor.example.com/health", None),
        ("Sekret123@monitor.example.com/health", None),
        ("http//ops:Sekret123@monitor.example.com/health", None),
        ("htps://Sekret123@monitor.example.com/health", None),
    ],
)
def test_a_health_url_without_its_scheme_is_refused_masked(
    write: Callable[[str], Path], url: str, shown: str | None
) -> None:
    text = VALID.replace("https://app.example.com/api/health", url)
    message = load_error(write(text))
    assert "Sekret123" not in message
    got = f", got {shown!r}" if shown else " (not shown: it holds an @)"
    assert message.endswith(f"must be an http:// or https:// URL with a host{got}")


@pytest.mark.parametrize(
    "name", ["DATABASE_URL_Prod_v2", "PROD_DATABASE_URL_EU_west1", "ghs_DATABASE", "napi_url"]
)
def test_a_variable_name_that_looks_a_little_like_a_token_is_a_name(
    write: Callable[[str], Path], name: str
) -> None:
    path = write(VALID.replace("url_env: PROD_DATABASE_URL", f"url_env: {name}"))
    assert load_playbook(path).database.url_env == name


def test_password_in_other_values_is_redacted(write: Callable[[str], Path]) -> None:
    text = VALID.replace("name: release-2025-10-21", "name: [postgresql://a:hunter2@h/db]")
    message = load_error(write(text))
    assert "hunter2" not in message


def test_relative_path_is_named_as_given(
    write: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(VALID.replace("interval: 30s", "interval: 30 parsecs"))
    monkeypatch.chdir(tmp_path)
    message = load_error(Path("deploy/playbook.yaml"))
    assert message.startswith(f"deploy/playbook.yaml:{line_of(VALID, 'interval')}: ")


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("5s", 5.0),
        ("5sec", 5.0),
        ("15m", 900.0),
        ("5min", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("576h", 24 * 86400.0),  # the longest
        ("1h 30m 15s", 5415.0),
        ("1.5h", 5400.0),
        ("90 s", 90.0),
        ("2 minutes", 120.0),
        ("1H", 3600.0),
        ("30", 30.0),
        ("0.25", 0.25),
        ("0", 0.0),
        (45, 45.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_parse_duration(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "-5s",
        "-1",
        -1,
        -0.5,
        float("nan"),
        float("inf"),
        "30 parsecs",
        "",
        "   ",
        "s",
        "5mm",
        "30m1h",
        "1h1h",
        "1e3",
        "nan",
        "5 s later",
        True,
        "99999999999999999999s",
        "9" * 400 + "s",
        "577h",
        10**30,
        pytest.param(10**400, id="10**400"),
        1e300,
    ],
)
def test_parse_duration_rejects(text: str | int | float) -> None:
    with pytest.raises(ValueError, match=r"invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["500", " 30 ", ".5", 500, 0.5])
def test_a_lock_timeout_needs_its_unit(text: str | int | float) -> None:
    assert parse_duration(text) == float(text)  # elsewhere a bare number is seconds
    with pytest.raises(ValueError, match=r"needs a unit: .*ms \(as PostgreSQL reads it\)"):
        parse_duration(text, unit_required=True)


@pytest.mark.parametrize(("text", "seconds"), [("500ms", 0.5), ("2s", 2.0), ("0", 0.0), (0, 0.0)])
def test_a_lock_timeout_with_its_unit_or_zero_parses(text: str | int, seconds: float) -> None:
    assert parse_duration(text, unit_required=True) == seconds


# --------------------------------------------------------------------------- example release


def example_journal() -> list[dict[str, object]]:
    journal = json.loads((EXAMPLE_MIGRATIONS / "meta" / "_journal.json").read_text())
    assert journal["version"] == "7"
    assert journal["dialect"] == "postgresql"
    entries: list[dict[str, object]] = journal["entries"]
    return entries


def test_example_journal_is_drizzle_shaped_and_out_of_order() -> None:
    entries = example_journal()
    assert [e["idx"] for e in entries] == list(range(12))
    for entry in entries:
        assert set(entry) == {"idx", "version", "when", "tag", "breakpoints"}
        assert entry["version"] == "7"
        assert entry["breakpoints"] is True
        assert re.fullmatch(rf"{entry['idx']:04d}_[a-z_]+", str(entry["tag"]))
    tags = {str(e["tag"]) for e in entries}
    assert {p.stem for p in EXAMPLE_MIGRATIONS.glob("*.sql")} == tags
    assert [p.name for p in (EXAMPLE_MIGRATIONS / "meta").iterdir()] == ["_journal.json"]

    when = {str(e["tag"]): int(str(e["when"])) for e in entries}
    baseline = [int(str(e["when"])) for e in entries[:9]]
    assert baseline == sorted(baseline) and len(set(baseline)) == 9
    assert when["0009_fat_kulan_gath"] == 1760476235390
    assert when["0010_new_colleen_wing"] == 1760414433401
    assert when["0011_cute_skin"] == 1760978222168
    assert max(baseline) < when["0010_new_colleen_wing"] < when["0009_fat_kulan_gath"]


def test_example_sql_is_in_drizzle_kit_style() -> None:
    files = sorted(EXAMPLE_MIGRATIONS.glob("*.sql"))
    assert len(files) == 12  # 0000..0011: the whole example release
    for path in files:
        text = path.read_text()
        assert not text.endswith("\n"), f"{path.name}: drizzle-kit writes no final newline"
        for statement in text.split(BREAKPOINT):
            assert statement.strip().endswith(";"), f"{path.name}: {statement!r}"
        for line in text.splitlines():
            if line.startswith("CREATE INDEX") or line.startswith("CREATE UNIQUE INDEX"):
                assert " USING btree (" in line, line
            if "REFERENCES" in line:
                assert 'REFERENCES "public".' in line, line
            if line.startswith("CREATE TYPE"):
                assert line.startswith('CREATE TYPE "public".'), line


def test_example_migrations_apply_in_journal_order(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for entry in example_journal():
            text = (EXAMPLE_MIGRATIONS / f"{entry['tag']}.sql").read_text()
            with conn.transaction():
                for statement in text.split(BREAKPOINT):
                    if statement.strip():
                        conn.execute(statement)

        columns = {
            (str(table), str(column)): (str(data_type), str(nullable), str(default))
            for table, column, data_type, nullable, default in conn.execute(
                "SELECT table_name, column_name, data_type, is_nullable, column_default"
                " FROM information_schema.columns WHERE table_schema = 'public'"
            ).fetchall()
        }
        tables = {table for table, _ in columns}
        indexes = {
            str(row[0])
            for row in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
            ).fetchall()
        }

    assert {"app_settings", "case_queue_snapshots", "catalog_redirect_log", "client_settings"} <= (
        tables
    )
    cmdb = {column for table, column in columns if table == "cmdb_reconciliation_results"}
    assert len(cmdb) == 20
    assert {
        "case_number",
        "case_sys_id",
        "entity_value",
        "entity_type",
        "reconciliation_status",
        "cmdb_sys_id",
        "confidence",
        "business_context_match",
        "child_task_number",
        "metadata",
    } <= cmdb
    for table in ("case_classification_results", "case_classifications"):
        for column in ("service_offering", "application_service"):
            assert columns[(table, column)][:2] == ("text", "YES")
        assert columns[(table, "created_at")] == (
            "timestamp with time zone",
            "NO",
            "now()",
        )
    assert "cmdb_reconciliation_results_case_number_idx" in indexes
    assert "case_queue_snapshots_group_time_idx" in indexes
