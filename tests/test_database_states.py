"""validate and migrate against a real PostgreSQL: every verdict, every per-migration state,
the out-of-order finding, and drizzle compatibility both ways."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from bench.folders import write_drizzle_folder
from orchestrator.cli import run
from orchestrator.database import validate_database
from orchestrator.db.migrator import MigrateOptions, MigrationFailed
from orchestrator.db.retry import RetryPolicy
from orchestrator.drizzle.journal import Journal, read_journal
from orchestrator.errors import PartialStateError
from orchestrator.migrate import migrate_database
from orchestrator.sandbox.pg import drop_database, with_dbname
from orchestrator.validation import MigrationState, ValidationReport, Verdict
from tests.conftest import suite_shadow
from tests.drizzle_helpers import (
    FIXTURE_MIGRATIONS,
    expected_rows,
    fixture_migration,
    prefix_folder,
    run_sql,
    schema_fingerprint,
    track,
    tracking_rows,
)
from tests.lock_holder import table_locked
from tests.pg_urls import with_user

OPTIONS = MigrateOptions()
ONCE = RetryPolicy.none()


def full() -> Journal:
    return read_journal(FIXTURE_MIGRATIONS)


def migrate(url: str, journal: Journal, options: MigrateOptions = OPTIONS):  # type: ignore[no-untyped-def]
    return migrate_database(
        url, journal, options, confirm=lambda _r: True, retry=ONCE, shadow=suite_shadow()
    )


def states(report: ValidationReport) -> dict[str, MigrationState]:
    return {m.tag: m.state for m in report.migrations}


def codes(report: ValidationReport) -> list[tuple[str, str | None]]:
    return [(f.code, f.migration) for f in report.findings]


def apply_prefix(url: str, tmp_path: Path, count: int) -> None:
    migrate(url, read_journal(prefix_folder(FIXTURE_MIGRATIONS, count, tmp_path / f"p{count}")))


def test_empty_database_needs_migration(database_url: str) -> None:
    report = validate_database(database_url, full(), OPTIONS, retry=ONCE, shadow=suite_shadow())
    assert report.status is Verdict.NEEDS_MIGRATION
    assert int(report.exit_code) == 10
    assert set(states(report).values()) == {MigrationState.PENDING}
    assert ("tracking_table_missing", None) in codes(report)
    # The release's journal is out of order even before anything is applied: warn.
    assert ("journal_out_of_order", "0010_new_colleen_wing") in codes(report)


def test_migrate_writes_exactly_drizzles_rows_and_validates_safe(database_url: str) -> None:
    result = migrate(database_url, full())
    assert [a.tag for a in result.applied] == [m.tag for m in full().migrations]
    assert tracking_rows(database_url) == expected_rows()
    assert result.after.status is Verdict.SAFE and int(result.after.exit_code) == 0
    # drizzle-kit's rule: apply entries whose when > newest created_at. Nothing qualifies.
    newest = max(created for _, _, created in tracking_rows(database_url))
    assert all(m.when <= newest for m in full().migrations)
    # And a second run applies nothing.
    again = migrate(database_url, full())
    assert again.applied == ()
    assert tracking_rows(database_url) == expected_rows()


def test_tracking_table_has_drizzles_shape(database_url: str) -> None:
    migrate(database_url, full())
    with psycopg.connect(database_url) as conn:
        columns = conn.execute(
            "SELECT column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema = 'drizzle' "
            "AND table_name = '__drizzle_migrations' ORDER BY ordinal_position"
        ).fetchall()
    assert columns == [
        ("id", "integer", "NO", "nextval('drizzle.__drizzle_migrations_id_seq'::regclass)"),
        ("hash", "text", "NO", None),
        ("created_at", "bigint", "YES", None),
    ]


def test_database_migrated_by_drizzle_validates_safe(database_url: str) -> None:
    # The state the real drizzle-orm migrator left: every file's SQL, and its recorded rows.
    for migration in full().migrations:
        run_sql(database_url, migration)
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE SCHEMA drizzle")
        conn.execute(
            "CREATE TABLE drizzle.__drizzle_migrations "
            "(id SERIAL PRIMARY KEY, hash text NOT NULL, created_at bigint)"
        )
        for _, digest, created in expected_rows():
            conn.execute(
                "INSERT INTO drizzle.__drizzle_migrations (hash, created_at) VALUES (%s, %s)",
                (digest, created),
            )
    report = validate_database(database_url, full(), OPTIONS, retry=ONCE, shadow=suite_shadow())
    assert report.status is Verdict.SAFE, report.findings
    assert report.findings == ()


def test_clean_prefix_needs_migration(database_url: str, tmp_path: Path) -> None:
    apply_prefix(database_url, tmp_path, 9)  # 0000-0008: production before the release
    report = validate_database(database_url, full(), OPTIONS, retry=ONCE, shadow=suite_shadow())
    assert report.status is Verdict.NEEDS_MIGRATION
    assert [m.tag for m in report.pending] == [
        "0009_fat_kulan_gath",
        "0010_new_colleen_wing",
        "0011_cute_skin",
    ]


def test_out_of_order_is_named_and_our_migrate_applies_it(
    database_url: str, tmp_path: Path
) -> None:
    apply_prefix(database_url, tmp_path, 10)  # 0000-0009 applied, as in the fixture README
    report = validate_database(database_url, full(), OPTIONS, retry=ONCE, shadow=suite_shadow())
    assert report.status is Verdict.NEEDS_MIGRATION
    skipped = [f for f in report.findings if f.code == "out_of_order"]
    assert [f.migration for f in skipped] == ["0010_new_colleen_wing"]
    assert "drizzle-kit migrate would skip 0010_new_colleen_wing" in skipped[0].message
    assert "0009_fat_kulan_gath" in skipped[0].message
    assert "drizzle-kit" in report.recommendation

    result = migrate(database_url, full())
    assert [a.tag for a in result.applied] == ["0010_new_colleen_wing", "0011_cute_skin"]
    assert result.after.status is Verdict.SAFE


def test_what_drizzle_leaves_after_skipping_is_partial(database_url: str, tmp_path: Path) -> None:
    # drizzle with 0000-0009 applied, then the whole folder: 0010 skipped, 0011 applied.
    apply_prefix(database_url, tmp_path, 10)
    cute_skin = fixture_migration("0011_cute_skin")
    run_sql(database_url, cute_skin)
    track(database_url, cute_skin)

    report = validate_database(database_url, full(), OPTIONS, retry=ONCE, shadow=suite_shadow())
    assert report.status is Verdict.PARTIAL_MIGRATION and int(report.exit_code) == 20
    assert states(report)["0010_new_colleen_wing"] is MigrationState.PENDING
    assert states(report)["0011_cute_skin"] is MigrationState.APPLIED
    assert ("out_of_order", "0010_new_colleen_wing") in codes(report)

    result = migrate(database_url, full())  # a hole with nothing unreconciled: fill it
    assert [a.tag for a in result.applied] == ["0010_new_colleen_wing"]
    assert result.after.status is Verdict.SAFE


def test_objects_without_tracking_is_untracked_present(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    apply_prefix(database_url, tmp_path, 9)
    run_sql(database_url, fixture_migration("0009_fat_kulan_gath"))  # "relation already exists"
    report = validate_database(database_url, full(), OPTIONS, retry=ONCE, shadow=suite_shadow())
    assert report.status is Verdict.PARTIAL_MIGRATION
    assert states(report)["0009_fat_kulan_gath"] is MigrationState.UNTRACKED_PRESENT
    argv = ["validate", "--database-url", database_url, "--migrations", str(FIXTURE_MIGRATIONS)]
    assert run(argv) == 20
    out = capsys.readouterr().out
    assert "untracked_present" in out and "missing:" not in out  # present, only its row is not

    before = schema_fingerprint(database_url)
    with pytest.raises(PartialStateError, match="0009_fat_kulan_gath is untracked_present") as e:
        migrate(database_url, full())
    assert "`orchestrator repair` tracks what ran by hand" in str(e.value)
    assert schema_fingerprint(database_url) == before


@pytest.mark.parametrize("columns", ["60", "40"])
def test_a_narrow_terminal_cuts_no_cell_of_the_table(
    database_url: str, tmp_path: Path, columns: str
) -> None:
    apply_prefix(database_url, tmp_path, 9)
    run_sql(database_url, fixture_migration("0009_fat_kulan_gath"))
    argv = ["validate", "--database-url", database_url, "--migrations", str(FIXTURE_MIGRATIONS)]
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *argv],
        env={**os.environ, "COLUMNS": columns},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 20, done.stderr
    assert "untracked_present" in done.stdout
    assert "…" not in done.stdout  # other cells fold instead


def test_tracking_without_objects_is_tracked_missing(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    migrate(database_url, full())
    with psycopg.connect(database_url) as conn:
        conn.execute("DROP TABLE cmdb_reconciliation_results")
    report = validate_database(database_url, full(), OPTIONS, retry=ONCE, shadow=suite_shadow())
    assert report.status is Verdict.PARTIAL_MIGRATION
    assert states(report)["0010_new_colleen_wing"] is MigrationState.TRACKED_MISSING
    status = next(m for m in report.migrations if m.tag == "0010_new_colleen_wing")
    assert "table public.cmdb_reconciliation_results" in status.missing_objects
    argv = ["validate", "--database-url", database_url, "--migrations", str(FIXTURE_MIGRATIONS)]
    assert run(argv) == 20
    out = capsys.readouterr().out
    assert "0010_new_colleen_wing missing: table public.cmdb_reconciliation_results" in out


def test_half_a_migration_is_partially_present(database_url: str, tmp_path: Path) -> None:
    apply_prefix(database_url, tmp_path, 9)
    with psycopg.connect(database_url) as conn:  # one of 0009's four tables, by hand
        conn.execute(
            'CREATE TABLE "app_settings" ("key" text PRIMARY KEY NOT NULL, '
            '"value" text NOT NULL, "updated_at" timestamp with time zone DEFAULT now() NOT NULL)'
        )
    report = validate_database(database_url, full(), OPTIONS, retry=ONCE, shadow=suite_shadow())
    assert report.status is Verdict.PARTIAL_MIGRATION
    assert states(report)["0009_fat_kulan_gath"] is MigrationState.PARTIALLY_PRESENT
    # 0011 adds columns to tables that exist: still nothing of it present.
    assert states(report)["0011_cute_skin"] is MigrationState.PENDING


def test_tracked_with_half_its_objects_is_partially_present(database_url: str) -> None:
    migrate(database_url, full())
    with psycopg.connect(database_url) as conn:
        conn.execute('ALTER TABLE "case_classifications" DROP COLUMN "service_offering"')
    report = validate_database(database_url, full(), OPTIONS, retry=ONCE, shadow=suite_shadow())
    assert states(report)["0011_cute_skin"] is MigrationState.PARTIALLY_PRESENT
    status = next(m for m in report.migrations if m.tag == "0011_cute_skin")
    assert status.missing_objects == ("column public.case_classifications.service_offering",)


RESULTS = "case_classification_results"  # no foreign key points at its primary key


@pytest.mark.parametrize(
    ("by_hand", "difference"),
    [
        # A key's index is printed by its constraint: the same index without the
        # constraint is still told apart.
        (
            f'ALTER TABLE "{RESULTS}" DROP CONSTRAINT "{RESULTS}_pkey"; '
            f'CREATE UNIQUE INDEX "{RESULTS}_pkey" ON "{RESULTS}" ("id")',
            f"index public.{RESULTS}_pkey",
        ),
        # Its storage options are the index's own.
        (f'ALTER INDEX "{RESULTS}_pkey" SET (fillfactor = 70)', f"index public.{RESULTS}_pkey"),
        # The same constraint name over another column: the constraint says so.
        (
            f'ALTER TABLE "{RESULTS}" DROP CONSTRAINT "{RESULTS}_pkey", '
            f'ADD CONSTRAINT "{RESULTS}_pkey" PRIMARY KEY ("case_number")',
            f"constraint public.{RESULTS}.{RESULTS}_pkey",
        ),
        # A comment is a property of what it describes.
        (
            f'COMMENT ON COLUMN "{RESULTS}"."id" IS \'by hand\'',
            f"column public.{RESULTS}.id: comment expected none, found 'by hand'",
        ),
        (
            f"COMMENT ON TABLE \"{RESULTS}\" IS 'by hand'",
            f"table public.{RESULTS}: comment expected none, found 'by hand'",
        ),
    ],
)
def test_a_key_or_comment_changed_by_hand_is_drift(
    database_url: str, by_hand: str, difference: str
) -> None:
    migrate(database_url, full())
    with psycopg.connect(database_url) as conn:
        conn.execute(by_hand)  # type: ignore[arg-type]
    report = validate_database(database_url, full(), OPTIONS, retry=ONCE, shadow=suite_shadow())
    assert report.status is Verdict.PARTIAL_MIGRATION
    drift = next(f for f in report.findings if f.code == "schema_drift")
    assert difference in drift.message


def test_a_platforms_extension_and_another_tools_table_are_one_warning(
    database_url: str,
) -> None:
    migrate(database_url, full())
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE EXTENSION hstore")  # dozens of functions, types, operators
        conn.execute("CREATE TABLE public.other_tool (id int PRIMARY KEY)")
    report = validate_database(database_url, full(), OPTIONS, retry=ONCE, shadow=suite_shadow())
    assert report.status is Verdict.SAFE
    [warning] = [f for f in report.findings if f.code != "tracking_table"]
    assert warning.code == "untouched_objects"
    # The extension is one object: its members come with CREATE EXTENSION.
    assert warning.message.startswith("5 object(s) that no migration of this folder creates: ")
    for key in (
        "extension hstore",
        "table public.other_tool",
        "column public.other_tool.id",
        "constraint public.other_tool.other_tool_pkey",
        "index public.other_tool_pkey",
    ):
        assert key in warning.message


def test_unreachable_database_is_error(database_url: str) -> None:
    from orchestrator.sandbox.pg import free_port

    url = f"postgresql://someone:s3cr3t@127.0.0.1:{free_port()}/nowhere"
    report = validate_database(url, full(), OPTIONS, retry=ONCE, shadow=suite_shadow())
    assert report.status is Verdict.ERROR and int(report.exit_code) == 30
    assert "s3cr3t" not in str(report.to_json())
    assert report.checks[0].name == "connectivity" and not report.checks[0].ok


def test_malformed_tracking_table_is_error(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE SCHEMA drizzle")
        conn.execute("CREATE TABLE drizzle.__drizzle_migrations (id int, checksum text)")
    report = validate_database(database_url, full(), OPTIONS, retry=ONCE, shadow=suite_shadow())
    assert report.status is Verdict.ERROR
    assert ("tracking_table_malformed", None) in codes(report)


def test_unreadable_tracking_table_is_error(database_url: str) -> None:
    migrate(database_url, full())
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS orch_reader")
        conn.execute("CREATE ROLE orch_reader LOGIN")
    try:
        reader = with_user(database_url, "orch_reader")
        report = validate_database(reader, full(), OPTIONS, retry=ONCE, shadow=suite_shadow())
        assert report.status is Verdict.ERROR
        assert "permission denied" in report.checks[0].detail
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("DROP OWNED BY orch_reader")
            conn.execute("DROP ROLE orch_reader")


def test_tracking_table_in_public_is_its_own_finding(database_url: str) -> None:
    for migration in full().migrations:
        run_sql(database_url, migration)
        track(database_url, migration, schema="public")
    report = validate_database(database_url, full(), OPTIONS, retry=ONCE, shadow=suite_shadow())
    assert report.status is Verdict.PARTIAL_MIGRATION
    assert ("tracking_table_wrong_schema", None) in codes(report)
    assert set(states(report).values()) == {MigrationState.UNTRACKED_PRESENT}
    tracking_check = next(c for c in report.checks if c.name == "tracking_table")
    assert "public.__drizzle_migrations" in tracking_check.detail and not tracking_check.ok


def test_edited_and_foreign_hashes_are_named(database_url: str, tmp_path: Path) -> None:
    migrate(database_url, full())
    edited = prefix_folder(FIXTURE_MIGRATIONS, 12, tmp_path / "edited")
    path = edited / "0002_assignment_group.sql"
    path.write_text(path.read_text() + "\n-- reviewed\n")
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO drizzle.__drizzle_migrations (hash, created_at) VALUES ('f00d', 1)"
        )
    report = validate_database(
        database_url, read_journal(edited), OPTIONS, retry=ONCE, shadow=suite_shadow()
    )
    assert ("edited_migration", "0002_assignment_group") in codes(report)
    assert ("unknown_hash", None) in codes(report)
    assert states(report)["0002_assignment_group"] is MigrationState.UNTRACKED_PRESENT


def test_failed_statement_rolls_back_the_whole_release(database_url: str, tmp_path: Path) -> None:
    apply_prefix(database_url, tmp_path, 9)
    broken = prefix_folder(FIXTURE_MIGRATIONS, 12, tmp_path / "broken")
    (broken / "0011_cute_skin.sql").write_text('ALTER TABLE "no_such_table" ADD COLUMN "x" text;')
    before = schema_fingerprint(database_url)
    with pytest.raises(MigrationFailed, match="in 0011_cute_skin") as raised:
        migrate(database_url, read_journal(broken))
    assert raised.value.sqlstate == "42P01"
    assert schema_fingerprint(database_url) == before
    assert len(tracking_rows(database_url)) == 9


def test_lock_timeout_stops_a_migration_queued_behind_traffic(
    database_url: str, tmp_path: Path
) -> None:
    apply_prefix(database_url, tmp_path, 11)
    holding = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:
        with psycopg.connect(database_url) as conn:
            conn.execute("LOCK TABLE case_classification_results IN ACCESS SHARE MODE")
            holding.set()
            release.wait()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        while not holding.wait(0.05):  # no clock: it holds the lock, or it fails
            assert holder.is_alive(), "the session never took its lock"
        impatient = MigrateOptions(lock_timeout=0.2, lock_retries=0)
        with pytest.raises(MigrationFailed, match="lock timeout") as raised:
            migrate(database_url, full(), impatient)
        assert raised.value.sqlstate == "55P03"
    finally:
        release.set()
        holder.join()
    assert len(tracking_rows(database_url)) == 11


def test_a_table_locked_by_another_session_is_error_naming_the_holder(
    database_url: str,
) -> None:
    # Printing an index opens its table: a session holding ACCESS EXCLUSIVE on it (a long
    # ALTER TABLE, a migration left idle in its transaction) must not stall validate.
    migrate(database_url, full())
    impatient = MigrateOptions(read_lock_timeout=0.2)
    with table_locked(database_url, "case_classification_results", "nightly rebuild"):
        report = validate_database(
            database_url, full(), impatient, retry=ONCE, shadow=suite_shadow()
        )
    assert report.status is Verdict.ERROR and int(report.exit_code) == 30
    detail = report.checks[0].detail
    assert "nightly rebuild" in detail
    assert "holds ACCESS EXCLUSIVE on public.case_classification_results" in detail
    # The lock gone, the same read goes through.
    assert (
        validate_database(database_url, full(), impatient, retry=ONCE, shadow=suite_shadow()).status
        is Verdict.SAFE
    )


def test_custom_schema_and_table_names(database_url: str) -> None:
    options = MigrateOptions(schema="ops", table="migrations_log")
    result = migrate(database_url, full(), options)
    assert result.after.status is Verdict.SAFE
    with psycopg.connect(database_url) as conn:
        count = conn.execute("SELECT count(*) FROM ops.migrations_log").fetchone()
    assert count == (12,)
    assert tracking_rows(database_url) == []
    # Judged against the default table, the same database has objects without tracking.
    assert validate_database(
        database_url, full(), OPTIONS, retry=ONCE, shadow=suite_shadow()
    ).status is (Verdict.PARTIAL_MIGRATION)


def test_connection_killed_mid_migration_is_retried_after_revalidating(
    database_url: str, tmp_path: Path
) -> None:
    apply_prefix(database_url, tmp_path, 9)
    slow = prefix_folder(FIXTURE_MIGRATIONS, 12, tmp_path / "slow")
    sql_file = slow / "0011_cute_skin.sql"
    sql_file.write_text(sql_file.read_text() + "--> statement-breakpoint\nSELECT pg_sleep(1);")
    killed, finished = threading.Event(), threading.Event()

    def kill_the_migrating_backend() -> None:
        # Production's backend only: the shadow replays the same SQL in databases of its own
        # on this server. Until it is killed or the migrate is over: no clock.
        with psycopg.connect(database_url, autocommit=True) as conn:
            while not finished.is_set():
                row = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'orchestrator' AND query LIKE '%pg_sleep(1)%' "
                    "AND datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchone()
                if row is not None and row[0]:
                    killed.set()
                    return
                finished.wait(0.02)

    killer = threading.Thread(target=kill_the_migrating_backend)
    killer.start()
    retries: list[tuple[int, str]] = []
    result = migrate_database(
        database_url,
        read_journal(slow),
        OPTIONS,
        confirm=lambda _r: True,
        retry=RetryPolicy(attempts=3, initial=0.1, max_wait=0.2),
        on_retry=lambda attempt, error, _wait: retries.append((attempt, str(error))),
        shadow=suite_shadow(),
    )
    finished.set()
    killer.join()
    assert killed.is_set()
    assert len(retries) == 1 and "connection lost during migration" in retries[0][1]
    assert [a.tag for a in result.applied] == [
        "0009_fat_kulan_gath",
        "0010_new_colleen_wing",
        "0011_cute_skin",
    ]
    assert result.after.status is Verdict.SAFE
    hashes = [h for _, h, _ in tracking_rows(database_url)]
    assert len(hashes) == len(set(hashes)) == 12


def test_the_snapshot_is_one_exchange_whatever_the_size(database_url: str) -> None:
    from bench.proxy import LatencyProxy
    from orchestrator.db.backoff import READ_LOCK_TIMEOUT_S
    from orchestrator.db.catalog_reader import read_catalog

    migrate(database_url, full())
    proxy = LatencyProxy.for_url(database_url, round_trip_delay=0.0)
    with proxy, psycopg.connect(proxy.url(database_url), autocommit=True) as conn:
        proxy.reset()
        snapshot = read_catalog(
            conn,
            schema="drizzle",
            table="__drizzle_migrations",
            lock_timeout=READ_LOCK_TIMEOUT_S,  # as production is read: its settings included
        )
        assert proxy.reset().round_trips == 1  # counted on the wire
    assert len(snapshot.tracking_rows) == 12
    assert len(snapshot.objects) > 100


def test_text_reaches_a_latin1_database_as_written(server_url: str, tmp_path: Path) -> None:
    """Migration files are UTF-8 and drizzle's driver says so to the server: a database in
    another encoding stores 'café', not the bytes of its UTF-8 read as LATIN1."""
    name = f"latin1_{os.getpid()}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'LATIN1' "
            "LC_COLLATE 'C' LC_CTYPE 'C'"
        )
    url = with_dbname(server_url, name)
    folder = write_drizzle_folder(
        tmp_path / "drizzle",
        [
            (
                "0000_menu",
                [
                    'CREATE TABLE "menu" ("dish" text DEFAULT \'café\');',
                    "INSERT INTO \"menu\" VALUES ('crème');",
                ],
            )
        ],
    )
    try:
        result = migrate(url, read_journal(folder))
        assert result.after.status is Verdict.SAFE, result.after.findings
        with psycopg.connect(url, client_encoding="UTF8") as conn:
            assert conn.execute('SELECT dish FROM "menu"').fetchall() == [("crème",)]
            inserted = conn.execute('INSERT INTO "menu" DEFAULT VALUES RETURNING dish').fetchone()
            assert inserted == ("café",)
    finally:
        drop_database(server_url, name)
