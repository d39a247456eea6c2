"""The bad-input corpus: every bad input is refused with one line, the documented exit code,
and nothing changed — database (catalog and tracking rows), git (every ref of the clone and
of origin, HEAD, the working tree) and run records (the state dir, file by file).

Exit codes: 2 for bad input (files, playbook, URL syntax, repository, run ids); 30 when the
database cannot be reached or read (wrong password, unknown host, unknown database, a
tracking table we cannot read). A remote host without ``sslmode=require`` is a warning line,
not an error, unless ``--require-ssl``.

Cases already covered elsewhere are not repeated here: malformed JSON, a missing .sql, a
bad port, a non-PostgreSQL URL and an empty ``--database-url`` for ``validate``
(tests/test_cli_core.py); a misspelt top-level key, a missing ``url_env`` variable and a
missing repository path for ``deploy`` (tests/test_deploy.py); run-id lookups in the store
(tests/test_runs.py).

``15 minutes`` is a valid duration by design (``parse_duration``; tests/test_playbook.py
accepts ``2 minutes``), so the duration cases use a misspelt unit and a unit-less tail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from orchestrator.cli import run
from orchestrator.sandbox.pg import EmbeddedPostgres, create_database, with_dbname
from orchestrator.sandbox.release import EXAMPLE_MIGRATIONS, copy_migrations, git
from tests.pg_urls import with_user
from tests.test_deploy import World, build_world
from tests.test_resume import REPO_ROOT

LAST = "0011_cute_skin"  # a migration of the release, pending in the world's database


@pytest.fixture
def world(tmp_path: Path, baseline_url: str) -> Iterator[World]:
    """Production at the pre-release state (0000-0008 applied), origin, clone, playbook."""
    with build_world(
        tmp_path, baseline_url, at_baseline=True, duration="200ms", interval="100ms"
    ) as built:
        yield built


# --------------------------------------------------------------------------- what "unchanged" is


def git_state(repo: Path) -> list[str]:
    """Every ref with its commit, what HEAD points at, and the working tree's status."""
    refs = git(repo, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
    head = git(repo, "symbolic-ref", "HEAD")
    bare = git(repo, "rev-parse", "--is-bare-repository") == "true"
    status = "" if bare else git(repo, "status", "--porcelain", "--ignored")
    return [*refs, f"HEAD -> {head}", status]


def database_state(url: str) -> list[str]:
    """Every user column and every tracking row, whatever shape the tracking table has."""
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "SELECT concat_ws('.', table_schema, table_name, column_name, data_type) "
            "FROM information_schema.columns "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
        ).fetchall()
        rows: list[tuple[object, ...]] = []
        if conn.execute("SELECT to_regclass('drizzle.__drizzle_migrations')").fetchone() != (None,):
            rows = conn.execute(
                "SELECT row_to_json(t)::text FROM drizzle.__drizzle_migrations t ORDER BY 1"
            ).fetchall()
    return [str(c[0]) for c in columns] + [str(r[0]) for r in rows]


def state_dir_contents(state: Path) -> dict[str, bytes | None]:
    """Every run directory and every file under the state dir, with its bytes.

    An empty ``runs/`` is not a run record: the deploy creates it to prove the state dir is
    writable before it starts, whatever happens next.
    """
    if not state.exists():
        return {}
    return {
        str(p.relative_to(state)): p.read_bytes() if p.is_file() else None
        for p in sorted(state.rglob("*"))
        if p.is_file() or p.parent != state
    }


@dataclass(frozen=True)
class Everything:
    """What a refused command must leave exactly as it found it."""

    database: list[str]
    clone: list[str]
    origin: list[str]
    runs: dict[str, bytes | None]


def everything(world: World) -> Everything:
    return Everything(
        database=database_state(world.database_url),
        clone=git_state(world.repo.clone),
        origin=git_state(world.repo.origin),
        runs=state_dir_contents(world.root / ".orchestrator"),
    )


# --------------------------------------------------------------------------- the cases


Prepare = Callable[[World], list[str]]


@dataclass(frozen=True)
class Case:
    """A bad input: ``prepare`` breaks the world and returns the command line to run."""

    id: str
    prepare: Prepare
    code: int
    needle: str  # what the one line must say
    env: Callable[[World], dict[str, str]] = field(default=lambda w: {})


def state_args(world: World) -> list[str]:
    return ["--state-dir", str(world.root / ".orchestrator")]


