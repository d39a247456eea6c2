"""A catalog reads the same whatever the reading session's settings (issue: gate review 3).

PostgreSQL prints defaults, partition bounds, constraints and views by the session's
TimeZone, search_path, DateStyle and IntervalStyle; production and its shadow may differ in
all of them (a database's ``ALTER DATABASE ... SET``, a shadow on an engineer's machine in
another zone, a pg_dump baseline that empties search_path for the rest of the replay). Real
servers throughout: production is a fresh database on the suite's server, its migrations
applied in its own sessions as drizzle applies them; validate, migrate and repair are the
command line's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import psycopg
import pytest

from bench.folders import write_drizzle_folder
from orchestrator.cli import run
from orchestrator.database import folder_history
from orchestrator.db.catalog_reader import CATALOG_QUERY, read_catalog
from orchestrator.db.migrator import MigrateOptions
from orchestrator.drizzle.journal import read_journal
from orchestrator.shadow import ShadowSpec, cache
from tests.drizzle_helpers import run_sql, track, tracking_rows

BP = "\n--> statement-breakpoint\n"

TIMES = [
    (
        "0000_events",
        'CREATE TABLE "events" ("id" bigint NOT NULL, "at" timestamp with time zone NOT NULL) '
        'PARTITION BY RANGE ("at");' + BP + 'CREATE TABLE "events_2024" PARTITION OF "events" '
        "FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2025-01-01 00:00:00+00');",
    ),
    (
        "0001_promos",
        'CREATE TABLE "promos" ("id" serial PRIMARY KEY NOT NULL, "ends_at" timestamp with '
        "time zone DEFAULT '2030-01-01 00:00:00+00' NOT NULL, \"grace\" interval DEFAULT "
        "'1 day 02:00:00' NOT NULL, \"starts_on\" date DEFAULT '2030-01-02' NOT NULL);",
    ),
]

IN_APP = [
    (
        "0000_init",
        'CREATE SCHEMA "app";' + BP + 'CREATE TABLE "app"."users" ("id" serial PRIMARY KEY '
        'NOT NULL, "email" text NOT NULL);' + BP + 'CREATE TABLE "app"."posts" ("id" serial '
        'PRIMARY KEY NOT NULL, "user_id" integer NOT NULL);' + BP + 'ALTER TABLE "app"."posts" '
        'ADD CONSTRAINT "posts_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES '
        '"app"."users"("id") ON DELETE no action ON UPDATE no action;',
    ),
    ("0001_idx", 'CREATE INDEX "posts_user_idx" ON "app"."posts" USING btree ("user_id");'),
]

# What pg_dump writes at the top of a dump, kept as a project's first migration.
BASELINE = """SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);
CREATE TABLE public.users (id integer NOT NULL, email text NOT NULL);
CREATE SEQUENCE public.users_id_seq AS integer START WITH 1 INCREMENT BY 1 NO MINVALUE
    NO MAXVALUE CACHE 1;
ALTER SEQUENCE public.users_id_seq OWNED BY public.users.id;
ALTER TABLE ONLY public.users ALTER COLUMN id SET DEFAULT
    nextval('public.users_id_seq'::regclass);
ALTER TABLE ONLY public.users ADD CONSTRAINT users_pkey PRIMARY KEY (id);
"""
AFTER_BASELINE = [
    ("0000_baseline", BASELINE),
    (
        "0001_posts",
        'CREATE TABLE "public"."posts" ("id" serial PRIMARY KEY NOT NULL, "user_id" integer '
        'NOT NULL REFERENCES "public"."users"("id"));',
    ),
]


def write_folder(target: Path, migrations: list[tuple[str, str]]) -> Path:
    return write_drizzle_folder(target, [(tag, [text]) for tag, text in migrations])


def applied_as_drizzle_would(url: str, folder: Path, count: int) -> None:
    """The first ``count`` migrations run and tracked in production's own sessions (its
    database's settings apply), one after the other as separate drizzle runs would."""
    for migration in read_journal(folder).migrations[:count]:
        run_sql(url, migration)
        track(url, migration)


