"""Issue 24 case 3, "restore that restores": after a release that added an enum, a column, a
foreign key and an index and dropped a column, ``rollback RUN --restore-database`` puts a
pg_dump-backed production back to exactly the dumped schema and rows, in one transaction,
on a real PostgreSQL with rows, a real git origin and a real health endpoint."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from bench.folders import write_drizzle_folder
from bench.proxy import LatencyProxy
from orchestrator.audit import read_events
from orchestrator.cli import run
from orchestrator.db import runlock
from orchestrator.db.dump_restore import clearing_sql, count_rows, schemas_created
from orchestrator.engine.rollback import rollback_plan
from orchestrator.runs import RunStore
from orchestrator.sandbox.pg import create_database, drop_database, with_dbname
from orchestrator.sandbox.release import HealthServer, build_release_repo, git
from tests.drizzle_helpers import tracking_rows
from tests.lock_holder import table_locked
from tests.release_world import migrate_baseline

USERS = (
    'CREATE TABLE "users" ("id" serial PRIMARY KEY NOT NULL, "email" text NOT NULL, '
    '"legacy_code" text);'
)
ORDERS = (
    'CREATE TABLE "orders" ("id" serial PRIMARY KEY NOT NULL, "user_id" integer NOT NULL, '
    '"total" integer NOT NULL);'
)
RELEASE = [
    "CREATE TYPE \"public\".\"order_status\" AS ENUM('open', 'paid');",
    'ALTER TABLE "orders" ADD COLUMN "status" "order_status" DEFAULT \'open\' NOT NULL;',
    'ALTER TABLE "orders" ADD CONSTRAINT "orders_user_id_users_id_fk" FOREIGN KEY ("user_id") '
    'REFERENCES "public"."users"("id") ON DELETE no action ON UPDATE no action;',
    'CREATE INDEX "orders_user_idx" ON "orders" USING btree ("user_id");',
    'ALTER TABLE "users" DROP COLUMN "legacy_code";',
]


@dataclass
class Shop:
    """Production with 1,000 users and 20,000 orders, its app repo, health and playbook."""

    root: Path
    url: str
    playbook: Path
    store: RunStore

    def argv(self, *args: str) -> list[str]:
        return [*args, "--state-dir", str(self.store.state_dir)]


@pytest.fixture
def shop(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Shop]:
    folder = write_drizzle_folder(
        tmp_path / "migrations",
        [("0000_users", [USERS]), ("0001_orders", [ORDERS]), ("0002_release", RELEASE)],
    )
    repo = build_release_repo(tmp_path / "world", migrations=folder, baseline=2)
    migrate_baseline(database_url, repo)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO users (email, legacy_code) "
            "SELECT 'user' || g || E'@example.com', CASE WHEN g % 3 = 0 THEN E'a\\tb\\nc' END "
            "FROM generate_series(1, 1000) AS g"
        )
        conn.execute(
            "INSERT INTO orders (user_id, total) "
            "SELECT 1 + g % 1000, g FROM generate_series(1, 20000) AS g"
        )
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    health = HealthServer().start()
    playbook = tmp_path / "world" / "release.yaml"
    playbook.write_text(
        f"""name: shop-release
database: {{url_env: DATABASE_URL}}
migrations: {{dir: app/drizzle, schema: drizzle, table: __drizzle_migrations}}
backup: {{kind: pg_dump, path: {dumps}}}
git: {{repo: app, remote: origin, source: staging, target: main}}
monitor:
  duration: 200ms
  interval: 100ms
  http: [{{url: "{health.url}", expect_status: 200, timeout: 10s}}]
