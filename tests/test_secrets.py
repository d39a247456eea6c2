"""The secrets sweep: every command, run with a distinctive database password and distinctive
``*_TOKEN``/``*_KEY`` environment values, never writes one of them anywhere — stdout, stderr,
``--json`` documents, run records, audit trails."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from orchestrator.cli import run
from orchestrator.db.connect import check_ssl, is_local_host, remote_hosts, ssl_warning
from orchestrator.errors import UsageError
from orchestrator.redaction import Redactor, redact, secret_values
from orchestrator.sandbox.release import EXAMPLE_MIGRATIONS, copy_migrations
from tests.pg_urls import with_user
from tests.test_deploy import build_world

PASSWORD = "Pw-zebra-quartz-8841"
ENVIRONMENT = {
    "GITHUB_TOKEN": "ghp_TokenKoala5521",
    "STRIPE_SECRET_KEY": "sk_live_KeyOtter7730",
    "SENTRY_AUTH_TOKEN": "sntrys_TokenLynx9902",
}
SECRETS = [PASSWORD, *ENVIRONMENT.values()]


@pytest.fixture
def deployer_url(database_url: str) -> Iterator[str]:
    """``database_url`` as a role with the distinctive password."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE deployer LOGIN SUPERUSER PASSWORD {}").format(
                sql.Literal(PASSWORD)
            )
        )
    try:
        yield with_user(database_url, "deployer", PASSWORD)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("DROP OWNED BY deployer")
            conn.execute("DROP ROLE deployer")


def leaks(text: str | bytes) -> list[str]:
    """The secrets (or their URL-encoded forms) that appear in ``text``."""
    from urllib.parse import quote

    data = text if isinstance(text, bytes) else text.encode()
    return [s for s in SECRETS if s.encode() in data or quote(s, safe="").encode() in data]