def set_for_database(url: str, setting: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        name = conn.info.dbname
        conn.execute(f'ALTER DATABASE "{name}" SET {setting}'.encode())


def in_session(url: str, settings: str) -> str:
    """``url`` whose sessions start with ``settings`` (libpq's ``options``)."""
    return url + "?options=" + settings.replace(" ", "%20").replace("=", "%3D")


def validate(url: str, folder: Path, shadow: str, capsys: pytest.CaptureFixture[str]) -> int:
    capsys.readouterr()
    argv = ["validate", "--database-url", url, "--migrations", str(folder)]
    return run([*argv, "--shadow-url", shadow])


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test replays its folder: a history cached by another test read otherwise."""
    monkeypatch.setenv("ORCHESTRATOR_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "shadow"


def test_times_dates_and_intervals_compare_whatever_zone_and_style_each_side_reads_in(
    database_url: str, server_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Production in Berlin with day-first dates, the shadow in New York with SQL-standard
    intervals: the same instants, dates and intervals, so SAFE."""
    folder = write_folder(tmp_path / "drizzle", TIMES)
    set_for_database(database_url, "timezone = 'Europe/Berlin'")
    set_for_database(database_url, "datestyle = 'SQL, DMY'")
    applied_as_drizzle_would(database_url, folder, 2)
    shadow = in_session(server_url, "-c TimeZone=America/New_York -c IntervalStyle=sql_standard")
    code = validate(database_url, folder, shadow, capsys)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "verdict: SAFE" in out


def test_a_timestamp_without_an_offset_is_replayed_as_in_a_utc_session(
    database_url: str, server_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A literal without an offset is fixed when the migration runs, in its session's zone:
    the replay runs as a session in production's zone (here UTC) would, whatever
    the shadow's own zone (a throwaway cluster takes the machine's)."""
    folder = write_folder(
        tmp_path / "drizzle",
        [("0000_promos", 'CREATE TABLE "promos" ("ends_at" timestamptz DEFAULT \'2030-01-01\')')],
    )
    set_for_database(database_url, "timezone = 'UTC'")
    applied_as_drizzle_would(database_url, folder, 1)
    shadow = in_session(server_url, "-c TimeZone=Asia/Tokyo")
    code = validate(database_url, folder, shadow, capsys)
    assert code == 0, capsys.readouterr().out


def test_a_search_path_set_for_production_changes_no_name(
    database_url: str, server_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A DBA set production's search_path so that psql finds the app's tables: the names
    the catalog prints are the same, so validate says what is pending and migrate applies
    it, and repair records a migration someone ran by hand."""
    folder = write_folder(tmp_path / "drizzle", IN_APP)
    set_for_database(database_url, "search_path TO app, public")
    applied_as_drizzle_would(database_url, folder, 1)
    assert validate(database_url, folder, server_url, capsys) == 10, capsys.readouterr().out
    argv = ["--database-url", database_url, "--migrations", str(folder), "--shadow-url"]
    assert run(["migrate", "--yes", *argv, server_url]) == 0, capsys.readouterr()
    assert validate(database_url, folder, server_url, capsys) == 0, capsys.readouterr().out

    # The same release on a database where 0000 was run by hand and never tracked: repair
    # judges it twice, alone and again in its own transaction, and records it (0001 is
    # then pending: exit 10).
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA app CASCADE; DROP SCHEMA drizzle CASCADE")
    run_sql(database_url, read_journal(folder).migrations[0])
    assert run(["repair", "--yes", *argv, server_url]) == 10, capsys.readouterr()
    assert [row[0] for row in tracking_rows(database_url)] == [1]


def test_a_baseline_that_empties_search_path_is_read_as_production_is(
    database_url: str, server_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pg_dump baseline sets search_path to '' for the rest of the replay's session: the
    reads after it print the names as production's do (where it ran in a drizzle run of its
    own), so with the baseline applied the rest is pending, not partial."""
    folder = write_folder(tmp_path / "drizzle", AFTER_BASELINE)
    applied_as_drizzle_would(database_url, folder, 1)
    code = validate(database_url, folder, server_url, capsys)
    assert code == 10, capsys.readouterr().out


def test_a_read_in_the_callers_transaction_prints_alike_and_gives_back_its_settings(
    database_url: str,
) -> None:
    """Read in a transaction whose zone and path differ, the catalog prints as read alone;
    the transaction keeps the zone and path it had, for what it does next."""
    tracking = {"schema": "drizzle", "table": "__drizzle_migrations"}
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE promos (ends_at timestamptz DEFAULT '2030-01-01 00:00+00')")
        alone = read_catalog(conn, **tracking, lock_timeout=5)
    with psycopg.connect(database_url) as conn, conn.transaction():
        conn.execute("SET LOCAL TimeZone = 'Asia/Tokyo'; SET LOCAL search_path = pg_temp")
        assert read_catalog(conn, **tracking).objects == alone.objects
        settings = "SELECT current_setting('TimeZone'), current_setting('search_path')"
        assert conn.execute(settings).fetchone() == ("Asia/Tokyo", "pg_temp")


def test_a_history_cached_before_the_reads_set_their_settings_is_not_used(
    database_url: str,
    server_url: str,
    tmp_path: Path,
    fresh_cache: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The previous release cached histories printed by the shadow session's settings, keyed
    by its query alone (format 2): after the upgrade, such a history (here with the serial's
    sequence named without its schema, as it printed it) is not taken for this release's,
    and the folder is replayed."""
    folder = write_folder(
        tmp_path / "drizzle", [("0000_users", 'CREATE TABLE "users" ("id" serial PRIMARY KEY);')]
    )
    applied_as_drizzle_would(database_url, folder, 1)
    history = folder_history(read_journal(folder), MigrateOptions(), ShadowSpec(server_url))
    printed_before = json.loads(
        json.dumps(history.to_json()).replace("public.users_id_seq", "users_id_seq")
    )
    assert printed_before != history.to_json()
    for stored in fresh_cache.glob("*.json"):
        stored.unlink()
    kind = f"history {('drizzle', '__drizzle_migrations')!r}"
    digest = hashlib.sha256()
    for part in (kind, "2", str(history.server_major), CATALOG_QUERY, *history.hashes):
        digest.update(part.encode() + b"\0")
    cache.store(fresh_cache, digest.hexdigest(), printed_before)
    code = validate(database_url, folder, server_url, capsys)
    assert code == 0, capsys.readouterr().out
