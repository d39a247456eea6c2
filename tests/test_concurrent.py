"""Non-transactional migrations (issue 15): CREATE INDEX CONCURRENTLY and ADD VALUE used
later, refused without --allow-concurrent, applied statement by statement with it; a
failure leaves no INVALID index and no tracking row; a killed run resumes. Real PostgreSQL,
real concurrent sessions, a real killed process."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from pytest import CaptureFixture

from bench.folders import write_drizzle_folder
from orchestrator.analysis.nontransactional import nontransactional_statements
from orchestrator.cli import run
from orchestrator.db.migrator import MigrateOptions
from orchestrator.db.retry import RetryPolicy
from orchestrator.drizzle.journal import Migration, read_journal
from orchestrator.migrate import migrate_database
from orchestrator.sandbox.pg import EmbeddedPostgres
from orchestrator.validation import Verdict
from tests.conftest import suite_shadow
from tests.drizzle_helpers import tracking_rows
from tests.pg_urls import with_user
from tests.test_drizzle_real import drizzle_migrate, drizzle_node  # noqa: F401 (a fixture)

ITEMS = 'CREATE TABLE "items" ("id" serial PRIMARY KEY NOT NULL, "sku" text);'
FILL = "INSERT INTO items (sku) SELECT 'sku-' || g FROM generate_series(1, 2000) AS g;"
INDEX = 'CREATE INDEX CONCURRENTLY IF NOT EXISTS "items_sku_idx" ON "items" ("sku");'


def concurrent_folder(tmp_path: Path, index: str = INDEX) -> Path:
    return write_drizzle_folder(
        tmp_path / "drizzle",
        [
            ("0000_items", [ITEMS, FILL]),
            ("0001_index", [index]),
            ("0002_note", ['ALTER TABLE "items" ADD COLUMN "note" text;']),
        ],
    )


def migrate(url: str, folder: Path, *extra: str) -> int:
    argv = ["migrate", "--yes", "--migrations", str(folder), "--database-url", url]
    return run([*argv, "--retries", "1", *extra])


def index_state(url: str, name: str) -> bool | None:
    """True valid, False INVALID, None absent."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = %s",
            (name,),
        ).fetchone()
    return None if row is None else bool(row[0])


def invalid_indexes(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE NOT i.indisvalid"
        ).fetchall()
    return [r[0] for r in rows]


def schemas(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}


