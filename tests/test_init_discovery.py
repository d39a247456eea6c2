"""``orchestrator init`` reading an app folder: what it finds, what it leaves as TODO lines,
what a person answers, and what it refuses (exit 2, nothing written). The Neon and GitHub
look-ups go to the contract doubles (tests/neon_double.py, tests/github_double.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli import run
from orchestrator.errors import UsageError
from orchestrator.init import InitOptions, init_playbook
from orchestrator.init.draft import Question, Sourced
from orchestrator.platforms.http import ApiClient, ApiError
from orchestrator.playbook import load_playbook
from orchestrator.sandbox.release import git
from tests.github_double import github_double
from tests.neon_double import neon_double
from tests.test_bad_input import run_bound_by_permissions

NEON_URL = "postgresql://app:pw@ep-calm-lake-a1b2c3.eu-central-1.aws.neon.tech/neondb"


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An app folder: a git repository whose origin is on GitHub, drizzle migrations and a
    config; no platform variables set; the current folder."""
    folder = tmp_path / "shop"
    (folder / "drizzle" / "meta").mkdir(parents=True)
    (folder / "drizzle" / "meta" / "_journal.json").write_text('{"entries": []}')
    (folder / "drizzle.config.ts").write_text(
        'export default defineConfig({ out: "./drizzle", dialect: "postgresql" });\n'
    )
    git(folder, "init", "--initial-branch=main")
    git(folder, "remote", "add", "origin", "git@github.com:acme/service-desk.git")
    for name in ("DATABASE_URL", "NEON_API_KEY", "GITHUB_TOKEN", "VERCEL_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(folder)
    return folder


def test_a_refused_neon_key_leaves_the_project_to_fill_in_and_a_manual_backup(
    app: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with neon_double(api_key="napi_right") as (api, neon):
        neon.add_branch("main")
        monkeypatch.setenv("DATABASE_URL", NEON_URL)
        monkeypatch.setenv("NEON_API_KEY", "napi_wrong")
        assert run(["init", "--yes", "--neon-api-url", api]) == 0
    said = capsys.readouterr()
    assert "HTTP 401" in said.err and "authentication required" in said.err
    assert "not found (see the TODO lines in the file): neon.project_id" in said.out
    text = (app / "orchestrator.yaml").read_text()
    assert "#   project_id: PROJECT_ID  # TODO: the Neon API refused" in text
    assert "napi_wrong" not in text and "pw@" not in text  # nor the URL's password
    playbook = load_playbook(app / "orchestrator.yaml")
    assert playbook.backup.kind == "manual" and playbook.neon is None
    # Without a token, branch protection is not asked about: push, github_pr commented.
    assert playbook.git.via == "push" and "# via: github_pr" in text


def test_an_unprotected_target_is_pushed_to_and_asking_for_pull_requests_wins(
    app: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin = tmp_path / "origin.git"
    origin.mkdir()
    git(origin, "init", "--bare", "--initial-branch=main")
    git(app, "commit", "--allow-empty", "-m", "start")
    git(app, "push", str(origin), "main")
    with github_double(origin) as (api, github):
        monkeypatch.setenv("GITHUB_TOKEN", github.token)
        assert run(["init", "--yes", "--github-api-url", api]) == 0
        assert load_playbook(app / "orchestrator.yaml").git.via == "push"
        assert ("GET", "/repos/acme/service-desk/branches/main", None) in github.requests
        argv = ["init", "--yes", "--github-api-url", api, "--via", "github_pr", "-o", "pr.yaml"]
        assert run(argv) == 0
    asked = load_playbook(app / "pr.yaml").git
    assert asked.via == "github_pr" and asked.github is not None
    assert (asked.github.repo, asked.github.api_url) == ("acme/service-desk", api)


def test_pull_requests_asked_for_are_never_written_as_a_push(
    app: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GitHub Enterprise: the remote names the repository, --github-api-url its API.
    git(app, "remote", "set-url", "origin", "git@ghe.example.com:acme/service-desk.git")
    enterprise = "https://ghe.example.com/api/v3"
    assert run(["init", "--yes", "--via", "github_pr", "--github-api-url", enterprise]) == 0
    asked = load_playbook(app / "orchestrator.yaml").git
    assert asked.via == "github_pr" and asked.github is not None
    assert (asked.github.repo, asked.github.api_url) == ("acme/service-desk", enterprise)
    # No origin: the repository is a TODO and deploy refuses the playbook until it is filled.
    git(app, "remote", "remove", "origin")
    assert run(["init", "--yes", "--via", "github_pr", "-o", "pr.yaml"]) == 0
    assert "not found (see the TODO lines in the file): git.github.repo" in capsys.readouterr().out
    text = (app / "pr.yaml").read_text()
    assert "  via: github_pr  # --via github_pr" in text and "via: push" not in text
    assert "    # repo: OWNER/NAME  # TODO: origin names no GitHub repository" in text
    with pytest.raises(UsageError, match=r"github"):
        load_playbook(app / "pr.yaml")


def test_a_config_init_cannot_read_leaves_every_migrations_value_to_fill_in(
    app: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It may set any of them: drizzle-kit's defaults would be a guess.
    (app / "drizzle.config.ts").write_text("export default defineConfig(makeConfig());\n")
    assert run(["init", "--yes"]) == 0
    said = capsys.readouterr().out
    assert "not found (see the TODO lines in the file): migrations.dir, migrations.schema, " in said
    assert "next: orchestrator deploy" not in said
    text = (app / "orchestrator.yaml").read_text()
    assert "  # table: __drizzle_migrations  # TODO: drizzle.config.ts sets it in a way" in text


def test_keys_a_spread_may_set_are_left_to_fill_in_and_defaults_are_drizzle_kits(
    app: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What the file does not write comes from base.ts, which init does not run.
    (app / "base.ts").write_text(
        'export default { migrations: { table: "acme_migrations", schema: "public" } };\n'
    )
    (app / "drizzle.config.ts").write_text(
        'import base from "./base";\n'
        'export default defineConfig({ ...base, schema: "./src/schema.ts", out: "./drizzle",'
        " dbCredentials: { url: process.env.DATABASE_URL! } });\n"
    )
    assert run(["init", "--yes"]) == 0
    said = capsys.readouterr().out
    assert "not found (see the TODO lines in the file): migrations.schema, migrations.table" in said
    assert "next: orchestrator deploy" not in said
    text = (app / "orchestrator.yaml").read_text()
    assert "  dir: ./drizzle  # out in drizzle.config.ts\n" in text
    todo = "# TODO: drizzle.config.ts may set migrations.{} through `...base`: write its value"
    assert f"  # schema: drizzle  {todo.format('schema')}" in text
    assert f"  # table: __drizzle_migrations  {todo.format('table')}" in text
    # Without the spread, the keys the file does not write are drizzle-kit's defaults.
    (app / "drizzle.config.ts").write_text('export default defineConfig({ out: "./drizzle" });\n')
    assert run(["init", "--yes", "-o", "plain.yaml"]) == 0
    text = (app / "plain.yaml").read_text()
    assert "  schema: drizzle  # drizzle-kit's default\n" in text
    assert "  table: __drizzle_migrations  # drizzle-kit's default\n" in text
    assert "in drizzle.config.ts" not in text.replace("out in drizzle.config.ts", "")


def test_a_value_written_as_an_expression_is_asked_for(app: Path) -> None:
    (app / "drizzle.config.ts").write_text(
        "export default defineConfig({ out: process.env.OUT_DIR ?? './drizzle',"
        " migrations: { schema: SCHEMA } });\n"
    )
    questions: list[str] = []
    answers = {"migrations_dir": "./drizzle", "migrations_schema": "", "via": "github_pr"}

    def person(question: Question) -> str:
        questions.append(question.key)
        return answers.get(question.key, "")

    result = init_playbook(app, app / "orchestrator.yaml", {}, InitOptions(), ask=person)
    assert questions == ["migrations_dir", "migrations_schema", "via", "health_url"]
    assert result.draft.migrations_dir == Sourced("./drizzle", "answered at init")
    assert result.missing == ("migrations.schema",)  # not answered: a TODO line
    text = (app / "orchestrator.yaml").read_text()
    assert "# schema: drizzle  # TODO: drizzle.config.ts sets migrations.schema to `SCHEMA`" in (
        text
    )
    with pytest.raises(UsageError, match=r"migrations\.schema: missing required key"):
        load_playbook(app / "orchestrator.yaml")  # deploy would say the same, exit 2


def test_a_folder_with_nothing_in_it_still_gets_a_playbook_to_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert run(["init", "--yes"]) == 0
    said = capsys.readouterr()
    assert "no drizzle.config" in said.err and "no origin remote" in said.err
    text = (empty / "orchestrator.yaml").read_text()
    assert "# dir: drizzle  # TODO: the folder drizzle-kit generate writes" in text
    assert "# TODO: add production's health check" in text
    # The window still checks something: the monitor refuses one that checks nothing.
    monitor = load_playbook(_with_folder(empty / "orchestrator.yaml", "drizzle")).monitor
    assert monitor.http == [] and [c.query for c in monitor.sql] == ["SELECT 1"]


def _with_folder(playbook: Path, folder: str) -> Path:
    """``playbook`` with its TODO migrations folder filled in, as a person would."""
    text = playbook.read_text()
    start = text.index("  # dir: ")
    end = text.index("\n", start)
    playbook.write_text(text[:start] + f"  dir: {folder}" + text[end:])
    return playbook


@pytest.mark.parametrize(
    "argv",
    [
        ["--monitor-duration", "10s", "--monitor-interval", "1min"],
        ["--monitor-duration", "30 parsecs"],
        ["--health-url", "localhost:3000/health"],
        ["--via", "merge"],
    ],
)
def test_bad_options_change_nothing(app: Path, argv: list[str]) -> None:
    before = sorted(p.name for p in app.iterdir())
    assert run(["init", "--yes", *argv]) == 2
    assert sorted(p.name for p in app.iterdir()) == before


def test_a_playbook_written_elsewhere_still_points_at_the_app(app: Path) -> None:
    (app / "deploy").mkdir()
    assert run(["init", "--yes", "--output", "deploy/production.yaml"]) == 0
    playbook = load_playbook(app / "deploy" / "production.yaml")
    assert playbook.git.repo == app.resolve()
    assert playbook.migrations.dir == (app / "drizzle").resolve()


def test_an_app_folder_init_may_not_read_is_one_line_exit_2_and_nothing_written(app: Path) -> None:
    meta = app / "drizzle" / "meta"
    meta.chmod(0)
    try:
        done = run_bound_by_permissions(["init", "--yes"])
    finally:
        meta.chmod(0o755)
    assert "Traceback" not in done.stdout + done.stderr
    journal = meta / "_journal.json"
    assert done.stderr.splitlines() == [f"error: cannot read {journal}: Permission denied"]
    assert done.returncode == 2
    assert not (app / "orchestrator.yaml").exists()


def test_a_personal_keys_project_is_found_in_each_of_the_users_organizations(
    app: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Neon lists a personal key's projects only for the organization it names (org_id); the
    # user belongs to two, and the project is the second's.
    with neon_double(api_key="napi_personal") as (api, neon):
        main = neon.add_branch("main")
        neon.add_endpoint(main["id"], endpoint_id="ep-calm-lake-a1b2c3")
        neon.organizations = ["org-other-87654321", neon.org_id]
        with pytest.raises(ApiError, match=r"HTTP 400: org_id is required"):  # as Neon answers
            ApiClient("Neon API", api, "napi_personal").call("GET", "/projects")
        neon.requests.clear()
        monkeypatch.setenv("DATABASE_URL", NEON_URL)
        monkeypatch.setenv("NEON_API_KEY", "napi_personal")
        assert run(["init", "--yes", "--neon-api-url", api]) == 0
    asked = [path for _method, path, _body in neon.requests]
    assert asked[0] == "/api/v2/users/me/organizations"
    assert [path for path in asked if path.startswith("/api/v2/projects?")] == [
        "/api/v2/projects?limit=400&org_id=org-other-87654321",
        f"/api/v2/projects?limit=400&org_id={neon.org_id}",
    ]  # each organization named, never a listing without one
    assert (
        "neon: project round-river-123456, branch main (through the API)" in capsys.readouterr().err
    )
    playbook = load_playbook(app / "orchestrator.yaml")
    assert playbook.backup.kind == "neon_branch" and playbook.neon is not None
    assert (playbook.neon.project_id, playbook.neon.branch) == ("round-river-123456", "main")