def release_folder(world: World) -> Path:
    """A copy of the release's full migrations folder (0000-0011), outside the repo."""
    folder = world.root / "release-migrations"
    if not folder.exists():
        copy_migrations(EXAMPLE_MIGRATIONS, folder)
    return folder


def edit_journal(folder: Path, edit: Callable[[dict[str, object]], object]) -> None:
    path = folder / "meta" / "_journal.json"
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document, indent=2))


def entries(document: dict[str, object]) -> list[dict[str, object]]:
    value = document["entries"]
    assert isinstance(value, list)
    return value


def validate(folder: Path) -> list[str]:
    return ["validate", "--migrations", str(folder)]


def migrate(folder: Path) -> list[str]:
    return ["migrate", "--migrations", str(folder), "--yes"]


def dry_run(world: World) -> list[str]:
    return ["deploy", "--playbook", str(world.playbook), "--dry-run", *state_args(world)]


def deploy(world: World) -> list[str]:
    return ["deploy", "--playbook", str(world.playbook), "--yes", *state_args(world)]


def on_staging(world: World, change: Callable[[Path], None]) -> None:
    """Commit ``change`` of the clone's migrations folder to staging and push it."""
    clone = world.repo.clone
    git(clone, "switch", "staging")
    change(world.repo.migrations)
    git(clone, "add", "-A")
    git(clone, "commit", "-m", "A broken migrations folder")
    git(clone, "push", "origin", "staging")
    git(clone, "switch", "main")


def edit_playbook(world: World, old: str, new: str) -> None:
    text = world.playbook.read_text()
    assert old in text, old
    world.playbook.write_text(text.replace(old, new, 1))


def append_sql(folder: Path, tag: str, text: str | bytes) -> None:
    path = folder / f"{tag}.sql"
    data = text.encode() if isinstance(text, str) else text
    path.write_bytes(path.read_bytes() + data)


def appended(text: str | bytes, command: Callable[[Path], list[str]]) -> Prepare:
    """A case: ``text`` appended to a copy of the release's last migration, then ``command``
    (validate or migrate) on that copy."""

    def prepare(world: World) -> list[str]:
        folder = release_folder(world)
        append_sql(folder, LAST, text)
        return command(folder)

    return prepare


def appended_on_staging(text: str | bytes, command: Callable[[World], list[str]]) -> Prepare:
    """A case: ``text`` appended to the release's last migration on staging, then ``command``
    (the dry run or the deploy)."""

    def prepare(world: World) -> list[str]:
        on_staging(world, lambda f: append_sql(f, LAST, text))
        return command(world)

    return prepare


# -- migrations folders


def truncated_journal_on_staging(world: World) -> list[str]:
    def cut(folder: Path) -> None:
        path = folder / "meta" / "_journal.json"
        path.write_text(path.read_text()[:150])

    on_staging(world, cut)
    return dry_run(world)


def entries_not_a_list(world: World) -> list[str]:
    folder = release_folder(world)
    edit_journal(folder, lambda d: d.update(entries={"0000": "x"}))
    return validate(folder)


def entry_without_sql_for_migrate(world: World) -> list[str]:
    folder = release_folder(world)
    (folder / "0010_new_colleen_wing.sql").unlink()
    return migrate(folder)


def duplicate_idx(world: World) -> list[str]:
    folder = release_folder(world)
    edit_journal(folder, lambda d: entries(d)[11].update(idx=10))
    return validate(folder)


def duplicate_tag(world: World) -> list[str]:
    folder = release_folder(world)
    edit_journal(folder, lambda d: entries(d).append({**entries(d)[11], "idx": 12}))
    return migrate(folder)


def idx_not_a_number(world: World) -> list[str]:
    folder = release_folder(world)
    edit_journal(folder, lambda d: entries(d)[3].update(idx="3"))
    return validate(folder)


def when_negative(world: World) -> list[str]:
    folder = release_folder(world)
    edit_journal(folder, lambda d: entries(d)[11].update(when=-1))
    return migrate(folder)


def byte_order_mark(world: World) -> list[str]:
    folder = release_folder(world)
    path = folder / f"{LAST}.sql"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    return migrate(folder)


DOES_NOT_PARSE = "\n--> statement-breakpoint\nALTER TABLE app_settings ADD COLUMN;"