def test_no_command_writes_a_secret_anywhere(
    tmp_path: Path,
    deployer_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", deployer_url)
    written: dict[str, str] = {}

    def cli(label: str, *argv: str) -> tuple[int, str]:
        code = run(list(argv))
        captured = capsys.readouterr()
        written[f"{label} stdout"] = captured.out
        written[f"{label} stderr"] = captured.err
        return code, captured.out

    with build_world(tmp_path, deployer_url, duration="300ms", interval="100ms") as world:
        state = ["--state-dir", str(world.root / ".orchestrator")]
        release = tmp_path / "release-migrations"
        copy_migrations(EXAMPLE_MIGRATIONS, release)
        main = str(world.repo.migrations)
        for extra in ([], ["--json"]):
            assert cli(f"validate{extra}", "validate", "--migrations", main, *extra)[0] == 0
            assert cli(f"plan{extra}", "plan", "--migrations", str(release), *extra)[0] == 0
            cli(f"lint{extra}", "lint", "--migrations", str(release), *extra)
            assert cli(f"inspect{extra}", "inspect", "--migrations", main, *extra)[0] == 0
            cli(f"repair{extra}", "repair", "--migrations", main, "--dry-run", *extra)
            assert cli(f"migrate{extra}", "migrate", "--migrations", main, "--yes", *extra)[0] == 0
            code, _ = cli(
                f"dry-run{extra}", "deploy", "--playbook", str(world.playbook), "--dry-run", *extra
            )
            assert code == 0

        # A deploy that halts (production down before it), its resume, the listings, the
        # rollback.
        world.health.status = 503
        code, out = cli(
            "deploy", "deploy", "--playbook", str(world.playbook), "--yes", "--json", *state
        )
        assert code == 21, written["deploy stderr"]
        run_id = json.loads(out)["run_id"]
        world.health.status = 200
        code, _ = cli("resume", "resume", run_id, "--yes", *state)
        assert code == 0, written["resume stderr"]
        for extra in ([], ["--json"]):
            assert cli(f"runs{extra}", "runs", *state, *extra)[0] == 0
            assert cli(f"show{extra}", "show", run_id, *state, *extra)[0] == 0
        assert cli("rollback", "rollback", run_id, "--yes", "--json", *state)[0] == 0

        # Failures quote connection strings: the password must be masked there too.
        unreachable = deployer_url.replace(
            deployer_url.rsplit("@", 1)[1].split("/")[0], "127.0.0.1:1"
        )
        for command in (["validate"], ["migrate", "--yes"], ["inspect"]):
            code, _ = cli(
                f"{command[0]} unreachable",
                *command,
                "--migrations",
                main,
                "--database-url",
                unreachable,
                "--retries",
                "1",
            )
            assert code == 30

    files = {
        str(path): path.read_bytes()
        for path in (world.root / ".orchestrator").rglob("*")
        if path.is_file()
    }
    assert any(name.endswith("audit.jsonl") for name in files)
    assert len(written) >= 40
    found = {where: leaks(text) for where, text in {**written, **files}.items()}
    assert {where: secrets for where, secrets in found.items() if secrets} == {}


def test_neon_commands_write_no_secret_anywhere(
    tmp_path: Path,
    deployer_url: str,
    server_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sweep for Neon: a rehearsal on a branch, a neon_branch deploy and its rollback
    with --restore-database, against the contract double backed by real PostgreSQL whose
    connection URIs carry the role's password, as Neon's do."""
    from psycopg.conninfo import conninfo_to_dict

    from tests.neon_world import neon_world

    neon_key = "napi_NeonKeyHeron3317"
    monkeypatch.setenv("NEON_API_KEY", neon_key)
    monkeypatch.setenv("DATABASE_URL", deployer_url)
    written: dict[str, str] = {}

    def cli(label: str, *argv: str) -> tuple[int, str]:
        code = run(list(argv))
        captured = capsys.readouterr()
        written[f"{label} stdout"], written[f"{label} stderr"] = captured.out, captured.err
        return code, captured.out

    production = str(conninfo_to_dict(deployer_url)["dbname"])
    cluster = deployer_url.rsplit("/", 1)[0] + "/postgres"  # the deployer, with its password
    with (
        build_world(tmp_path, deployer_url) as world,
        neon_world(world, neon_key, cluster_url=cluster, production=production) as state,
    ):
        state_dir = ["--state-dir", str(world.root / ".orchestrator")]
        deploy = ["deploy", "--playbook", str(world.playbook)]
        for extra in ([], ["--json"]):
            code, _ = cli(f"rehearse{extra}", *world.rehearse_argv("neon-branch"), *extra)
            assert code == 0, written[f"rehearse{extra} stderr"]
        code, out = cli("deploy", *deploy, "--yes", "--json", *state_dir)
        assert code == 0, written["deploy stderr"]
        run_id = json.loads(out)["run_id"]
        assert cli("show", "show", run_id, "--json", *state_dir)[0] == 0
        restore = ["--restore-database", "--confirm-branch", "main", "--yes"]
        for extra in ([], ["--json"]):
            cli(f"rollback{extra}", "rollback", run_id, *restore, *extra, *state_dir)
        assert state.restores, written["rollback stderr"]
        files = {
            str(path): path.read_bytes()
            for path in (world.root / ".orchestrator").rglob("*")
            if path.is_file()
        }
    with psycopg.connect(server_url, autocommit=True) as conn:
        # The restore recreated production as the deployer: give it back, so the fixtures
        # can drop the role.
        conn.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO CURRENT_USER").format(sql.Identifier(production))
        )
    found = {
        where: [*leaks(text), *([neon_key] if neon_key in _text(text) else [])]
        for where, text in {**written, **files}.items()
    }
    assert {where: secrets for where, secrets in found.items() if secrets} == {}


def _text(data: str | bytes) -> str:
    return data if isinstance(data, str) else data.decode(errors="replace")


# --------------------------------------------------------------------------- pure helpers


def test_secret_values_of_an_environment() -> None:
    environ = {
        "GITHUB_TOKEN": "ghp_abcdef",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-1234",
        "api_key": "lower-case-name",
        "PGPASSWORD": "pg-password",
        "DATABASE_URL": "postgresql://app:url%20pass@db.example.com/prod",
        "REPLICA": "host=db2 user=app password='conn info'",
        "HOME": "/root",
        "SHORT_KEY": "abc",  # too short to mask without garbling output
        "EMPTY_TOKEN": "",
    }
    assert secret_values(environ) == [
        "aws-secret-1234",
        "lower-case-name",
        "pg-password",
        "ghp_abcdef",
        "conn info",
        "url pass",
    ]


def test_the_redactor_masks_literals_and_passwords() -> None:
    text = "token ghp_abcdef in postgresql://u:pw@h/db and ghp_abcdef again"
    assert Redactor(["ghp_abcdef"]).text(text) == (
        "token *** in postgresql://u:***@h/db and *** again"
    )


@pytest.mark.parametrize(
    "host",
    ["", "localhost", "127.0.0.1", "127.0.1.1", "::1", "[::1]", "/var/run/postgresql", "@abs"],
)
def test_local_hosts(host: str) -> None:
    assert is_local_host(host)


@pytest.mark.parametrize("host", ["db.example.com", "10.0.0.5", "2001:db8::1", "localhost.evil.io"])
def test_remote_hosts(host: str) -> None:
    assert not is_local_host(host)


@pytest.mark.parametrize(
    ("url", "environ", "remote"),
    [
        ("postgresql://u:pw@db.example.com/prod", {}, True),
        ("postgresql://u:pw@db.example.com/prod?sslmode=prefer", {}, True),
        ("postgresql://u:pw@db.example.com/prod?sslmode=require", {}, False),
        ("postgresql://u:pw@db.example.com/prod?sslmode=verify-full", {}, False),
        ("postgresql://u:pw@db.example.com/prod", {"PGSSLMODE": "verify-ca"}, False),
        ("postgresql://u:pw@localhost/prod", {}, False),
        ("postgresql://u:pw@127.0.0.1:5432/prod", {}, False),
        ("postgresql:///prod?host=/var/run/postgresql", {}, False),
        ("postgresql:///prod", {}, False),  # the default unix socket
        ("postgresql:///prod", {"PGHOST": "db.example.com"}, True),
        ("host=localhost,db.example.com dbname=prod", {}, True),  # any remote counts
        ("dbname=prod hostaddr=10.1.2.3", {}, True),
    ],
)
def test_ssl_warning(url: str, environ: dict[str, str], remote: bool) -> None:
    warning = ssl_warning(url, environ)
    assert (warning is not None) == remote
    if warning is not None:
        assert "pw" not in warning.replace("password", "")
        assert warning.splitlines() == [warning]
        assert remote_hosts(url, environ)[0] in warning
        with pytest.raises(UsageError, match="--require-ssl"):
            check_ssl(url, require_ssl=True, environ=environ)
    else:
        assert check_ssl(url, require_ssl=True, environ=environ) is None


def test_platform_tokens_are_written_nowhere(
    tmp_path: Path,
    baseline_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deploy through the GitHub double with the Vercel gate, its show, rollback and
    dry-run: the tokens (one in a variable named like no secret) appear nowhere."""
    from tests.github_double import github_double, protect_branch
    from tests.vercel_double import vercel_double

    written: dict[str, str] = {}
    with (
        build_world(
            tmp_path, baseline_url, at_baseline=True, duration="300ms", interval="100ms"
        ) as world,
        github_double(world.repo.origin, token="ghp_PlatformPelican3318") as (gh_url, github),
        vercel_double(world.repo.origin, token="vcl_PlatformHeron7264") as (vc_url, vercel),
    ):
        vercel.build_seconds = 0.3
        text = world.playbook.read_text().replace(
            "git: {repo: app, remote: origin, source: staging, target: main}",
            "git: {repo: app, remote: origin, source: staging, target: main, via: github_pr,\n"
            f"      github: {{repo: {github.repo}, api_url: '{gh_url}', token_env: RELEASE_GH,\n"
            "               checks_interval: 100ms}}",
        )
        world.playbook.write_text(
            text + f"release: {{timeout: 10s, interval: 100ms, vercel: {{project_id: "
            f"{vercel.project_id}, team_id: {vercel.team_id}, api_url: '{vc_url}'}}}}\n"
        )
        protect_branch(world.repo.origin)
        monkeypatch.setenv("DATABASE_URL", baseline_url)
        monkeypatch.setenv("RELEASE_GH", github.token)
        monkeypatch.setenv("VERCEL_TOKEN", vercel.token)
        state = ["--state-dir", str(world.root / ".orchestrator")]

        def cli(label: str, *argv: str) -> int:
            code = run(list(argv))
            captured = capsys.readouterr()
            written[f"{label} stdout"], written[f"{label} stderr"] = captured.out, captured.err
            return code

        playbook = str(world.playbook)
        assert cli("dry-run", "deploy", "--playbook", playbook, "--dry-run") == 0
        assert cli("deploy", "deploy", "--playbook", playbook, "--yes", "--json", *state) == 0
        run_id = json.loads(written["deploy stdout"])["run_id"]
        assert cli("show", "show", run_id, *state) == 0
        assert cli("rollback", "rollback", run_id, "--yes", *state) == 0
        assert "revert pull request" in written["rollback stdout"]
        # The next release on staging: with the last one merged, pre-flight (and so the
        # dry-run) would ask GitHub nothing.
        from orchestrator.sandbox.release import git

        clone = world.repo.clone
        git(clone, "switch", "--quiet", "-C", "next", "origin/staging")
        (clone / "next.txt").write_text("the next release\n")
        git(clone, "add", "next.txt")
        git(clone, "commit", "--quiet", "-m", "the next release")
        git(clone, "push", "--quiet", "origin", "next:staging")
        # A refused call quotes the API's message, never the token.
        github.failures.append((401, {}))
        monkeypatch.setenv("RELEASE_GH", "ghp_PlatformWrong0042")
        assert cli("dry-run refused", "deploy", "--playbook", playbook, "--dry-run") != 0
    files = {
        str(path): path.read_bytes()
        for path in (world.root / ".orchestrator").rglob("*")
        if path.is_file()
    }
    tokens = [github.token, vercel.token, "ghp_PlatformWrong0042"]
    found = {
        where: [
            t for t in tokens if t.encode() in (data if isinstance(data, bytes) else data.encode())
        ]
        for where, data in {**written, **files}.items()
    }
    assert {where: hit for where, hit in found.items() if hit} == {}


def test_state_json_masks_the_token_values_the_audit_trail_masks(
    tmp_path: Path, baseline_url: str
) -> None:
    """One redactor for the run record and the audit trail: a ``*_TOKEN`` value from the
    environment that ends up in an error (here a migration's) is masked in both."""
    from tests.release_world import add_staging_migration

    token = "tok_MaskedInState4471"
    with build_world(tmp_path, baseline_url, at_baseline=True) as world:
        add_staging_migration(
            world,
            "0012_rejects",
            [f"DO $$ BEGIN RAISE EXCEPTION 'rejected by {token}'; END $$"],
        )
        record = world.deploy(environ={"DATABASE_URL": baseline_url, "DEPLOY_TOKEN": token})
        assert record.state == "failed"
        assert token in (record.halt_reason or "")  # the error really carried it
        state = world.store.record_path(record.run_id).read_text()
        audit = world.store.audit_path(record.run_id).read_text()
        assert "rejected by ***" in state and "rejected by ***" in audit
        assert token not in state and token not in audit
        assert world.store.load(record.run_id).state == "failed"  # still a readable record


@pytest.mark.parametrize("extra", [["--json"], []])
def test_what_a_deploy_prints_masks_what_its_state_json_masks(
    tmp_path: Path,
    baseline_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
) -> None:
    """The record on stdout (--json), the ``reason:`` line, the ``::error`` annotation and
    the job summary go through the run's literal secrets as state.json does: a CI log never
    shows a token the record masks."""
    from tests.release_world import add_staging_migration

    token = "tok_PrintedInLogs5532"
    summary = tmp_path / "summary.md"
    with build_world(tmp_path, baseline_url, at_baseline=True) as world:
        add_staging_migration(
            world, "0012_rejects", [f"DO $$ BEGIN RAISE EXCEPTION 'rejected by {token}'; END $$"]
        )
        monkeypatch.setenv("DATABASE_URL", baseline_url)
        monkeypatch.setenv("DEPLOY_TOKEN", token)
        monkeypatch.setenv("GITHUB_ACTIONS", "true")
        monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
        assert run(world.deploy_argv(*extra)) == 21
        captured = capsys.readouterr()
    shown = {"stdout": captured.out, "stderr": captured.err, "summary": summary.read_text()}
    assert {where: text for where, text in shown.items() if token in text} == {}
    assert all("rejected by ***" in text for text in shown.values())
    assert "::error title=orchestrator deploy failed" in captured.out + captured.err


def test_the_cli_masks_the_secrets_a_run_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """A playbook's token in a variable named like no secret is known to the run's redactor
    only: what the CLI prints masks it too; a secret too short to mask is masked nowhere."""
    from orchestrator import redaction

    monkeypatch.setattr(redaction, "given", set())
    Redactor(["rl_TokenNamedOddly8870", "42"])  # as open_run builds the run's
    assert redaction.shown().text("rl_TokenNamedOddly8870 at 10:42") == "*** at 10:42"


def test_a_password_equal_to_the_database_name_leaves_the_run_resumable(
    tmp_path: Path,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CI service containers log in as postgres/postgres: the password is then the database's
    name and a folder of the run's paths. The record keeps those as they are (masked, a
    resume would refuse the playbook and a rollback look for a dump that is not there)."""
    from psycopg.conninfo import conninfo_to_dict

    name = str(conninfo_to_dict(database_url)["dbname"])
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(name)
            )
        )
    url = with_user(database_url, name, name)
    (tmp_path / name).mkdir()
    try:
        with build_world(tmp_path / name, url, duration="300ms", interval="100ms") as world:
            dumps = world.use_pg_dump()
            monkeypatch.setenv("DATABASE_URL", url)
            state = ["--state-dir", str(world.store.state_dir)]
            world.health.status = 503
            assert run(world.deploy_argv("--json")) == 21
            run_id = json.loads(capsys.readouterr().out)["run_id"]
            world.health.status = 200
            code = run(["resume", run_id, "--yes", *state])
            assert code == 0, capsys.readouterr().err
            record = world.store.load(run_id)
            assert record.database["database_name"] == name
            assert record.playbook == str(world.playbook)
            assert Path(str(record.steps.backup.path)).parent == dumps
            assert Path(str(record.steps.backup.path)).is_file()
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_a_json_report_masks_a_secret_however_json_spells_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from orchestrator.cli.console import print_json
    from orchestrator.redaction import Redactor, given

    secret = 'pa"ss\\wörd-4471'  # JSON escapes the quote, the backslash and the ö
    Redactor([secret])  # as a run's redactor is given the database password
    try:
        print_json({"reason": f"refused by {secret}", "playbook": "/srv/app/release.yaml"})
    finally:
        given.discard(secret)
    document = json.loads(capsys.readouterr().out)
    assert document == {"reason": "refused by ***", "playbook": "/srv/app/release.yaml"}


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # libpq reads an unquoted value up to whitespace: all of it is the password
        ("host=db password=Pr0d&Secret%Tail dbname=app", "host=db password=*** dbname=app"),
        ('host=db password=abc"SECRETTAIL dbname=app', "host=db password=*** dbname=app"),
        ("host=db password='se cret' dbname=app", "host=db password=*** dbname=app"),
        # the end of a JSON string, and the next parameter of a URL's query, end it
        ('{"dsn": "host=db password=s3cret", "n": 1}', '{"dsn": "host=db password=***", "n": 1}'),
        (
            "postgresql://db/app?password=s3cret&sslmode=require",
            "postgresql://db/app?password=***&sslmode=require",
        ),
    ],
)
def test_a_conninfo_password_is_masked_whole(text: str, shown: str) -> None:
    assert redact(text) == shown
