"""inspect against a real PostgreSQL: tables, columns, types, row estimates, the migration that
created each, and drift both ways against the catalog the tracked migrations build."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from bench.folders import write_drizzle_folder
from orchestrator.cli import run
from orchestrator.db.migrator import MigrateOptions
from orchestrator.db.retry import RetryPolicy
from orchestrator.drizzle.journal import Journal, read_journal
from orchestrator.errors import DatabaseError
from orchestrator.inventory import Inventory
from orchestrator.migrate import migrate_database
from orchestrator.reports import inspect
from orchestrator.sandbox.release import EXAMPLE_MIGRATIONS
from tests.conftest import suite_shadow
from tests.drizzle_helpers import migrate_prefix

SCHEMA, TABLE = "drizzle", "__drizzle_migrations"


def inspect_database(url: str, journal: Journal) -> Inventory:
    return inspect(url, journal, MigrateOptions(), retry=RetryPolicy.none())


def migrated(url: str) -> None:
    migrate_database(
        url,
        read_journal(EXAMPLE_MIGRATIONS),
        MigrateOptions(),
        confirm=lambda _r: True,
        retry=RetryPolicy.none(),
        shadow=suite_shadow(),
    )


def test_tables_columns_types_rows_and_creators(database_url: str) -> None:
    migrated(database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO app_settings (key, value) SELECT g::text, '{}' "
            "FROM generate_series(1, 40) g"
        )
        conn.execute("ANALYZE app_settings")
    inventory = inspect_database(database_url, read_journal(EXAMPLE_MIGRATIONS))
    tables = {f"{t.schema}.{t.name}": t for t in inventory.tables}
    assert f"{SCHEMA}.{TABLE}" not in tables  # the tracking table is not the app's
    settings = tables["public.app_settings"]
    assert settings.created_by == "0009_fat_kulan_gath"
    assert settings.row_estimate == 40
    assert tables["public.kb_articles"].row_estimate is None  # never analysed
    columns = {c.name: c for c in tables["public.case_classifications"].columns}
    assert columns["urgency"].type == "public.case_urgency"  # the app's own: qualified
    assert columns["urgency"].not_null and columns["urgency"].has_default
    assert columns["created_at"].type == "timestamp with time zone"
    assert columns["id"].created_by == "0000_lonely_the_watchers"
    assert columns["assigned_team"].created_by == "0004_dizzy_bloodaxe"
    assert columns["service_offering"].created_by == "0011_cute_skin"
    assert not columns["service_offering"].not_null
    assert tables["public.cmdb_reconciliation_results"].created_by == "0010_new_colleen_wing"
    assert len(tables["public.cmdb_reconciliation_results"].columns) == 20
    assert inventory.drift == ()
    assert inventory.gone == ()


def test_drift_both_ways(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    migrated(database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE TABLE hand_made (id int PRIMARY KEY, note text)")
        conn.execute("ALTER TABLE app_settings ADD COLUMN sneaky int")
        conn.execute("DROP INDEX cmdb_reconciliation_results_status_idx")
        conn.execute("ALTER TABLE case_classifications DROP COLUMN reasoning")
    inventory = inspect_database(database_url, read_journal(EXAMPLE_MIGRATIONS))
    assert inventory.drift == (
        "table public.hand_made (and its 3 columns/constraints)",
        "column public.app_settings.sneaky",
        "index public.hand_made_pkey",
    )
    assert {(g.migration, g.object) for g in inventory.gone} == {
        ("0010_new_colleen_wing", "index public.cmdb_reconciliation_results_status_idx"),
        ("0004_dizzy_bloodaxe", "column public.case_classifications.reasoning"),
    }
    hand_made = next(t for t in inventory.tables if t.name == "hand_made")
    assert hand_made.created_by is None

    code = run(
        [
            "inspect",
            "--database-url",
            database_url,
            "--migrations",
            str(EXAMPLE_MIGRATIONS),
            "--json",
        ]
    )
    document = json.loads(capsys.readouterr().out)
    assert code == 0
    assert document["drift"] == list(inventory.drift)
    assert len(document["gone"]) == 2
    code = run(["inspect", "--database-url", database_url, "--migrations", str(EXAMPLE_MIGRATIONS)])
    out = capsys.readouterr().out
    assert code == 0
    assert "table public.hand_made: rows unknown (never analysed), created by no migration" in out
    assert "0010_new_colleen_wing: index public.cmdb_reconciliation_results_status_idx" in out


def test_untracked_migrations_objects_are_not_reported_gone(
    database_url: str, tmp_path: Path
) -> None:
    # Nothing applied: every table is "missing", but no migration ran, so nothing is gone.
    inventory = inspect_database(database_url, read_journal(EXAMPLE_MIGRATIONS))
    assert inventory.tables == () and inventory.gone == () and inventory.drift == ()


def test_unreachable_database(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://nobody:secret@127.0.0.1:1/none?connect_timeout=1"
    with pytest.raises(DatabaseError):
        inspect_database(url, read_journal(EXAMPLE_MIGRATIONS))
    code = run(
        [
            "inspect",
            "--database-url",
            url,
            "--migrations",
            str(EXAMPLE_MIGRATIONS),
            "--retries",
            "1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 30
    assert "secret" not in err


def test_drift_is_judged_against_the_tracked_migrations_and_their_attributes(
    database_url: str, tmp_path: Path
) -> None:
    journal = read_journal(EXAMPLE_MIGRATIONS)
    migrate_prefix(database_url, EXAMPLE_MIGRATIONS, 9, tmp_path / "prefix")
    with psycopg.connect(database_url) as conn:
        conn.execute("ALTER TABLE case_classifications ALTER COLUMN category DROP NOT NULL")
    inventory = inspect_database(database_url, journal)
    # 0009..0011 are pending: their tables are not "gone", and nothing is "extra".
    assert inventory.gone == () and inventory.drift == ()
    assert len(inventory.changed) == 1
    assert inventory.changed == (
        "column public.case_classifications.category: not_null expected True, found False",
    )


def test_a_folder_the_shadow_cannot_replay_whole_is_inspected_up_to_there(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """0001 names another tool's schema, which the shadow lacks: the tracked 0000 is still
    attributed; once production tracks 0001 too, inspect cannot tell, in one line (exit 30)."""
    migrations = [
        ("0000_todos", ['CREATE TABLE "todos" ("id" serial PRIMARY KEY)']),
        ("0001_profiles", ['CREATE TABLE "profiles" ("id" uuid REFERENCES "auth"."users"("id"))']),
    ]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA auth; CREATE TABLE auth.users (id uuid PRIMARY KEY)")
    migrate_prefix(
        database_url, write_drizzle_folder(tmp_path / "m", migrations), 1, tmp_path / "a"
    )
    journal = read_journal(tmp_path / "m")
    tables = {t.name: t.created_by for t in inspect_database(database_url, journal).tables}
    assert tables["todos"] == "0000_todos"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(journal.migrations[1].statements[0])
        conn.execute(
            f'INSERT INTO {SCHEMA}."{TABLE}" (hash, created_at) VALUES (%s, 1)',
            (journal.migrations[1].hash,),
        )
    argv = ["inspect", "--database-url", database_url, "--migrations", str(tmp_path / "m")]
    assert run(argv) == 30
    err = capsys.readouterr().err
    assert "cannot tell" in err and 'schema "auth" does not exist' in err, err
    assert len(err.strip().splitlines()) == 1