# A COMMIT ends the migration's transaction: what ran before it stays committed, even in the
# dry run's rehearsal on production, whose rollback undoes only what came after it.
COMMIT_HALFWAY = (
    '\n--> statement-breakpoint\nCOMMIT;\n--> statement-breakpoint\nCREATE TABLE "b" ("id" int);'
)


def migrations_is_a_file(world: World) -> list[str]:
    return validate(world.playbook)


# -- playbooks


def nested_unknown_key(world: World) -> list[str]:
    edit_playbook(world, "failures_allowed:", "failures_alowed:")
    return dry_run(world)


def wrong_type(world: World) -> list[str]:
    edit_playbook(world, "failures_allowed: 0", "failures_allowed: two")
    return deploy(world)


def misspelt_duration_unit(world: World) -> list[str]:
    edit_playbook(world, "lock_timeout: 5s", "lock_timeout: 15 minuets")
    return deploy(world)


def lock_timeout_without_unit(world: World) -> list[str]:
    edit_playbook(world, "lock_timeout: 5s", "lock_timeout: 500")
    return deploy(world)


def lock_timeout_without_unit_for_migrate(world: World) -> list[str]:
    return [*migrate(world.repo.migrations), "--lock-timeout", "500"]


def rehearsal_lock_timeout_without_unit(world: World) -> list[str]:
    return [*dry_run(world), "--rehearsal-lock-timeout", "1"]


def neon_branch_without_neon_block(world: World) -> list[str]:
    edit_playbook(world, "backup: {kind: restore_point}", "backup: {kind: neon_branch}")
    return deploy(world)


def neon_api_url_not_a_url(world: World) -> list[str]:
    edit_playbook(world, "retry:", "neon: {project_id: p, api_url: console.neon.tech}\nretry:")
    return dry_run(world)


def duration_without_unit_tail(world: World) -> list[str]:
    edit_playbook(world, "duration: 200ms", "duration: 1h30")
    return dry_run(world)


def tab_indented_playbook(world: World) -> list[str]:
    edit_playbook(world, "  interval:", "\tinterval:")
    return dry_run(world)


def require_ssl_not_a_boolean(world: World) -> list[str]:
    edit_playbook(world, "{url_env: DATABASE_URL}", "{url_env: DATABASE_URL, require_ssl: maybe}")
    return deploy(world)


# -- connection strings


def empty_url_for_deploy(world: World) -> list[str]:
    return deploy(world)


def empty_url_for_migrate(world: World) -> list[str]:
    return migrate(world.repo.migrations)


def bogus_sslmode(world: World) -> list[str]:
    return [*migrate(world.repo.migrations), "--database-url", world.database_url + "?sslmode=on"]


def unknown_host(world: World) -> list[str]:
    url = "postgresql://deployer:pw@no-such-host.invalid:5432/prod?sslmode=require"
    return [*migrate(world.repo.migrations), "--database-url", url, "--retries", "1"]


def unknown_database(world: World) -> list[str]:
    url = with_dbname(world.database_url, "no_such_database")
    return [*migrate(world.repo.migrations), "--database-url", url, "--retries", "1"]


def unknown_database_for_deploy(world: World) -> list[str]:
    return deploy(world)


def remote_without_ssl_required(world: World) -> list[str]:
    url = remote_alias(world.database_url)
    return [*validate(world.repo.migrations), "--database-url", url, "--require-ssl"]