retry: {{attempts: 3, initial: 0.2s, max: 1s}}
"""
    )
    monkeypatch.setenv("DATABASE_URL", database_url)
    try:
        yield Shop(tmp_path, database_url, playbook, RunStore(tmp_path / ".orchestrator"))
    finally:
        health.stop()


def schema_of(url: str) -> list[str]:
    """``pg_dump --schema-only`` of the database, without comments and per-dump keys."""
    done = subprocess.run(
        ["pg_dump", "--schema-only", "--no-owner", f"--dbname={url}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [
        line
        for line in done.stdout.splitlines()
        if line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict"))
    ]


def rows_of(url: str) -> dict[str, tuple[int, str]]:
    """Each table's row count and a digest of its rows in key order."""
    with psycopg.connect(url) as conn:
        return {
            table: conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) "
                f"FROM {table} AS t"
            ).fetchone()
            for table in ("users", "orders", "drizzle.__drizzle_migrations")
        }


def restore_database(shop: Shop, run_id: str) -> int:
    """``rollback RUN --yes --restore-database``, confirming production's database name."""
    dbname = str(conninfo_to_dict(shop.url)["dbname"])
    argv = ["rollback", run_id, "--yes", "--restore-database", "--confirm-database", dbname]
    return run(shop.argv(*argv))


def deploy(shop: Shop) -> str:
    assert run(shop.argv("deploy", "--playbook", str(shop.playbook), "--yes")) == 0
    [record] = shop.store.list()
    assert record.state == "succeeded", record.halt_reason
    return record.run_id