def test_without_the_opt_in_migrate_refuses_before_changing_anything(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = concurrent_folder(tmp_path)
    code = migrate(database_url, folder)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "0001_index.sql:1: CREATE INDEX CONCURRENTLY" in err
    assert "--allow-concurrent" in err and len(err.splitlines()) == 1
    assert "drizzle" not in schemas(database_url)  # nothing written, not even the table


def test_lint_reports_an_error_and_a_warning_with_the_opt_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = concurrent_folder(tmp_path)
    assert run(["lint", "--migrations", str(folder)]) == 21
    out = capsys.readouterr().out
    assert "0001_index.sql:1: error concurrently-in-transaction" in out
    assert run(["lint", "--migrations", str(folder), "--allow-concurrent"]) == 0
    assert "0001_index.sql:1: warning concurrently-in-transaction" in capsys.readouterr().out


def test_a_concurrent_index_is_built_and_tracked_as_drizzle_would(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = concurrent_folder(tmp_path)
    assert migrate(database_url, folder, "--allow-concurrent") == 0, capsys.readouterr().err
    assert index_state(database_url, "items_sku_idx") is True
    rows = tracking_rows(database_url)
    assert len(rows) == 3 and [r[2] for r in rows] == sorted(r[2] for r in rows)
    # A second run finds nothing to do.
    assert migrate(database_url, folder, "--allow-concurrent") == 0
    assert "nothing to apply" in capsys.readouterr().out
    assert len(tracking_rows(database_url)) == 3


def test_drizzles_migrator_does_nothing_after_our_concurrent_migrate(
    database_url: str,
    tmp_path: Path,
    drizzle_node: Path,  # noqa: F811
) -> None:
    folder = concurrent_folder(tmp_path)
    assert migrate(database_url, folder, "--allow-concurrent") == 0
    before = tracking_rows(database_url)
    drizzle_migrate(drizzle_node, database_url, folder)
    assert tracking_rows(database_url) == before


def test_a_failed_concurrent_build_leaves_no_invalid_index_and_no_row(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Production's rows break the build; the shadow's replay (no rows) does not foresee it.
    first = write_drizzle_folder(tmp_path / "first", [("0000_items", [ITEMS])])
    assert migrate(database_url, first) == 0
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO items (sku) VALUES ('twice'), ('twice')")
    unique = 'CREATE UNIQUE INDEX CONCURRENTLY "items_one_sku" ON "items" ("sku");'
    folder = write_drizzle_folder(
        tmp_path / "drizzle", [("0000_items", [ITEMS]), ("0001_index", [unique])]
    )
    code = migrate(database_url, folder, "--allow-concurrent")
    err = capsys.readouterr().err
    assert code == 21
    assert "dropped INVALID index public.items_one_sku" in err
    assert "the tracking row was not written" in err
    assert (
        invalid_indexes(database_url) == [] and index_state(database_url, "items_one_sku") is None
    )
    assert len(tracking_rows(database_url)) == 1  # 0000 applied before; 0001 not


def test_an_enum_value_used_later_in_the_release_is_committed_first(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_drizzle_folder(
        tmp_path / "enum",
        [
            ("0000_mood", ["CREATE TYPE mood AS ENUM ('ok');", "CREATE TABLE t (m mood);"]),
            ("0001_glad", ["ALTER TYPE mood ADD VALUE 'glad';"]),
            ("0002_use", ["INSERT INTO t VALUES ('glad');"]),
        ],
    )
    assert [f.tag for f in nontransactional_statements([("a", ["x"])])] == []
    assert migrate(database_url, folder) == 2
    assert "0001_glad.sql:1: ALTER TYPE ... ADD VALUE 'glad', used by 0002_use.sql" in (
        capsys.readouterr().err
    )
    assert migrate(database_url, folder, "--allow-concurrent") == 0
    assert len(tracking_rows(database_url)) == 3


@pytest.mark.parametrize("shadow_user", ["superuser", "createrole"])
def test_a_role_production_has_is_created_on_the_shadow_outside_a_transaction_too(
    shadow_user: str,
    server_url: str,
    own_cluster: EmbeddedPostgres,
    tmp_path: Path,
    capsys: CaptureFixture[str],
) -> None:
    """Production has the role a non-transactional migration grants to after its concurrent
    build, and a policy of the next migration names; the shadow (another server) lacks it.
    Its replay creates the role outside a transaction as inside one, and goes on from the
    statement that named it: the build before it, committed, is not run twice (it has no
    IF NOT EXISTS). A shadow user that is no superuser (a Neon role) replays without event
    triggers, so no second replay on a fresh database can hide a wrong first one."""
    role, user = (f"{kind}_{secrets.token_hex(4)}" for kind in ("app_user", "shadow_ci"))
    production = own_cluster.url()
    with psycopg.connect(production, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" NOLOGIN'.encode())
    shadow = server_url
    if shadow_user == "createrole":
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'CREATE ROLE "{user}" LOGIN CREATEDB CREATEROLE'.encode())
        shadow = with_user(server_url, user)
    folder = write_drizzle_folder(
        tmp_path / "drizzle",
        [
            ("0000_items", [ITEMS, FILL]),
            (
                "0001_index",
                [
                    'CREATE INDEX CONCURRENTLY "items_sku_idx" ON "items" ("sku");',
                    f'GRANT SELECT ON "items" TO "{role}";',
                ],
            ),
            (
                "0002_policy",
                [
                    'ALTER TABLE "items" ENABLE ROW LEVEL SECURITY;',
                    f'CREATE POLICY "app reads" ON "items" FOR SELECT TO "{role}" USING (true);',
                ],
            ),
        ],
    )
    validate = ["validate", "--json", "--migrations", str(folder), "--database-url", production]
    try:
        assert run([*validate, "--shadow-url", shadow]) == 10
        before = json.loads(capsys.readouterr().out)
        assert [f["code"] for f in before["findings"]] == ["tracking_table_missing"]
        code = migrate(production, folder, "--allow-concurrent", "--shadow-url", shadow)
        assert code == 0 and "applied 3 migration(s)" in capsys.readouterr().out
        assert run([*validate, "--shadow-url", shadow]) == 0
        assert json.loads(capsys.readouterr().out)["status"] == "SAFE"
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"; DROP ROLE IF EXISTS "{user}"'.encode())
    assert index_state(production, "items_sku_idx") is True
    with psycopg.connect(production) as conn:
        granted = "SELECT has_table_privilege(%s, 'items', 'SELECT')"
        assert conn.execute(granted, (role,)).fetchone() == (True,)


def test_allow_concurrent_refuses_a_release_the_shadow_refused_before_touching_production(
    database_url: str, tmp_path: Path, capsys: CaptureFixture[str]
) -> None:
    """A release with a concurrent build skips the one-transaction check; the shadow's replay
    (statement by statement, as --allow-concurrent runs it) is then the answer: a statement
    PostgreSQL refused there stops migrate before the build reaches production."""
    folder = concurrent_folder(tmp_path, index=INDEX + "\n--> statement-breakpoint\nSELECT 1/0;")
    assert migrate(database_url, folder, "--allow-concurrent") == 21
    said = capsys.readouterr().err
    assert "migration would fail in 0001_index, statement 2" in said
    assert "division by zero" in said and "nothing was changed" in said
    assert tracking_rows(database_url) == []  # not even 0000, which runs before the build
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass('items')").fetchone() == (None,)


REINDEX = 'REINDEX INDEX CONCURRENTLY "items_sku_idx";'


class OfferedAgain(Exception):
    """The migrator came back to a migration it had already started: it would loop."""


def test_a_concurrent_text_the_journal_repeats_is_applied_for_its_own_entry(
    database_url: str, tmp_path: Path
) -> None:
    # The same REINDEX after a later bulk load: the same text, so the same hash, as 0002's.
    entries = [
        ("0000_items", [ITEMS, FILL]),
        ("0001_index", [INDEX]),
        ("0002_reindex", [REINDEX]),
        ("0003_more", [FILL]),
        ("0004_reindex", [REINDEX]),
    ]
    assert (
        migrate(
            database_url, write_drizzle_folder(tmp_path / "a", entries[:3]), "--allow-concurrent"
        )
        == 0
    )
    journal = read_journal(write_drizzle_folder(tmp_path / "b", entries))
    offered: list[str] = []

    def once(migration: Migration) -> None:
        if migration.tag in offered:
            raise OfferedAgain(f"{migration.tag} again after {offered}")
        offered.append(migration.tag)

    result = migrate_database(
        database_url,
        journal,
        MigrateOptions(allow_concurrent=True),
        confirm=lambda _r: True,
        retry=RetryPolicy.none(),
        on_migration=once,
        shadow=suite_shadow(),
    )
    assert [a.tag for a in result.applied] == ["0003_more", "0004_reindex"]
    assert result.after.status is Verdict.SAFE, result.after.findings
    hashes = [h for _id, h, _c in tracking_rows(database_url)]
    assert len(hashes) == 5 and hashes.count(journal.by_tag("0004_reindex").hash) == 2


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "orchestrator"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "orchestrator.cli"]


def wait_for_build(database_url: str, child: subprocess.Popen[bytes]) -> int:
    """The backend pid of ``child``'s CREATE INDEX CONCURRENTLY, once it is building and its
    (still INVALID) index is in the catalog: the build shows in the progress view a moment
    before its first transaction commits the index's catalog row. Fails if ``child`` ends
    first; no clock."""
    with psycopg.connect(database_url, autocommit=True) as probe:
        while True:
            row = probe.execute(
                # production's own database: the shadow, on the same server, replays the
                # build in databases of its own
                "SELECT pid FROM pg_stat_progress_create_index WHERE datname = current_database()"
            ).fetchone()
            if row is not None and index_state(database_url, "items_sku_idx") is False:
                return int(row[0])
            if child.poll() is not None:
                _out, err = child.communicate()
                pytest.fail(f"migrate exited {child.returncode} before the build: {err!r}")
            time.sleep(0.05)


def test_killed_in_the_middle_of_a_concurrent_build_resumes_and_converges(
    database_url: str, tmp_path: Path
) -> None:
    folder = concurrent_folder(tmp_path)
    write_drizzle_folder(tmp_path / "first", [("0000_items", [ITEMS, FILL])])
    assert migrate(database_url, tmp_path / "first") == 0
    argv = [*_cli(), "migrate", "--yes", "--allow-concurrent", "--lock-timeout", "60s"]
    argv += ["--migrations", str(folder), "--database-url", database_url]
    with psycopg.connect(database_url) as old:
        # An open snapshot: CREATE INDEX CONCURRENTLY creates the INVALID index, then waits
        # for this transaction to end before it can build it.
        old.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        old.execute("SELECT count(*) FROM items")
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        builder = wait_for_build(database_url, child)
        os.kill(child.pid, signal.SIGKILL)
        child.communicate()
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (builder,))
            while admin.execute(
                "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (builder,)
            ).fetchone():
                time.sleep(0.05)
        old.rollback()
    assert index_state(database_url, "items_sku_idx") is False  # the crash left it INVALID
    assert len(tracking_rows(database_url)) == 1

    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "dropped INVALID index public.items_sku_idx of an interrupted build" in done.stderr
    assert index_state(database_url, "items_sku_idx") is True
    assert invalid_indexes(database_url) == []
    rows = tracking_rows(database_url)
    assert len(rows) == 3 and len({r[1] for r in rows}) == 3
    validated = subprocess.run(
        [
            *_cli(),
            "validate",
            "--json",
            "--migrations",
            str(folder),
            "--database-url",
            database_url,
        ],
        capture_output=True,
        text=True,
    )
    assert json.loads(validated.stdout)["status"] == "SAFE"


def test_lint_warns_of_statements_a_rerun_outside_a_transaction_would_stop_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_drizzle_folder(
        tmp_path / "rerun",
        [
            ("0000_items", [ITEMS]),
            (
                "0001_index",
                [
                    INDEX,  # checked in the catalog: skipped on a rerun
                    'ALTER TABLE "items" ADD COLUMN "note" text;',  # fails when run twice
                    'ALTER TABLE "items" ADD COLUMN IF NOT EXISTS "tag" text;',  # rerun-safe
                    "INSERT INTO items (sku) VALUES ('seed');",  # adds its row again
                ],
            ),
            ("0002_plain", ['ALTER TABLE "items" ADD COLUMN "late" text;']),  # in a transaction
        ],
    )
    assert run(["lint", "--migrations", str(folder), "--allow-concurrent"]) == 0
    out = capsys.readouterr().out
    flagged = [line for line in out.splitlines() if "rerun-unsafe-outside-transaction" in line]
    assert [line.split(": warning")[0] for line in flagged] == [
        "0001_index.sql:3",  # each piece is followed by its breakpoint line
        "0001_index.sql:7",
    ], out
    assert "after a crash half-way the rerun would stop here" in flagged[0]
