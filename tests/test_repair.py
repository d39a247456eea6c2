"""repair against a real PostgreSQL: the rows it writes are drizzle's, byte for byte; it refuses
partial states, type mismatches and unconfirmed runs without changing anything; --dry-run
only reads; it waits on the migrator's advisory lock."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
import pytest

from orchestrator.cli import run
from orchestrator.database import validate_database
from orchestrator.db.migrator import MigrateOptions
from orchestrator.db.retry import RetryPolicy
from orchestrator.drizzle.journal import Journal, Migration, read_journal
from orchestrator.errors import PartialStateError, UsageError
from orchestrator.migrate import migrate_database
from orchestrator.repair import repair_database
from orchestrator.sandbox.pg import create_database, drop_database, with_dbname
from orchestrator.validation import MigrationState, Verdict
from tests.conftest import suite_shadow
from tests.drizzle_helpers import (
    FIXTURE_MIGRATIONS,
    expected_rows,
    fixture_migration,
    migrate_prefix,
    prefix_folder,
    run_sql,
    schema_fingerprint,
    tracking_rows,
)

OPTIONS = MigrateOptions()
ONCE = RetryPolicy.none()
RELEASE = ("0009_fat_kulan_gath", "0010_new_colleen_wing", "0011_cute_skin")


def full() -> Journal:
    return read_journal(FIXTURE_MIGRATIONS)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def repair_args(url: str, *extra: str) -> list[str]:
    return ["repair", "--database-url", url, "--migrations", str(FIXTURE_MIGRATIONS), *extra]


def applied_by_hand(url: str, tmp_path: Path) -> None:
    """The runbook's scenario: 0000-0008 migrated, 0009-0011 run by hand, untracked."""
    migrate_prefix(url, FIXTURE_MIGRATIONS, 9, tmp_path / "prefix")
    for tag in RELEASE:
        run_sql(url, fixture_migration(tag))