def test_restore_database_brings_back_exactly_the_dump(
    shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    schema, rows = schema_of(shop.url), rows_of(shop.url)
    run_id = deploy(shop)
    assert schema_of(shop.url) != schema  # the release changed it
    with psycopg.connect(shop.url, autocommit=True) as conn:  # and production moved on
        conn.execute("INSERT INTO orders (user_id, total, status) VALUES (1, 5, 'paid')")
    capsys.readouterr()

    # The rollback plan's command is the restore itself.
    plan = "\n".join(rollback_plan(shop.store.load(run_id)))
    assert f"orchestrator rollback {run_id} --restore-database" in plan
    assert "pg_restore --clean" not in plan

    code = restore_database(shop, run_id)
    out = capsys.readouterr().out
    assert code == 10, out  # NEEDS_MIGRATION: the release is undone, as before the run
    assert "its schema (pg_dump --schema-only) and every table's rows match the dump" in out
    assert schema_of(shop.url) == schema
    assert rows_of(shop.url) == rows
    assert len(tracking_rows(shop.url)) == 2


def test_the_revalidation_after_a_restore_replays_on_the_playbooks_shadow(
    shop: Shop, server_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A restore run where the deploy's replay is not cached (another machine, a new CI job)
    replays the history on the shadow the playbook names, as the deploy did: not on a local
    cluster the machine may not be able to start."""
    with LatencyProxy.for_url(server_url, round_trip_delay=0.0) as shadow:
        monkeypatch.setenv("SHOP_SHADOW", shadow.url(server_url))
        shop.playbook.write_text(shop.playbook.read_text() + "shadow: {url_env: SHOP_SHADOW}\n")
        run_id = deploy(shop)
        monkeypatch.setenv("ORCHESTRATOR_CACHE_DIR", str(shop.root / "another-machine"))
        before = shadow.traffic().connections
        assert restore_database(shop, run_id) == 10, capsys.readouterr().out
        assert shadow.traffic().connections > before


def test_a_second_restore_is_refused_and_keeps_what_was_written_since_the_first(
    shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = deploy(shop)
    assert restore_database(shop, run_id) == 10
    # Production goes on with the old code: a customer pays.
    with psycopg.connect(shop.url, autocommit=True) as conn:
        conn.execute("INSERT INTO orders (user_id, total) VALUES (1, 987654)")
    schema, rows = schema_of(shop.url), rows_of(shop.url)
    capsys.readouterr()
    code = restore_database(shop, run_id)  # the same command again: a CI re-run, a colleague
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"run {run_id} restored production from its dump already" in err
    assert schema_of(shop.url) == schema and rows_of(shop.url) == rows
    events = read_events(shop.store.audit_path(run_id))
    assert [e["event"] for e in events].count("database_restore_started") == 1


def test_the_restore_also_repairs_what_pg_restore_clean_left_half_done(
    shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command the plan used to print fails after such a release (the issue's case)
    and leaves a partial state; the restore brings back the dump from there too."""
    schema, rows = schema_of(shop.url), rows_of(shop.url)
    run_id = deploy(shop)
    [record] = shop.store.list()
    dump = record.steps.backup.path
    old = subprocess.run(
        ["pg_restore", "--clean", "--if-exists", "--no-owner", f"--dbname={shop.url}", dump],
        capture_output=True,
        text=True,
        check=False,
    )
    assert old.returncode == 1 and "error" in old.stderr
    assert schema_of(shop.url) != schema
    code = restore_database(shop, run_id)
    assert code == 10, capsys.readouterr().out
    assert schema_of(shop.url) == schema
    assert rows_of(shop.url) == rows


def test_a_failed_restore_changes_nothing(shop: Shop, capsys: pytest.CaptureFixture[str]) -> None:
    """One transaction: when the dump's script fails part way (here a role its grants need
    is gone), production keeps the release, nothing half done."""
    with psycopg.connect(shop.url, autocommit=True) as conn:
        conn.execute("CREATE ROLE shop_reader")
        conn.execute("GRANT SELECT ON users TO shop_reader")
    try:
        run_id = deploy(shop)
        with psycopg.connect(shop.url, autocommit=True) as conn:
            conn.execute("REVOKE ALL ON users FROM shop_reader")
            conn.execute("DROP ROLE shop_reader")
        released, rows = schema_of(shop.url), rows_of(shop.url)
        code = restore_database(shop, run_id)
        err = capsys.readouterr().err
        assert code == 21 and "the restore failed and was rolled back, nothing changed" in err
        assert 'role "shop_reader" does not exist' in err
        assert schema_of(shop.url) == released
        assert rows_of(shop.url) == rows
    finally:
        with psycopg.connect(shop.url, autocommit=True) as conn:
            conn.execute("DROP ROLE IF EXISTS shop_reader")


def test_a_restore_waits_for_a_table_no_longer_than_the_lock_timeout(
    shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    """The restore drops every table: behind a report's open transaction it gives up after
    the playbook's lock_timeout (default 500 ms) naming the report, rather than making all
    traffic on the table queue behind it for as long as the report lasts."""
    run_id = deploy(shop)
    released, rows = schema_of(shop.url), rows_of(shop.url)
    with table_locked(shop.url, "orders", "monthly report", mode="ACCESS SHARE"):
        code = restore_database(shop, run_id)
    err = capsys.readouterr().err
    assert code == 21 and "the restore failed and was rolled back, nothing changed" in err
    assert "lock timeout (0.5s; blocked by pid" in err
    assert "monthly report" in err and "ACCESS SHARE on public.orders" in err
    assert schema_of(shop.url) == released
    assert rows_of(shop.url) == rows


def test_a_wrong_name_or_a_changed_dump_restores_nothing(
    shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = deploy(shop)
    released = schema_of(shop.url)
    main = git(shop.root / "world" / "origin.git", "rev-parse", "main")
    code = run(
        shop.argv("rollback", run_id, "--yes", "--restore-database", "--confirm-database", "prod")
    )
    assert code == 2 and "is not the production database" in capsys.readouterr().err
    assert git(shop.root / "world" / "origin.git", "rev-parse", "main") == main  # not reverted
    code = run(shop.argv("rollback", run_id, "--yes", "--restore-database"))
    assert code == 2 and "--confirm-database NAME" in capsys.readouterr().err
    [record] = shop.store.list()
    Path(record.steps.backup.path).write_bytes(b"PGDMP not any more")
    code = restore_database(shop, run_id)
    assert code == 21 and "nothing was restored" in capsys.readouterr().err
    assert schema_of(shop.url) == released
    assert git(shop.root / "world" / "origin.git", "rev-parse", "main") == main  # checked first


def test_a_restore_refuses_a_database_the_run_never_touched(
    shop: Shop, server_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """$DATABASE_URL now reaches another database (on Neon every one is named neondb): the
    restore would replace its tables with the dump's. Refused before anything, whatever name
    is typed; and the playbook read is the run's own, not the file as it is now."""
    run_id = deploy(shop)
    main = git(shop.root / "world" / "origin.git", "rev-parse", "main")
    other = str(conninfo_to_dict(shop.url)["dbname"]) + "_other"
    create_database(server_url, other)
    try:
        other_url = with_dbname(server_url, other)
        with psycopg.connect(other_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE precious AS SELECT 1 AS id")
        monkeypatch.setenv("DATABASE_URL", other_url)
        capsys.readouterr()
        argv = ["rollback", run_id, "--yes", "--restore-database", "--confirm-database", other]
        code = run(shop.argv(*argv))
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "reaches another database than the one the run started on" in err
        assert git(shop.root / "world" / "origin.git", "rev-parse", "main") == main
        # The file now reads the URL from another variable: the restore goes by the run's.
        monkeypatch.setenv("DATABASE_URL", shop.url)
        monkeypatch.setenv("OTHER_URL", other_url)
        text = shop.playbook.read_text()
        shop.playbook.write_text(text.replace("url_env: DATABASE_URL", "url_env: OTHER_URL"))
        assert restore_database(shop, run_id) == 10, capsys.readouterr().out
        with psycopg.connect(other_url) as conn:
            assert conn.execute("SELECT id FROM precious").fetchall() == [(1,)]
    finally:
        drop_database(server_url, other)


def test_no_restore_while_a_deploy_or_migrate_holds_the_database(
    shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = deploy(shop)
    released = schema_of(shop.url)
    main = git(shop.root / "world" / "origin.git", "rev-parse", "main")
    owner = runlock.application_name("20251021T143005Z-dddddd")
    with runlock.RunLock(shop.url, schema="drizzle", table="__drizzle_migrations", owner=owner):
        code = restore_database(shop, run_id)
    err = capsys.readouterr().err
    assert code == 2 and "run 20251021T143005Z-dddddd" in err
    assert schema_of(shop.url) == released
    assert git(shop.root / "world" / "origin.git", "rev-parse", "main") == main  # checked first


# --------------------------------------------------------------------------- pure parts


def test_what_a_dump_script_holds() -> None:
    script = (
        "CREATE SCHEMA drizzle;\n"
        'CREATE SCHEMA "Odd ""name""";\n'
        "-- *not* creating schema, since initdb creates it\n"
        "COPY public.users (id, email) FROM stdin;\n"
        "1\ta\\nb\n"
        "2\tc\n"
        "\\.\n"
        'COPY public."Empty" (id) FROM stdin;\n'
        "\\.\n"
    )
    assert schemas_created(script) == {"drizzle", 'Odd "name"'}
    assert count_rows(script.splitlines(keepends=True)) == {
        "public.users": 2,
        'public."Empty"': 0,
    }


def test_the_clearing_statement_keeps_only_the_schemas_the_dump_does_not_create(
    database_url: str,
) -> None:
    """Run for real: it drops every other user schema and empties the kept one, including
    an extension, a view, a function, an enum and a domain the dump would not know."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA extra")
        conn.execute("CREATE TABLE extra.t (id int)")
        conn.execute("CREATE TYPE mood AS ENUM ('ok')")
        conn.execute("CREATE DOMAIN positive AS int CHECK (VALUE > 0)")
        conn.execute("CREATE TABLE kept (id int PRIMARY KEY, m mood, p positive)")
        conn.execute("CREATE VIEW kept_view AS SELECT id FROM kept")
        conn.execute("CREATE FUNCTION one() RETURNS int LANGUAGE sql AS 'SELECT 1'")
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")
        conn.execute(clearing_sql(["public"]).encode())
        left = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public'"
        ).fetchone()
        schemas = conn.execute(
            "SELECT array_agg(nspname ORDER BY nspname) FROM pg_namespace "
            "WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'"
        ).fetchone()
        types = conn.execute(
            "SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname = 'public'"
        ).fetchone()
        extensions = conn.execute(
            "SELECT count(*) FROM pg_extension WHERE extname = 'pgcrypto'"
        ).fetchone()
    assert left == (0,) and types == (0,) and extensions == (0,)
    assert schemas == (["public"],)