def remote_alias(url: str) -> str:
    """``url`` named by a remote-looking host, still reaching the local server (hostaddr)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    params.update(host="db.prod.example.com", hostaddr="127.0.0.1")
    return make_conninfo("", **params)


# -- tracking table


def tracking_without_hash_column(world: World) -> list[str]:
    with psycopg.connect(world.database_url) as conn:
        conn.execute("ALTER TABLE drizzle.__drizzle_migrations RENAME COLUMN hash TO sha256")
    return migrate(world.repo.migrations)


def tracking_created_at_not_a_number(world: World) -> list[str]:
    with psycopg.connect(world.database_url) as conn:
        conn.execute("ALTER TABLE drizzle.__drizzle_migrations ALTER COLUMN created_at TYPE text")
        conn.execute("UPDATE drizzle.__drizzle_migrations SET created_at = 'yesterday'")
    return migrate(world.repo.migrations)


# -- repositories and runs


def not_a_git_repo(world: World) -> list[str]:
    plain = world.root / "plain"
    shutil.copytree(world.repo.migrations, plain / "drizzle")
    edit_playbook(world, "repo: app", "repo: plain")
    edit_playbook(world, "dir: app/drizzle", "dir: plain/drizzle")
    return deploy(world)


def missing_source_branch(world: World) -> list[str]:
    edit_playbook(world, "source: staging", "source: release/2025-10-21")
    return deploy(world)


def missing_target_branch(world: World) -> list[str]:
    edit_playbook(world, "target: main", "target: production")
    return dry_run(world)


def resume_unknown_run(world: World) -> list[str]:
    world.deploy()  # a run exists; the id asked for is another
    return ["resume", "20250101T000000Z-abcdef", "--yes", *state_args(world)]


def resume_finished_run(world: World) -> list[str]:
    record = world.deploy()
    assert record.state == "succeeded", record.halt_reason
    return ["resume", record.run_id, "--yes", *state_args(world)]


def resume_in_an_empty_state_dir(world: World) -> list[str]:
    return ["resume", "20250101T000000Z-abcdef", "--yes", *state_args(world)]


def no_url(world: World) -> dict[str, str]:
    return {"DATABASE_URL": ""}


def url_of_missing_database(world: World) -> dict[str, str]:
    return {"DATABASE_URL": with_dbname(world.database_url, "no_such_database")}


CASES = [
    Case("truncated-journal", truncated_journal_on_staging, 2, "malformed JSON"),
    Case("entries-not-a-list", entries_not_a_list, 2, "'entries' must be a list"),
    Case("entry-without-sql", entry_without_sql_for_migrate, 2, "has no file"),
    Case("duplicate-idx", duplicate_idx, 2, "idx 10 is also 0010_new_colleen_wing's"),
    Case("duplicate-tag", duplicate_tag, 2, "appears twice"),
    Case("idx-not-a-number", idx_not_a_number, 2, "'idx' must be a non-negative integer"),
    Case("when-negative", when_negative, 2, "'when' must be a non-negative integer"),
    Case(
        "non-utf8-sql",
        appended(
            b"\n--> statement-breakpoint\nCOMMENT ON TABLE app_settings IS 'caf\xe9';", validate
        ),
        2,
        f"{LAST}.sql:6: not UTF-8 text",
    ),
    Case(
        "non-utf8-sql-deploy",
        appended_on_staging(b"\n-- r\xe9sum\xe9\n", deploy),
        2,
        "not UTF-8 text",
    ),
    Case("byte-order-mark", byte_order_mark, 2, "byte-order mark"),
    Case(
        "sql-does-not-parse",
        appended(DOES_NOT_PARSE, migrate),
        2,
        f"{LAST}.sql:6: statement 5 does not parse",
    ),
    Case(
        "sql-does-not-parse-validate",
        appended(DOES_NOT_PARSE, validate),
        2,
        f"{LAST}.sql:6: statement 5 does not parse",
    ),
    Case(
        "sql-does-not-parse-dry-run",
        appended_on_staging("\n--> statement-breakpoint\nCREAT TABLE x();", dry_run),
        2,
        'near "CREAT"',
    ),
    Case(
        "breakpoint-splits-statement",
        appended(
            '\n--> statement-breakpoint\nCREATE TABLE audit_log (\n\t"id" serial PRIMARY KEY,'
            '\n--> statement-breakpoint\n\t"at" timestamp DEFAULT now()\n);',
            validate,
        ),
        2,
        f"{LAST}.sql:8: a --> statement-breakpoint splits statement 5",
    ),
    Case(
        "breakpoint-in-do-block",
        appended_on_staging(
            "\n--> statement-breakpoint\nDO $$ BEGIN\n  PERFORM 1;\n"
            "--> statement-breakpoint\n  PERFORM 2;\nEND $$;",
            dry_run,
        ),
        2,
        f"{LAST}.sql:8: a --> statement-breakpoint splits statement 5",
    ),
    Case(
        "commit-in-migration-dry-run",
        appended_on_staging(COMMIT_HALFWAY, dry_run),
        2,
        f"{LAST}.sql:6: COMMIT controls the migration's transaction",
    ),
    Case(
        "end-begin-in-migration-deploy",
        appended_on_staging("\n--> statement-breakpoint\nEND; BEGIN;", deploy),
        2,
        f"{LAST}.sql:6: END controls the migration's transaction",
    ),
    Case(
        "savepoint-in-migration-migrate",
        appended("\n--> statement-breakpoint\nSELECT 1;\n  -- why\n  SAVEPOINT s;", migrate),
        2,
        f"{LAST}.sql:8: SAVEPOINT s controls the migration's transaction",
    ),
    Case(
        "rollback-in-migration-validate",
        appended("\n--> statement-breakpoint\nROLLBACK", validate),
        2,
        f"{LAST}.sql:6: ROLLBACK controls the migration's transaction",
    ),
    Case("migrations-is-a-file", migrations_is_a_file, 2, "not a directory"),
    Case("nested-unknown-key", nested_unknown_key, 2, "did you mean 'failures_allowed'"),
    Case("wrong-type", wrong_type, 2, "monitor.failures_allowed: expected a whole number"),
    Case("misspelt-duration", misspelt_duration_unit, 2, "invalid duration '15 minuets'"),
    Case("duration-unit-missing", duration_without_unit_tail, 2, "invalid duration '1h30'"),
    Case(
        "lock-timeout-without-unit",
        lock_timeout_without_unit,
        2,
        "release.yaml:4: migrations.lock_timeout: 500 needs a unit: 500ms (as PostgreSQL reads "
        "it) or 500s?",
    ),
    Case(
        "lock-timeout-without-unit-migrate",
        lock_timeout_without_unit_for_migrate,
        2,
        "error: --lock-timeout: 500 needs a unit: 500ms (as PostgreSQL reads it) or 500s?",
    ),
    Case(
        "rehearsal-lock-timeout-without-unit",
        rehearsal_lock_timeout_without_unit,
        2,
        "error: --rehearsal-lock-timeout: 1 needs a unit: 1ms (as PostgreSQL reads it) or 1s?",
    ),
    Case(
        "neon-branch-without-neon",
        neon_branch_without_neon_block,
        2,
        "release.yaml:5: backup.kind: neon_branch needs the neon: block (project_id, ...)",
    ),
    Case(
        "neon-api-url-not-a-url",
        neon_api_url_not_a_url,
        2,
        "neon.api_url: must be an http:// or https:// URL with a host, got 'console.neon.tech'",
    ),
    Case("tab-indented-playbook", tab_indented_playbook, 2, "indent with spaces"),
    Case("require-ssl-not-bool", require_ssl_not_a_boolean, 2, "database.require_ssl"),
    Case("empty-url-deploy", empty_url_for_deploy, 2, "$DATABASE_URL is not set", no_url),
    Case("empty-url-migrate", empty_url_for_migrate, 2, "no database URL", no_url),
    Case("bogus-sslmode", bogus_sslmode, 2, "sslmode 'on' is not one of"),
    Case("remote-host-require-ssl", remote_without_ssl_required, 2, "--require-ssl"),
    Case("unknown-host", unknown_host, 30, "no-such-host.invalid"),
    Case("unknown-database", unknown_database, 30, '"no_such_database" does not exist'),
    Case(
        "unknown-database-deploy",
        unknown_database_for_deploy,
        30,
        '"no_such_database" does not exist',
        url_of_missing_database,
    ),
    Case("tracking-lacks-hash", tracking_without_hash_column, 30, "lacks drizzle's columns"),
    Case(
        "tracking-created-at-text",
        tracking_created_at_not_a_number,
        30,
        "drizzle.__drizzle_migrations",
    ),
    Case("not-a-git-repo", not_a_git_repo, 2, "not a git work tree"),
    Case("missing-source-branch", missing_source_branch, 2, "release/2025-10-21"),
    Case("missing-target-branch", missing_target_branch, 2, "production"),
    Case("resume-unknown-run", resume_unknown_run, 2, "unknown run id"),
    Case("resume-finished-run", resume_finished_run, 2, "already succeeded"),
    Case("resume-empty-state-dir", resume_in_an_empty_state_dir, 2, "20250101T000000Z-abcdef"),
]


def case_id(case: object) -> str:
    return case.id if isinstance(case, Case) else str(case)


def refused(
    world: World,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    env: dict[str, str],
) -> tuple[int, str, str, Everything, Everything]:
    """Run ``argv`` against the world; return code, stdout, stderr, state before and after."""
    monkeypatch.setenv("DATABASE_URL", world.database_url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    before = everything(world)
    code = run(argv)
    out, err = capsys.readouterr()
    return code, out, err, before, everything(world)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_bad_input_is_one_line_with_its_exit_code_and_changes_nothing(
    world: World,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    case: Case,
) -> None:
    argv = case.prepare(world)
    code, out, err, before, after = refused(world, capsys, monkeypatch, argv, case.env(world))
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in out + err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), lines[0]
    assert case.needle in lines[0], lines[0]
    assert code == case.code, (code, lines[0])
    assert after.database == before.database
    assert after.clone == before.clone
    assert after.origin == before.origin
    assert after.runs == before.runs


def test_remote_host_without_sslmode_is_one_warning_line_and_the_command_runs(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = remote_alias(world.database_url)
    argv = [*validate(world.repo.migrations), "--database-url", url]
    code, out, err, before, after = refused(world, capsys, monkeypatch, argv, {})
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("warning: ") and "db.prod.example.com" in lines[0]
    assert "sslmode=prefer" in lines[0]
    assert code == 0 and "SAFE" in out  # it still connected and validated
    assert after == before

    # With sslmode=require in the URL there is nothing to warn about (the server has no TLS,
    # so the connection itself fails: 30, and not a warning).
    code, out, err, _, _ = refused(
        world, capsys, monkeypatch, [*argv[:-1], url + " sslmode=require", "--retries", "1"], {}
    )
    assert "warning" not in err and code == 30


@pytest.fixture
def password_cluster(own_cluster: EmbeddedPostgres) -> Iterator[EmbeddedPostgres]:
    """A cluster of our own that checks passwords (scram) for the role ``deployer``."""
    with psycopg.connect(own_cluster.url(), autocommit=True) as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute("CREATE ROLE deployer LOGIN SUPERUSER PASSWORD 'right-horse-battery'")
        hba = conn.execute("SHOW hba_file").fetchone()
        assert hba is not None
        path = Path(str(hba[0]))
        path.write_text("host all deployer 127.0.0.1/32 scram-sha-256\n" + path.read_text())
        conn.execute("SELECT pg_reload_conf()")
    create_database(own_cluster.url(), "prod")
    yield own_cluster


def test_wrong_password_is_30_with_one_line_and_changes_nothing(
    password_cluster: EmbeddedPostgres,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    right = with_user(password_cluster.url("prod"), "deployer", "right-horse-battery")
    wrong = with_user(password_cluster.url("prod"), "deployer", "wrong-horse-battery")
    with build_world(tmp_path, right, duration="200ms", interval="100ms") as world:
        for argv in (
            [*migrate(world.repo.migrations), "--database-url", wrong, "--retries", "1"],
            deploy(world),
        ):
            code, out, err, before, after = refused(
                world, capsys, monkeypatch, argv, {"DATABASE_URL": wrong}
            )
            lines = [line for line in err.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("error: "), err
            assert "password authentication failed" in lines[0]
            assert "wrong-horse-battery" not in out + err
            assert code == 30
            assert after == before


# --------------------------------------------------------------------------- unreadable folders


def run_bound_by_permissions(args: list[str]) -> subprocess.CompletedProcess[str]:
    """``orchestrator ARGS`` in a process that file permissions bind. Root reads whatever they
    say: as root, it runs without the two capabilities that let it (an unprivileged user may
    not be able to run this Python at all: it can live under /root)."""
    root = os.geteuid() == 0
    unbound = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"] if root else []
    return subprocess.run(
        [*unbound, sys.executable, "-m", "orchestrator.cli", *args],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("locked", "named"),
    [
        (lambda folder: folder.parent, lambda folder: folder),
        (lambda folder: folder / "meta", lambda folder: folder / "meta" / "_journal.json"),
        (lambda folder: folder / f"{LAST}.sql", lambda folder: folder / f"{LAST}.sql"),
    ],
    ids=["folder", "meta", "migration"],
)
def test_an_unreadable_migrations_folder_is_one_line_exit_2_and_changes_nothing(
    world: World, locked: Callable[[Path], Path], named: Callable[[Path], Path]
) -> None:
    folder = world.root / "locked" / "migrations"
    copy_migrations(EXAMPLE_MIGRATIONS, folder)
    before = everything(world)
    mode = locked(folder).stat().st_mode
    locked(folder).chmod(0)
    try:
        done = run_bound_by_permissions([*validate(folder), "--database-url", world.database_url])
    finally:
        locked(folder).chmod(mode)
    assert "Traceback" not in done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [f"error: cannot read {named(folder)}: Permission denied"], done.stderr
    assert done.returncode == 2
    assert everything(world) == before