def test_repair_tracks_hand_applied_migrations_exactly_as_drizzle(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    applied_by_hand(database_url, tmp_path)
    before = validate_database(database_url, full(), OPTIONS, retry=ONCE, shadow=suite_shadow())
    states = {m.tag: m.state for m in before.migrations}
    assert {states[t] for t in RELEASE} == {MigrationState.UNTRACKED_PRESENT}
    assert before.status is Verdict.PARTIAL_MIGRATION

    code, out, err = cli(capsys, *repair_args(database_url, "--yes"))
    assert code == 0, err
    assert "inserted 3 tracking row(s)" in out
    # byte-identical to what the real drizzle-orm migrator wrote for the whole folder
    assert tracking_rows(database_url) == expected_rows()
    after = validate_database(database_url, full(), OPTIONS, retry=ONCE, shadow=suite_shadow())
    assert after.status is Verdict.SAFE
    # and a second repair finds nothing to do
    code, out, _ = cli(capsys, *repair_args(database_url, "--yes"))
    assert code == 0 and "nothing to repair" in out
    assert tracking_rows(database_url) == expected_rows()


def test_repair_creates_drizzles_tracking_table_like_the_migrator(
    database_url: str, server_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for migration in full().migrations:  # everything by hand: no tracking table at all
        run_sql(database_url, migration)
    code, _, err = cli(capsys, *repair_args(database_url, "--yes", "--json"))
    assert code == 0, err
    assert tracking_rows(database_url) == expected_rows()

    # Compare with a database our migrator filled: same table definition, same rows.
    name = f"orch_repair_{uuid.uuid4().hex[:12]}"
    create_database(server_url, name)
    migrated = with_dbname(server_url, name)
    try:
        migrate_database(
            migrated, full(), OPTIONS, confirm=lambda _r: True, retry=ONCE, shadow=suite_shadow()
        )
        assert tracking_rows(migrated) == tracking_rows(database_url)
        assert table_definition(migrated) == table_definition(database_url)
    finally:
        drop_database(server_url, name)


def table_definition(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns "
            "WHERE table_schema = 'drizzle' AND table_name = '__drizzle_migrations' "
            "ORDER BY ordinal_position"
        ).fetchall()


def test_dry_run_shows_rows_and_changes_nothing(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    applied_by_hand(database_url, tmp_path)
    fingerprint = schema_fingerprint(database_url)
    # A database that refuses every write: the dry run only reads, so it still works.
    with psycopg.connect(database_url, autocommit=True) as conn:
        dbname = conn.execute("SELECT current_database()").fetchone()
        assert dbname is not None
        conn.execute(f'ALTER DATABASE "{dbname[0]}" SET default_transaction_read_only = on')
    code, out, err = cli(capsys, *repair_args(database_url, "--dry-run"))
    assert code == 0, err
    assert "would insert 3 tracking row(s)" in out
    for tag in RELEASE:
        assert f"{tag}: hash {fixture_migration(tag).hash}" in out
    code, out, _ = cli(capsys, *repair_args(database_url, "--dry-run", "--json"))
    document = json.loads(out)
    assert [r["created_at"] for r in document["rows"]] == [
        fixture_migration(t).when for t in RELEASE
    ]
    assert document["inserted"] == [] and document["after"] is None
    # the real repair must write, so here it fails: proof the dry run did not try
    assert cli(capsys, *repair_args(database_url, "--yes"))[0] == 30
    assert schema_fingerprint(database_url) == fingerprint


def test_a_tracking_schema_drizzle_does_not_use_is_refused_not_filled(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped schema names a table that is not there while drizzle's is: repair would
    have made a second tracking table in production, and migrate said "partial state"."""
    migrate_database(
        database_url, full(), OPTIONS, confirm=lambda _r: True, retry=ONCE, shadow=suite_shadow()
    )
    fingerprint, rows = schema_fingerprint(database_url), tracking_rows(database_url)
    for command in ("repair", "migrate"):
        code, _, err = cli(
            capsys,
            command,
            "--database-url",
            database_url,
            "--migrations",
            str(FIXTURE_MIGRATIONS),
            "--migrations-schema",
            "drizle",
            "--yes",
        )
        assert code == 2, err
        assert "drizle.__drizzle_migrations is missing but drizzle." in err
    assert schema_fingerprint(database_url) == fingerprint
    assert tracking_rows(database_url) == rows


def test_without_a_terminal_it_needs_yes(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    applied_by_hand(database_url, tmp_path)
    fingerprint = schema_fingerprint(database_url)
    code, _, err = cli(capsys, *repair_args(database_url))
    assert code == 2 and "--yes" in err
    assert schema_fingerprint(database_url) == fingerprint


def test_declined_confirmation_changes_nothing(database_url: str, tmp_path: Path) -> None:
    applied_by_hand(database_url, tmp_path)
    fingerprint = schema_fingerprint(database_url)
    seen: list[int] = []

    def decline(plan: object, _report: object) -> bool:
        seen.append(len(plan.rows))  # type: ignore[attr-defined]
        return False

    with pytest.raises(UsageError, match="not confirmed"):
        repair_database(database_url, full(), OPTIONS, confirm=decline, shadow=suite_shadow())
    assert seen == [3]
    assert schema_fingerprint(database_url) == fingerprint


def test_refuses_partially_present(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    migrate_prefix(database_url, FIXTURE_MIGRATIONS, 9, tmp_path / "prefix")
    run_sql(database_url, fixture_migration("0011_cute_skin"))  # untracked_present: repairable
    first_table = fixture_migration("0009_fat_kulan_gath").statements[0]
    with psycopg.connect(database_url) as conn:  # one of 0009's four tables: partial
        conn.execute(first_table.encode())
    fingerprint = schema_fingerprint(database_url)
    code, _, err = cli(capsys, *repair_args(database_url, "--yes"))
    assert code == 20
    assert "0009_fat_kulan_gath is partially present" in err
    assert "nothing was changed" in err
    assert schema_fingerprint(database_url) == fingerprint


def test_refuses_tracked_missing(database_url: str) -> None:
    migrate_database(
        database_url, full(), OPTIONS, confirm=lambda _r: True, retry=ONCE, shadow=suite_shadow()
    )
    with psycopg.connect(database_url) as conn:
        conn.execute("DROP TABLE cmdb_reconciliation_results")
    fingerprint = schema_fingerprint(database_url)
    with pytest.raises(PartialStateError, match="0010_new_colleen_wing is tracked but its objects"):
        repair_database(
            database_url, full(), OPTIONS, confirm=lambda *_: True, shadow=suite_shadow()
        )
    assert schema_fingerprint(database_url) == fingerprint


def test_refuses_a_tracked_migration_missing_part_of_its_objects(database_url: str) -> None:
    migrate_database(
        database_url, full(), OPTIONS, confirm=lambda _r: True, retry=ONCE, shadow=suite_shadow()
    )
    with psycopg.connect(database_url) as conn:
        conn.execute("ALTER TABLE case_classifications DROP COLUMN service_offering")
    with pytest.raises(PartialStateError, match="0011_cute_skin is tracked but only partially"):
        repair_database(
            database_url, full(), OPTIONS, confirm=lambda *_: True, shadow=suite_shadow()
        )
    assert tracking_rows(database_url) == expected_rows()


def test_refuses_a_migration_edited_after_it_was_applied(
    database_url: str, drizzle_fixture: Path
) -> None:
    migrate_database(
        database_url, full(), OPTIONS, confirm=lambda _r: True, retry=ONCE, shadow=suite_shadow()
    )
    edited = drizzle_fixture / "0011_cute_skin.sql"
    edited.write_text(edited.read_text() + "\n-- reviewed")
    with pytest.raises(PartialStateError, match=r"0011_cute_skin\.sql was edited after it was"):
        repair_database(
            database_url,
            read_journal(drizzle_fixture),
            OPTIONS,
            confirm=lambda *_: True,
            shadow=suite_shadow(),
        )
    assert tracking_rows(database_url) == expected_rows()


def test_refuses_objects_not_as_the_sql_defines_them(database_url: str, tmp_path: Path) -> None:
    migrate_prefix(database_url, FIXTURE_MIGRATIONS, 9, tmp_path / "prefix")
    original = fixture_migration("0010_new_colleen_wing")
    assert '"confidence" real' in original.sql
    altered = original.sql.replace('"confidence" real', '"confidence" text')
    run_sql(database_url, Migration(0, "x", 0, altered, "x"))
    state = validate_database(database_url, full(), OPTIONS, retry=ONCE, shadow=suite_shadow())
    # By names the objects are all there, but one column is not as 0010 defines it.
    assert {m.tag: m.state for m in state.migrations}["0010_new_colleen_wing"] is (
        MigrationState.PARTIALLY_PRESENT
    )
    with pytest.raises(
        PartialStateError,
        match=r"column public\.cmdb_reconciliation_results\.confidence: type expected 'real', "
        r"found 'text'",
    ):
        repair_database(
            database_url, full(), OPTIONS, confirm=lambda *_: True, shadow=suite_shadow()
        )
    assert len(tracking_rows(database_url)) == 9


def test_waits_on_the_migrators_advisory_lock(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    applied_by_hand(database_url, tmp_path)
    with psycopg.connect(database_url, autocommit=True) as holder:
        # The key the migrator takes (orchestrator.db.migrator): a migrate is running.
        holder.execute(
            "SELECT pg_advisory_lock(hashtext('orchestrator.migrate:' || "
            "'drizzle.__drizzle_migrations'))"
        )
        code, _, err = cli(capsys, *repair_args(database_url, "--yes", "--lock-timeout", "200ms"))
        assert code == 30
        assert "lock timeout" in err
        assert len(tracking_rows(database_url)) == 9
    code, _, err = cli(capsys, *repair_args(database_url, "--yes"))
    assert code == 0, err
    assert tracking_rows(database_url) == expected_rows()


SEEDED = {  # the reviewer's folder: a seed between a table and an index on it
    "0000_init": 'CREATE TABLE IF NOT EXISTS "plans" (\n\t"id" serial PRIMARY KEY NOT NULL,\n'
    '\t"name" text NOT NULL,\n\t"price_cents" integer NOT NULL\n);',
    "0001_seed_plans": 'INSERT INTO "plans" ("name", "price_cents") VALUES '
    "('free', 0), ('pro', 1900);",
    "0002_plans_name_idx": 'CREATE UNIQUE INDEX IF NOT EXISTS "plans_name_idx" ON "plans" '
    'USING btree ("name");',
}


def seeded_folder(root: Path) -> Path:
    (root / "meta").mkdir(parents=True)
    entries = [
        {
            "idx": i,
            "version": "7",
            "when": 1700000000000 + 1000 * i,
            "tag": tag,
            "breakpoints": True,
        }
        for i, tag in enumerate(SEEDED)
    ]
    (root / "meta" / "_journal.json").write_text(json.dumps({"version": "7", "entries": entries}))
    for tag, text in SEEDED.items():
        (root / f"{tag}.sql").write_text(text)
    return root


def plans(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT name, price_cents FROM plans ORDER BY id").fetchall()


@pytest.mark.parametrize("migrated", [1, 0])  # 0: the schema was built by `drizzle-kit push`
def test_a_seed_between_hand_run_migrations_gets_no_row_and_migrate_runs_it(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], migrated: int
) -> None:
    folder = seeded_folder(tmp_path / "migrations")
    journal = read_journal(folder)
    if migrated:
        prefix = read_journal(prefix_folder(folder, 1, tmp_path / "prefix"))
        migrate_database(
            database_url,
            prefix,
            OPTIONS,
            confirm=lambda _r: True,
            retry=ONCE,
            shadow=suite_shadow(),
        )
    # By hand, without tracking rows: the coming index (a colleague), and 0000 when pushed.
    for migration in journal.migrations[migrated:]:
        if migration.tag != "0001_seed_plans":
            run_sql(database_url, migration)
    args = ["--database-url", database_url, "--migrations", str(folder)]

    code, out, _ = cli(capsys, "validate", *args, "--json")
    report = json.loads(out)
    # The catalog cannot tell whether the seed ran: it stays pending, decided by its hash.
    assert code == 20, report
    assert [m["state"] for m in report["migrations"]] == [
        "applied" if migrated else "untracked_present",
        "pending",
        "untracked_present",
    ]
    assert "whether 0001_seed_plans ran" in report["recommendation"]

    code, out, err = cli(capsys, "repair", *args, "--yes")
    # Only what the catalog proves is tracked; the seed is left a hole for migrate to fill.
    assert code == 20, err
    assert f"inserted {2 - migrated} tracking row(s)" in out
    assert "whether 0001_seed_plans ran" in out
    assert [row[1] for row in tracking_rows(database_url)] == [
        journal.migrations[0].hash,
        journal.migrations[2].hash,
    ]
    assert plans(database_url) == []

    code, _, err = cli(capsys, "migrate", *args, "--yes")
    assert code == 0, err
    assert plans(database_url) == [("free", 0), ("pro", 1900)]
    assert cli(capsys, "validate", *args)[0] == 0
