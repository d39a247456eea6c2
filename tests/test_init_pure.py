"""The pure parts of ``orchestrator init``: a drizzle config's literals read without node,
a remote URL, a Neon host, the Vercel project file, and the YAML composed from a draft
(which must load with the playbook loader, TODO lines and all)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.errors import UsageError
from orchestrator.init.draft import Draft, Missing, Sourced, answer, compose, questions
from orchestrator.init.drizzle_config import (
    ConfigUnreadable,
    DrizzleConfig,
    Expression,
    parse_drizzle_config,
)
from orchestrator.init.sources import (
    GitRemote,
    ProjectFileUnreadable,
    VercelProject,
    database_host,
    parse_neon_host,
    parse_remote,
    parse_vercel_project,
)
from orchestrator.playbook import load_playbook

# ----------------------------------------------------------------------------- drizzle config


def test_a_typescript_config_is_read_from_its_literals() -> None:
    source = """
    import { defineConfig } from "drizzle-kit";
    // out: "not-this", a comment
    export default defineConfig({
      schema: ["./src/db/schema.ts", "./src/db/views.ts"], /* the app's tables */
      out: './db/migrations',
      dialect: "postgresql",
      dbCredentials: { url: process.env.POSTGRES_URL! },
      migrations: { table: `journal`, schema: "public", },
      strict: true,
    });
    """
    assert parse_drizzle_config(source) == DrizzleConfig(
        out="./db/migrations",
        table="journal",
        schema="public",
        url_env="POSTGRES_URL",
        dialect="postgresql",
    )


def test_keys_not_written_are_none_for_drizzle_kits_defaults() -> None:
    source = 'export default { dialect: "postgresql", schema: "./schema.ts" };'
    assert parse_drizzle_config(source) == DrizzleConfig(
        out=None, table=None, schema=None, dialect="postgresql"
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # A key written after the spread is known; the others may come from it.
        ('{ ...base, out: "./m" }', ("./m", "...base", "...base")),
        # A key written before it may be overridden by it.
        ('{ out: "./m", ...base }', ("...base", "...base", "...base")),
        # The migrations object written in full replaces base's: its unwritten key is unset.
        ('{ ...base, migrations: { table: "t" } }', ("...base", "t", None)),
        (
            '{ migrations: { ...shared.migrations, table: "t" } }',
            (None, "t", "...shared.migrations"),
        ),
    ],
)
def test_a_spread_may_set_any_key_it_does_not_precede(
    source: str, expected: tuple[str | None, ...]
) -> None:
    config = parse_drizzle_config(f"export default defineConfig({source});")
    found = [
        v.source if isinstance(v, Expression) else v
        for v in (config.out, config.table, config.schema)
    ]
    assert found == list(expected)


@pytest.mark.parametrize(
    "source",
    [
        'const config = { out: "./m" } satisfies Config;\nexport default config;',
        'const config: Config = { out: "./m" };\nexport default config;',
        'module.exports = { out: "./m" };',
        'const c = defineConfig({ out: "./m" });\nexport default c;',
        'const config = { out: "./m" };\nexport default defineConfig(config);',
        'const config = { out: "./m" };\nmodule.exports = defineConfig(config);',
    ],
)
def test_the_config_object_is_found_however_it_is_exported(source: str) -> None:
    assert parse_drizzle_config(source).out == "./m"


@pytest.mark.parametrize(
    "url",
    [
        "process.env.POSTGRES_URL",
        "process.env.POSTGRES_URL!",
        "process.env.POSTGRES_URL as string",
        "process.env.POSTGRES_URL! as string",
        'process.env["POSTGRES_URL"] as string',
    ],
)
def test_the_database_url_variable_is_read_through_typescripts_assertions(url: str) -> None:
    source = f"export default defineConfig({{ dbCredentials: {{ url: {url} }} }});"
    assert parse_drizzle_config(source).url_env == "POSTGRES_URL"


def test_values_that_are_not_literals_are_expressions_to_ask_about() -> None:
    source = """export default defineConfig({
      out: process.env.MIGRATIONS_DIR ?? "./drizzle",
      migrations: { table: `${prefix}_migrations`, schema },
      dbCredentials: { url: buildUrl(process.env) },
    });"""
    config = parse_drizzle_config(source)
    assert config.out == Expression('process.env.MIGRATIONS_DIR ?? "./drizzle"')
    assert isinstance(config.table, Expression) and "prefix" in config.table.source
    assert config.schema == Expression("schema")  # shorthand: a variable, not a literal
    assert config.url_env is None


def test_a_json_config_is_json() -> None:
    config = parse_drizzle_config(
        '{"out": "./sql", "migrations": {"schema": "ops"}}', json_file=True
    )
    assert (config.out, config.table, config.schema) == ("./sql", None, "ops")


@pytest.mark.parametrize(
    ("source", "json_file"),
    [("console.log('no config here')", False), ("[1, 2]", True), ("{nope", True)],
)
def test_a_file_without_a_config_object_is_unreadable(source: str, json_file: bool) -> None:
    with pytest.raises(ConfigUnreadable):
        parse_drizzle_config(source, json_file=json_file)


# ----------------------------------------------------------------------------- sources


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://github.com/acme/shop.git", GitRemote("github.com", "acme/shop")),
        ("https://github.com/acme/shop", GitRemote("github.com", "acme/shop")),
        (
            "https://x-access-token:t0k@github.com/acme/shop.git",
            GitRemote("github.com", "acme/shop"),
        ),
        ("git@github.com:acme/shop.git", GitRemote("github.com", "acme/shop")),
        ("ssh://git@github.com:22/acme/shop.git", GitRemote("github.com", "acme/shop")),
        ("git@gitlab.com:acme/shop.git", GitRemote("gitlab.com", "acme/shop")),
        ("https://github.com/acme", GitRemote("github.com", None)),
        ("/srv/git/shop.git", None),
        ("../shop.git", None),
        ("file:///srv/git/shop.git", None),
    ],
)
def test_a_remote_url_names_its_host_and_repository(url: str, expected: GitRemote | None) -> None:
    assert parse_remote(url) == expected


def test_only_github_com_counts_as_github() -> None:
    assert parse_remote("git@github.com:acme/shop.git").on_github  # type: ignore[union-attr]
    assert not parse_remote("git@gitlab.com:acme/shop.git").on_github  # type: ignore[union-attr]


def test_a_neon_host_names_its_endpoint() -> None:
    direct = parse_neon_host("ep-cool-darkness-123456.us-east-2.aws.neon.tech")
    assert direct is not None
    assert (direct.endpoint_id, direct.region, direct.pooled) == (
        "ep-cool-darkness-123456",
        "us-east-2",
        False,
    )
    pooled = parse_neon_host("EP-Cool-Darkness-123456-pooler.eu-central-1.aws.neon.tech")
    assert pooled is not None and pooled.pooled
    assert pooled.endpoint_id == "ep-cool-darkness-123456"
    assert pooled.direct_host == "ep-cool-darkness-123456.eu-central-1.aws.neon.tech"
    older = parse_neon_host("ep-snowy-sea-987654.us-east-2.neon.tech")
    assert older is not None and older.endpoint_id == "ep-snowy-sea-987654"
    # Current hosts carry a cell label (c-N) between the endpoint and the region.
    current = parse_neon_host("ep-calm-snow-aev1ojm4-pooler.c-2.us-east-2.aws.neon.tech")
    assert current is not None and current.pooled
    assert (current.endpoint_id, current.region) == ("ep-calm-snow-aev1ojm4", "us-east-2")
    assert current.direct_host == "ep-calm-snow-aev1ojm4.c-2.us-east-2.aws.neon.tech"


@pytest.mark.parametrize(
    "host", ["db.example.com", "127.0.0.1", "neon.tech", "ep-x.us-east-2.aws.neon.tech.evil.io"]
)
def test_other_hosts_are_not_neon(host: str) -> None:
    assert parse_neon_host(host) is None


def test_the_host_of_a_database_url() -> None:
    assert database_host("postgresql://u:p@H.example.com:5432/db?sslmode=require") == (
        "h.example.com"
    )
    assert database_host("host=x dbname=y") is None


def test_the_vercel_project_file() -> None:
    assert parse_vercel_project('{"projectId": "prj_1", "orgId": "team_2"}') == VercelProject(
        "prj_1", "team_2"
    )
    # A personal account's id is not a team: no teamId is sent.
    assert parse_vercel_project('{"projectId": "prj_1", "orgId": "abcDEF"}') == VercelProject(
        "prj_1", None
    )
    for text in ("{", '{"orgId": "team_2"}', "[]"):
        with pytest.raises(ProjectFileUnreadable):
            parse_vercel_project(text)


# ----------------------------------------------------------------------------- the YAML


def draft(**changes: object) -> Draft:
    base = Draft(
        name="shop",
        url_env="DATABASE_URL",
        migrations_dir=Sourced("./drizzle", "out in drizzle.config.ts"),
        migrations_schema=Sourced("drizzle"),
        migrations_table=Sourced("__drizzle_migrations"),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def loaded(tmp_path: Path, text: str) -> object:
    path = tmp_path / "orchestrator.yaml"
    path.write_text(text)
    return load_playbook(path)


def test_a_complete_draft_loads_as_the_playbook_it_describes(tmp_path: Path) -> None:
    text = compose(
        draft(
            via="github_pr",
            via_reason="GitHub says main is protected",
            github_repo=Sourced("acme/shop"),
            github_api_url="http://127.0.0.1:9/gh",
            neon_endpoint="ep-a-1",
            neon_project=Sourced("round-river-123456"),
            neon_branch="production",
            vercel=VercelProject("prj_1", "team_2"),
            health_url="https://shop.example.com/api/health?x=1",
            monitor_duration="5m",
            monitor_interval="10s",
        )
    )
    playbook = loaded(tmp_path, text)
    assert playbook.migrations.dir == tmp_path / "drizzle"  # type: ignore[attr-defined]
    assert playbook.backup.kind == "neon_branch"  # type: ignore[attr-defined]
    neon = playbook.neon  # type: ignore[attr-defined]
    assert (neon.project_id, neon.branch) == ("round-river-123456", "production")
    git_spec = playbook.git  # type: ignore[attr-defined]
    assert git_spec.via == "github_pr" and git_spec.github.repo == "acme/shop"
    assert git_spec.github.api_url == "http://127.0.0.1:9/gh"
    vercel = playbook.release.vercel  # type: ignore[attr-defined]
    assert (vercel.project_id, vercel.team_id) == ("prj_1", "team_2")
    monitor = playbook.monitor  # type: ignore[attr-defined]
    assert (monitor.duration, monitor.interval) == (300.0, 10.0)
    assert monitor.http[0].url == "https://shop.example.com/api/health?x=1"
    assert "TODO" not in text


def test_what_was_not_found_is_a_commented_line_saying_how_to_fill_it(tmp_path: Path) -> None:
    text = compose(
        draft(
            migrations_table=Missing("drizzle.config.ts sets migrations.table to `t()`"),
            neon_endpoint="ep-a-1",
            neon_project=Missing("set NEON_API_KEY and run init again"),
            github_repo=Sourced("acme/shop"),
        )
    )
    lines = text.splitlines()
    assert (
        "  # table: __drizzle_migrations  # TODO: drizzle.config.ts sets migrations.table "
        "to `t()`" in lines
    )
    assert any(line.startswith("#   project_id:") and "NEON_API_KEY" in line for line in lines)
    # Still a playbook: the table has its default, and until the project is known a person
    # vouches for the backup.
    playbook = loaded(tmp_path, text)
    assert playbook.backup.kind == "manual"  # type: ignore[attr-defined]
    assert playbook.neon is None  # type: ignore[attr-defined]
    assert playbook.git.via == "push"  # type: ignore[attr-defined]
    assert draft(migrations_table=Missing("x")).missing == ["migrations.table"]


def test_a_missing_migrations_folder_leaves_a_playbook_that_says_so(tmp_path: Path) -> None:
    text = compose(draft(migrations_dir=Missing("the folder drizzle-kit generate writes")))
    with pytest.raises(UsageError, match=r"migrations.dir: missing required key 'dir'"):
        loaded(tmp_path, text)


@pytest.mark.parametrize("name", ["yes", "2025-10-21", "a b: c", "10"])
def test_names_yaml_would_misread_are_quoted(tmp_path: Path, name: str) -> None:
    assert loaded(tmp_path, compose(draft(name=name))).name == name  # type: ignore[attr-defined]


def test_questions_ask_for_what_is_missing_and_answers_fill_it() -> None:
    start = draft(
        migrations_dir=Missing("x"),
        neon_endpoint="ep-a-1",
        neon_project=Missing("y"),
        github_repo=Sourced("acme/shop"),
    )
    keys = [q.key for q in questions(start)]
    assert keys == ["migrations_dir", "neon_project", "via", "health_url"]
    filled = answer(answer(start, "migrations_dir", " ./sql "), "neon_project", "p-1")
    filled = answer(answer(filled, "via", "github_pr"), "health_url", "https://a.example/h")
    assert filled.missing == []
    assert filled.migrations_dir == Sourced("./sql", "answered at init")
    assert (filled.via, filled.health_url) == ("github_pr", "https://a.example/h")
    assert answer(start, "migrations_dir", "") == start  # an empty answer keeps the default
    with pytest.raises(ValueError, match="push or github_pr"):
        answer(start, "via", "merge")
    with pytest.raises(ValueError, match="http"):
        answer(start, "health_url", "localhost:3000")
