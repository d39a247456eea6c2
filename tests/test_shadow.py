"""The shadow database: histories replayed on a PostgreSQL that is never production, cached by
the migrations' hashes, and the comparisons validate and migrate make with them.

Real servers throughout: the suite's server is the shadow (a database of its own per
replay) unless a test says otherwise; production is a fresh database on it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
from pathlib import Path

import psycopg
import pytest

from bench.folders import write_drizzle_folder
from bench.proxy import LatencyProxy
from orchestrator.cli import run
from orchestrator.database import folder_history, validate_database
from orchestrator.db.connect import with_application_name
from orchestrator.db.migrator import MigrateOptions, MigrationFailed
from orchestrator.db.retry import RetryPolicy
from orchestrator.drizzle.journal import read_journal
from orchestrator.errors import DatabaseError, PartialStateError, UsageError
from orchestrator.migrate import migrate_database
from orchestrator.sandbox.pg import EmbeddedPostgres
from orchestrator.shadow import ReplayStart, ShadowSpec, cached_history, one_transaction_refusal
from orchestrator.shadow.replay import replay_history
from orchestrator.shadow.server import ShadowServer
from orchestrator.validation import Verdict
from tests.conftest import suite_shadow
from tests.drizzle_helpers import prefix_folder, tracking_rows
from tests.pg_urls import with_user

OPTIONS = MigrateOptions()
ONCE = RetryPolicy.none()
HISTORIES = Path(__file__).resolve().parent / "fixtures" / "histories"
DRIZZLE = ReplayStart()  # drizzle's tracking table, a UTC session
UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"

RLS_FOLDER = [
    (
        "0000_accounts",
        'CREATE TABLE "accounts" ("id" serial PRIMARY KEY NOT NULL, "owner" text NOT NULL);\n'
        "--> statement-breakpoint\n"
        'ALTER TABLE "accounts" ENABLE ROW LEVEL SECURITY;\n'
        "--> statement-breakpoint\n"
        'CREATE POLICY "own rows" ON "accounts" AS PERMISSIVE FOR SELECT TO public '
        "USING (owner = current_user);",
    ),
]


def write_folder(target: Path, migrations: list[tuple[str, str]]) -> Path:
    """A drizzle folder of ``(tag, sql)``, in order."""
    return write_drizzle_folder(target, [(tag, [sql]) for tag, sql in migrations])


def migrate(url: str, folder: Path, shadow: ShadowSpec) -> None:
    migrate_database(
        url, read_journal(folder), OPTIONS, confirm=lambda _r: True, shadow=shadow, retry=ONCE
    )


def execute(url: str, sql: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.encode())


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv("ORCHESTRATOR_CACHE_DIR", str(directory))
    return directory / "shadow"


def test_a_second_validate_needs_no_shadow_and_the_cache_is_private(
    database_url: str, server_url: str, cache: Path, tmp_path: Path
) -> None:
    folder = write_folder(tmp_path / "drizzle", RLS_FOLDER)
    journal = read_journal(folder)
    first = validate_database(database_url, journal, OPTIONS, shadow=ShadowSpec(server_url))
    assert first.status is Verdict.NEEDS_MIGRATION
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    files = list(cache.glob("*.json"))
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    # The shadow named now cannot be reached: the history comes from the cache.
    again = validate_database(database_url, journal, OPTIONS, shadow=ShadowSpec(UNREACHABLE))
    assert again.status is Verdict.NEEDS_MIGRATION
    assert again.replayed_on == first.replayed_on


def test_a_history_is_cached_for_its_tracking_schema(
    database_url: str, server_url: str, cache: Path, tmp_path: Path
) -> None:
    """A snapshot leaves out the tracking schema when it holds nothing else, so the history
    of a folder tracked in ``drizzle`` is not the one of the same folder tracked in public."""
    journal = read_journal(write_folder(tmp_path / "drizzle", RLS_FOLDER))
    shadow = ShadowSpec(server_url)
    assert validate_database(database_url, journal, OPTIONS, shadow=shadow).status is (
        Verdict.NEEDS_MIGRATION
    )
    in_public = MigrateOptions(schema="public")
    report = validate_database(database_url, journal, in_public, shadow=shadow)
    assert report.status is Verdict.NEEDS_MIGRATION, report.findings


def test_a_named_shadow_is_asked_only_its_version_when_the_history_is_cached(
    server_url: str, cache: Path, tmp_path: Path
) -> None:
    """``lint --shadow-url`` has no production to ask the version of: the shadow's own
    version finds the cached history, so a shadow that may not create databases serves."""
    journal = read_journal(write_folder(tmp_path / "drizzle", RLS_FOLDER))
    first = folder_history(journal, OPTIONS, ShadowSpec(server_url))
    execute(server_url, "DROP ROLE IF EXISTS cannot_replay; CREATE ROLE cannot_replay LOGIN")
    try:
        limited = ShadowSpec(with_user(server_url, "cannot_replay"))
        with (
            pytest.raises(DatabaseError, match="permission denied to create database"),
            ShadowServer(limited) as server,
            server.database(),
        ):
            pass
        assert folder_history(journal, OPTIONS, limited).hashes == first.hashes
    finally:
        execute(server_url, "DROP ROLE cannot_replay")


def test_the_report_says_which_server_the_history_was_replayed_on(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_folder(tmp_path / "drizzle", RLS_FOLDER)
    code = run(["validate", "--database-url", database_url, "--migrations", str(folder)])
    out = capsys.readouterr().out
    assert code == 10
    [line] = [line for line in out.splitlines() if line.startswith("history replayed on")]
    assert "PostgreSQL" in line and "shadow server postgresql://" in line


def test_without_a_named_shadow_a_throwaway_local_cluster_is_used(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path
) -> None:
    monkeypatch.delenv("ORCHESTRATOR_SHADOW_URL")
    folder = write_folder(tmp_path / "drizzle", RLS_FOLDER)
    report = validate_database(database_url, read_journal(folder), OPTIONS, shadow=suite_shadow())
    assert report.status is Verdict.NEEDS_MIGRATION
    assert report.replayed_on.endswith("on a throwaway local cluster")
    # Its data directory, as initdb made it, is kept beside the cache for the next one.
    clusters = cache.parent / "clusters"
    assert stat.S_IMODE(clusters.stat().st_mode) == 0o700
    assert len(list(clusters.iterdir())) == 1


def test_a_replay_on_a_named_shadow_connects_to_it_twice(
    server_url: str, cache: Path, tmp_path: Path
) -> None:
    """One connection kept to create and drop the replay's database (and give the server's
    version), one for the replay: each connection to a remote shadow is a handshake."""
    journal = read_journal(write_folder(tmp_path / "drizzle", RLS_FOLDER))
    with LatencyProxy.for_url(server_url, round_trip_delay=0.0) as proxy:
        history = folder_history(journal, OPTIONS, ShadowSpec(proxy.url(server_url)))
        assert proxy.traffic().connections == 2
    assert len(history.deltas) == len(journal.migrations) and history.failure is None
    assert "PostgreSQL 1" in history.server and "shadow server" in history.server


def test_a_replays_database_is_dropped_though_the_kept_connection_was_lost(
    server_url: str,
) -> None:
    name = f"shadow-test-{secrets.token_hex(4)}"
    spec = ShadowSpec(with_application_name(server_url, name))
    exists = "SELECT count(*) FROM pg_database WHERE datname = %s"
    with psycopg.connect(server_url, autocommit=True) as admin:
        with ShadowServer(spec) as server, server.database() as url:
            database = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
            assert admin.execute(exists, (database,)).fetchone() == (1,)
            ended = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (name,),
            ).fetchall()
            assert ended == [(True,)]
            with psycopg.connect(url) as replay:  # the database is usable meanwhile
                replay.execute("CREATE TABLE t (x int)")
        assert admin.execute(exists, (database,)).fetchone() == (0,)


def test_each_database_of_a_local_shadow_starts_empty(
    monkeypatch: pytest.MonkeyPatch, cache: Path
) -> None:
    """A second replay (the fallback to whole reads) gets a database of its own, without
    what the first replay built."""
    monkeypatch.delenv("ORCHESTRATOR_SHADOW_URL")
    tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
    with ShadowServer(ShadowSpec()) as server:
        with server.database() as first, psycopg.connect(first, autocommit=True) as conn:
            assert conn.execute(tables).fetchone() == (0,)
            conn.execute("CREATE TABLE built (x int)")
        with server.database() as second, psycopg.connect(second, autocommit=True) as conn:
            assert second != first
            assert conn.execute(tables).fetchone() == (0,)


def test_a_shadow_url_naming_production_is_refused(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_folder(tmp_path / "drizzle", RLS_FOLDER)
    argv = ["validate", "--database-url", database_url, "--migrations", str(folder)]
    code = run([*argv, "--shadow-url", database_url])
    err = capsys.readouterr().err
    assert code == 2
    assert "names the production database" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("production", "shadow"),
    [
        ("postgresql://app@127.0.0.1:5432/app", "postgresql://app@localhost/app"),
        ("postgresql://app@127.0.0.1/app", "postgresql://app@[::1]:5432/app"),
        ("postgresql://app@localhost/app", "postgresql:///app?host=/var/run/postgresql"),
        ("postgresql://app@db.example.com/app", "postgresql://app@DB.Example.com.:5432/app"),
        # Neon's pooled endpoint is the same compute as its direct one.
        (
            "postgresql://app@ep-cool-1-pooler.us-east-2.aws.neon.tech/neondb",
            "postgresql://app@EP-Cool-1.us-east-2.aws.neon.tech./neondb",
        ),
    ],
)
def test_production_spelled_otherwise_is_refused_as_the_shadow(
    production: str, shadow: str
) -> None:
    with pytest.raises(UsageError, match="names the production database"):
        ShadowSpec(shadow).check_not(production)


def test_a_neon_branch_of_production_serves_as_the_shadow() -> None:
    """Another endpoint (``ep-...``) is another compute: a branch, the documented shadow."""
    production = "postgresql://app@ep-cool-1-pooler.us-east-2.aws.neon.tech/neondb"
    ShadowSpec("postgresql://app@ep-other-2.us-east-2.aws.neon.tech/neondb").check_not(production)


# What PostgreSQL 13 and 14 say of an extension they lack (15 and later: "is not available").
PG14_MISSING_EXTENSION = (
    "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '58P01', MESSAGE = 'could not open extension "
    'control file "/usr/share/postgresql/14/extension/no_such_ext.control": No such file or '
    "directory'; END $$;"
)


@pytest.mark.parametrize(
    "statement", ['CREATE EXTENSION IF NOT EXISTS "no_such_ext";', PG14_MISSING_EXTENSION]
)
def test_a_missing_extension_is_named_with_the_way_out(
    database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    cache: Path,
    statement: str,
) -> None:
    folder = write_folder(tmp_path / "drizzle", [("0000_vectors", statement)])
    code = run(["migrate", "--yes", "--database-url", database_url, "--migrations", str(folder)])
    err = capsys.readouterr().err
    assert code == 2
    assert "'no_such_ext'" in err and "--shadow-url" in err
    assert len(err.strip().splitlines()) == 1
    assert tracking_rows(database_url) == []  # nothing changed on production


def test_a_dropped_policy_or_disabled_row_level_security_is_seen(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_folder(tmp_path / "drizzle", RLS_FOLDER)
    shadow = ShadowSpec(os.environ["ORCHESTRATOR_SHADOW_URL"])
    migrate(database_url, folder, shadow)
    journal = read_journal(folder)
    assert validate_database(database_url, journal, OPTIONS, shadow=shadow).status is Verdict.SAFE

    execute(database_url, 'DROP POLICY "own rows" ON accounts')
    report = validate_database(database_url, journal, OPTIONS, shadow=shadow)
    assert report.status is Verdict.PARTIAL_MIGRATION
    [drift] = [f for f in report.findings if f.code == "schema_drift"]
    assert "policy public.accounts.own rows: missing" in drift.message

    execute(
        database_url,
        'CREATE POLICY "own rows" ON accounts AS PERMISSIVE FOR SELECT TO public '
        "USING (owner = current_user); ALTER TABLE accounts DISABLE ROW LEVEL SECURITY",
    )
    report = validate_database(database_url, journal, OPTIONS, shadow=shadow)
    assert report.status is Verdict.PARTIAL_MIGRATION
    [drift] = [f for f in report.findings if f.code == "schema_drift"]
    assert "table public.accounts: row_level_security expected True, found False" in drift.message


ENUM_RELEASE = [
    (
        "0000_tickets",
        "CREATE TYPE \"status\" AS ENUM('open', 'closed');\n--> statement-breakpoint\n"
        'CREATE TABLE "tickets" ("id" serial PRIMARY KEY, "status" "status" DEFAULT \'open\');',
    ),
    ("0001_status_held", "ALTER TYPE \"status\" ADD VALUE 'held';"),
    ("0002_held_default", 'ALTER TABLE "tickets" ALTER COLUMN "status" SET DEFAULT \'held\';'),
]


def test_migrate_refuses_what_postgres_refuses_in_one_transaction(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_folder(tmp_path / "drizzle", ENUM_RELEASE)
    shadow = ShadowSpec(os.environ["ORCHESTRATOR_SHADOW_URL"])
    migrate(database_url, prefix_folder(folder, 1, tmp_path / "first"), shadow)
    before = tracking_rows(database_url)
    with pytest.raises(UsageError) as refused:
        migrate(database_url, folder, shadow)
    message = str(refused.value)
    assert "0002_held_default" in message and "unsafe use of new value" in message
    assert "55P04" in message and "nothing was changed" in message
    assert tracking_rows(database_url) == before


def test_a_second_migrate_of_a_release_asks_a_named_shadow_nothing(
    database_url: str, tmp_path: Path, cache: Path
) -> None:
    folder = write_folder(tmp_path / "drizzle", ENUM_RELEASE[:2])
    shadow = ShadowSpec(os.environ["ORCHESTRATOR_SHADOW_URL"])
    migrate(database_url, prefix_folder(folder, 1, tmp_path / "first"), shadow)
    journal = read_journal(folder)
    for asked in (shadow, ShadowSpec(UNREACHABLE)):
        # Unreachable the second time: the history and whether the release runs in one
        # transaction come from the cache, and the answer is the same.
        with pytest.raises(UsageError, match="not confirmed"):
            migrate_database(database_url, journal, OPTIONS, confirm=lambda _r: False, shadow=asked)
    # A refusal is no lasting answer (the shadow may lack what production has): asked again.
    refused = write_folder(tmp_path / "enum", ENUM_RELEASE)
    with pytest.raises(UsageError, match="55P04"):
        migrate(database_url, refused, shadow)
    with pytest.raises(DatabaseError, match="cannot connect"):
        migrate(database_url, refused, ShadowSpec(UNREACHABLE))


def test_a_refusal_that_says_more_of_the_shadow_than_of_the_release_is_asked_again(
    server_url: str, tmp_path: Path, cache: Path
) -> None:
    """A timeout (like running out of locks) is the shadow's circumstance, not an answer about
    the release: it is not cached, so a shadow with more room can answer next time."""
    folder = write_folder(
        tmp_path / "drizzle",
        [("0000_slow", "SET LOCAL statement_timeout = '1ms';\nSELECT pg_sleep(1);")],
    )
    pending = read_journal(folder).migrations
    refusal = one_transaction_refusal([], pending, ShadowSpec(server_url), start=DRIZZLE)
    assert refusal is not None and refusal.sqlstate == "57014"
    with pytest.raises(DatabaseError):
        one_transaction_refusal(
            [], pending, ShadowSpec(UNREACHABLE), start=DRIZZLE, major=refusal_major(server_url)
        )


def refusal_major(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.info.server_version // 10000


def test_a_statement_postgres_refuses_is_named_though_the_migration_went_as_one_message(
    database_url: str, tmp_path: Path, cache: Path
) -> None:
    folder = write_folder(
        tmp_path / "drizzle",
        [
            ("0000_a", 'CREATE TABLE "a" ("id" integer);'),
            (
                "0001_b",
                'CREATE TABLE "b" ("id" integer);\n--> statement-breakpoint\n'
                'ALTER TABLE "missing" ADD COLUMN "x" integer;',
            ),
        ],
    )
    shadow = ShadowSpec(os.environ["ORCHESTRATOR_SHADOW_URL"])
    report = validate_database(database_url, read_journal(folder), OPTIONS, shadow=shadow)
    [finding] = [f for f in report.findings if f.code == "replay_failed"]
    assert 'statement: ALTER TABLE "missing"' in finding.message
    with pytest.raises(MigrationFailed, match=r"0001_b, statement 2 \(ALTER TABLE"):
        migrate(database_url, folder, shadow)
    assert tracking_rows(database_url) == []


def test_migrate_refuses_a_partial_state_before_changing_anything(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_folder(
        tmp_path / "drizzle",
        [
            ("0000_a", 'CREATE TABLE "a" ("id" integer);'),
            ("0001_b", 'CREATE TABLE "b" ("id" integer);'),
            ("0002_c", 'CREATE TABLE "c" ("id" integer);'),
        ],
    )
    shadow = ShadowSpec(os.environ["ORCHESTRATOR_SHADOW_URL"])
    migrate(database_url, prefix_folder(folder, 2, tmp_path / "two"), shadow)
    before = tracking_rows(database_url)
    # 0001 edited after it was applied: its tracked hash is no longer the file's.
    (folder / "0001_b.sql").write_text('CREATE TABLE "b" ("id" integer, "note" text);')
    journal = read_journal(folder)
    assert validate_database(database_url, journal, OPTIONS, shadow=shadow).status is (
        Verdict.PARTIAL_MIGRATION
    )
    with pytest.raises(PartialStateError, match="nothing was changed"):
        migrate(database_url, folder, shadow)
    assert tracking_rows(database_url) == before
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass('c')").fetchone() == (None,)


def test_reading_back_only_what_each_migration_touched_builds_every_state(server_url: str) -> None:
    """The replay reads after each migration only what it touched; a replay that reads the
    whole catalog after each one must build the very same states."""
    read_back, whole = states_both_ways(server_url, HISTORIES / "patterns" / "migrations")
    assert read_back == whole
    assert len({json.dumps(s, sort_keys=True) for s in whole}) > 30  # they do differ


def states_both_ways(server_url: str, folder: Path) -> list[list[dict[str, object]]]:
    """The state after each migration of ``folder``, replayed reading back what each touched,
    then replayed reading the whole catalog after each."""
    journal = read_journal(folder)
    states = []
    with ShadowServer(ShadowSpec(server_url)) as server:
        for incremental in (True, False):
            with server.database() as url:
                history = replay_history(
                    url,
                    journal,
                    start=DRIZZLE,
                    server=server.description,
                    incremental=incremental,
                )
            states.append([history.state_after(k) for k in range(len(journal.migrations) + 1)])
    return states


FAR_DEPENDENTS = {
    # an array column's type depends on the array type, which depends on the enum
    "enum-array": [
        (
            "0000_posts",
            "CREATE TYPE \"status\" AS ENUM('a', 'b');\n--> statement-breakpoint\n"
            'CREATE TABLE "posts" ("id" serial PRIMARY KEY, "tags" "status"[]);',
        ),
        ("0001_rename", 'ALTER TYPE "status" RENAME TO "state";'),
        ("0002_title", 'ALTER TABLE "posts" ADD COLUMN "title" text;'),
    ],
    # another schema's column type and foreign key, through the renamed schema's objects
    "schema": [
        (
            "0000_a",
            'CREATE SCHEMA "a";\n--> statement-breakpoint\n'
            'CREATE TYPE "a"."kind" AS ENUM(\'x\');\n--> statement-breakpoint\n'
            'CREATE TABLE "a"."t" ("id" integer PRIMARY KEY);\n--> statement-breakpoint\n'
            'CREATE TABLE "u" ("k" "a"."kind", "t" integer REFERENCES "a"."t");',
        ),
        ("0001_rename", 'ALTER SCHEMA "a" RENAME TO "b";'),
        ("0002_note", 'ALTER TABLE "u" ADD COLUMN "note" text;'),
    ],
    # a column added to the root reaches the partitions of a partition
    "partitions": [
        (
            "0000_m",
            'CREATE TABLE "m" ("region" text, "y" integer) PARTITION BY LIST ("region");'
            "\n--> statement-breakpoint\n"
            'CREATE TABLE "m_eu" PARTITION OF "m" FOR VALUES IN (\'eu\') PARTITION BY LIST ("y");'
            "\n--> statement-breakpoint\n"
            'CREATE TABLE "m_eu_2024" PARTITION OF "m_eu" FOR VALUES IN (2024);',
        ),
        ("0001_note", 'ALTER TABLE "m" ADD COLUMN "note" text;'),
        ("0002_index", 'CREATE INDEX "m_eu_2024_y" ON "m_eu_2024" ("y");'),
    ],
}


@pytest.mark.parametrize("case", sorted(FAR_DEPENDENTS))
def test_a_change_reaches_what_depends_on_it_at_any_distance(
    case: str, tmp_path: Path, server_url: str
) -> None:
    """Renaming an enum renames the type of an array column of it (two dependencies away);
    the read after that migration must see it, not the read after the next one."""
    read_back, whole = states_both_ways(
        server_url, write_folder(tmp_path / "drizzle", FAR_DEPENDENTS[case])
    )
    assert read_back == whole


def test_a_migration_that_deallocates_every_prepared_statement_replays_all_the_same(
    tmp_path: Path, server_url: str
) -> None:
    """The reads after each migration share one plan the server keeps; a migration that
    throws it away (custom SQL may) leaves the replay whole."""
    folder = write_folder(
        tmp_path / "drizzle",
        [
            ("0000_a", 'CREATE TABLE "a" ("id" integer);'),
            ("0001_b", 'CREATE TABLE "b" ("id" integer);'),
            ("0002_c", 'DEALLOCATE ALL; CREATE TABLE "c" ("id" integer);'),
            ("0003_d", 'CREATE TABLE "d" ("id" integer);'),
        ],
    )
    with ShadowServer(ShadowSpec(server_url)) as server, server.database() as url:
        history = replay_history(url, read_journal(folder), start=DRIZZLE, server="")
    assert history.failure is None
    assert [sorted(k for k in history.state_after(n) if k.startswith("table")) for n in (2, 4)] == [
        ["table public.a", "table public.b"],
        ["table public.a", "table public.b", "table public.c", "table public.d"],
    ]


def test_the_history_says_which_migrations_rewrote_a_table(
    tmp_path: Path, server_url: str, cache: Path
) -> None:
    folder = write_folder(
        tmp_path / "drizzle",
        [
            ("0000_t", 'CREATE TABLE "t" ("id" integer, "n" integer);'),
            ("0001_wider", 'ALTER TABLE "t" ALTER COLUMN "n" SET DATA TYPE bigint;'),
            ("0002_note", 'ALTER TABLE "t" ADD COLUMN "note" text;'),
        ],
    )
    history = folder_history(read_journal(folder), OPTIONS, ShadowSpec(server_url))
    assert history.rewrites == ((), ("public.t",), ())


def test_a_pending_migration_naming_roles_the_shadow_lacks_runs_in_one_transaction(
    server_url: str, tmp_path: Path, cache: Path
) -> None:
    """Production has roles a new shadow lacks: the check creates them, as the replay does,
    whether a policy names one or ``SET ROLE`` switches to one."""
    owner, reader = (f"{kind}_{secrets.token_hex(4)}" for kind in ("owner", "reader"))
    folder = write_folder(
        tmp_path / "drizzle",
        [
            (
                "0000_a",
                f'SET ROLE "{owner}";\n--> statement-breakpoint\nRESET ROLE;\n'
                '--> statement-breakpoint\nCREATE TABLE "a" ("id" integer);\n'
                f'--> statement-breakpoint\nCREATE POLICY "r" ON "a" FOR SELECT TO "{reader}" '
                "USING (true);",
            )
        ],
    )
    try:
        assert (
            one_transaction_refusal(
                [], read_journal(folder).migrations, ShadowSpec(server_url), start=DRIZZLE
            )
            is None
        )
    finally:
        execute(server_url, f'DROP ROLE IF EXISTS "{owner}"; DROP ROLE IF EXISTS "{reader}"')


def test_a_migration_that_switches_role_is_replayed_reading_only_what_it_touched(
    server_url: str, tmp_path: Path
) -> None:
    """What each migration touched is recorded whichever role it runs as."""
    owner = f"owner_{secrets.token_hex(4)}"
    folder = write_folder(
        tmp_path / "drizzle",
        [
            (
                "0000_a",
                f'GRANT CREATE ON SCHEMA public TO "{owner}";\n--> statement-breakpoint\n'
                f'SET ROLE "{owner}";\n--> statement-breakpoint\n'
                'CREATE TABLE "a" ("id" integer);\n--> statement-breakpoint\nRESET ROLE;',
            )
        ],
    )
    try:
        with ShadowServer(ShadowSpec(server_url)) as server, server.database() as url:
            history = replay_history(url, read_journal(folder), start=DRIZZLE, server="")
    finally:
        execute(server_url, f'DROP ROLE IF EXISTS "{owner}"')
    assert history.failure is None
    assert "table public.a" in history.state_after(1)


def test_a_history_that_failed_for_the_shadows_moment_is_not_cached(
    server_url: str, tmp_path: Path, cache: Path
) -> None:
    """A statement timeout (out of memory, a full disk) on the shadow is no answer about the
    folder: it is an error of the shadow (cannot tell), not a broken migration, and the next
    validate replays it again."""
    folder = write_folder(
        tmp_path / "drizzle",
        [
            ("0000_a", 'CREATE TABLE "a" ("id" integer);'),
            # What a busy shadow's statement_timeout says, whatever the time it takes.
            (
                "0001_b",
                "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '57014', "
                "MESSAGE = 'canceling statement due to statement timeout'; END $$;",
            ),
        ],
    )
    journal = read_journal(folder)
    with pytest.raises(DatabaseError, match=r"failed replaying 0001_b: canceling .* \[57014\]"):
        folder_history(journal, OPTIONS, ShadowSpec(server_url))
    assert (
        cached_history(
            journal,
            ShadowSpec(server_url),
            start=DRIZZLE,
            production_major=refusal_major(server_url),
        )
        is None
    )


def test_a_shadow_user_that_may_not_create_roles_is_told_what_it_needs(
    database_url: str,
    server_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    cache: Path,
) -> None:
    user, missing = (f"{kind}_{secrets.token_hex(4)}" for kind in ("shadow_ci", "reader"))
    execute(server_url, f'CREATE ROLE "{user}" LOGIN CREATEDB')
    folder = write_folder(
        tmp_path / "drizzle",
        [
            (
                "0000_a",
                'CREATE TABLE "a" ("id" integer);\n--> statement-breakpoint\n'
                f'GRANT SELECT ON "a" TO "{missing}";',
            )
        ],
    )
    argv = ["validate", "--database-url", database_url, "--migrations", str(folder)]
    try:
        code = run([*argv, "--shadow-url", with_user(server_url, user)])
    finally:
        execute(server_url, f'DROP ROLE "{user}"')
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"'{missing}'" in err and "CREATEROLE" in err and len(err.strip().splitlines()) == 1


def test_a_shadow_connection_lost_mid_replay_is_a_transient_database_error(
    server_url: str, tmp_path: Path, cache: Path
) -> None:
    # The shadow's server ends the replay's session, as a restart or a proxy would.
    folder = write_folder(
        tmp_path / "drizzle", [("0000_a", "SELECT pg_terminate_backend(pg_backend_pid());")]
    )
    with pytest.raises(DatabaseError, match=r"^the shadow \(PostgreSQL .*connection") as lost:
        folder_history(read_journal(folder), OPTIONS, ShadowSpec(server_url))
    assert lost.value.transient


def test_a_migration_ending_in_a_line_comment_replays_and_migrates(
    database_url: str, tmp_path: Path, cache: Path
) -> None:
    """drizzle runs a file whose last line is a comment without a newline: so must the
    replay, and the one-transaction check (the end of its message must not be commented out)."""
    folder = write_folder(
        tmp_path / "drizzle",
        [
            ("0000_t", 'CREATE TABLE "t" ("x" integer) -- the table'),
            ("0001_backfill", 'UPDATE "t" SET "x" = 1 -- backfill'),
        ],
    )
    migrate(database_url, folder, suite_shadow())
    report = validate_database(database_url, read_journal(folder), OPTIONS, shadow=suite_shadow())
    assert report.status is Verdict.SAFE, report.findings


def test_a_folder_creating_a_role_replays_again_on_the_same_shadow(
    database_url: str, server_url: str, tmp_path: Path, cache: Path
) -> None:
    """Roles outlive the replay's database: the next replay on that server (a cache miss, or
    the whole-read replay after the fast one) finds the role its CREATE ROLE creates."""
    role = f"admin_{secrets.token_hex(4)}"
    folder = write_folder(
        tmp_path / "drizzle",
        [("0000_a", f'CREATE ROLE "{role}";\n--> statement-breakpoint\nCREATE TABLE "a" (i int);')],
    )
    journal, shadow = read_journal(folder), ShadowSpec(server_url)
    try:
        assert validate_database(database_url, journal, OPTIONS, shadow=shadow).status is (
            Verdict.NEEDS_MIGRATION
        )
        # Production shares the suite's server: it creates the role the replay left there.
        execute(server_url, f'DROP ROLE "{role}"')
        migrate(database_url, folder, shadow)
        shutil.rmtree(cache)
        report = validate_database(database_url, journal, OPTIONS, shadow=shadow)
    finally:
        execute(server_url, f'DROP ROLE IF EXISTS "{role}"')
    assert report.status is Verdict.SAFE, report.findings


def test_a_production_whose_public_schema_was_recreated_is_safe(
    database_url: str, server_url: str, tmp_path: Path, cache: Path
) -> None:
    """The reset that drops and recreates public loses template1's comment on it, which no
    migration set: a warning, not a partial migration. A comment a migration sets counts."""
    folder = write_folder(tmp_path / "drizzle", [("0000_a", 'CREATE TABLE "a" ("id" integer);')])
    execute(database_url, "DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    migrate(database_url, folder, ShadowSpec(server_url))
    report = validate_database(
        database_url, read_journal(folder), OPTIONS, shadow=ShadowSpec(server_url)
    )
    assert report.status is Verdict.SAFE, report.findings
    assert [f.severity for f in report.findings if "public" in f.message] == ["warning"]
    commented = write_folder(
        tmp_path / "commented",
        [
            ("0000_a", 'CREATE TABLE "a" ("id" integer);'),
            ("0001_c", "COMMENT ON SCHEMA public IS 'app';"),
        ],
    )
    execute(database_url, "COMMENT ON SCHEMA public IS NULL")
    assert validate_database(
        database_url, read_journal(commented), OPTIONS, shadow=ShadowSpec(server_url)
    ).status is (Verdict.PARTIAL_MIGRATION)


def test_a_replay_that_failed_for_want_of_something_on_the_shadow_is_replayed_again(
    database_url: str, own_cluster: EmbeddedPostgres, tmp_path: Path, cache: Path
) -> None:
    """A migration may fail for what the shadow server lacks (a tablespace, an OS locale for a
    collation, an extension's newer version): once the server has it, the next validate
    replays the folder again, with the cache left as it was."""
    space = f"fast_{secrets.token_hex(4)}"
    folder = write_folder(
        tmp_path / "drizzle", [("0000_a", f'CREATE TABLE "a" ("id" integer) TABLESPACE "{space}";')]
    )
    journal, shadow = read_journal(folder), ShadowSpec(own_cluster.url())
    first = validate_database(database_url, journal, OPTIONS, shadow=shadow)
    assert [f.code for f in first.findings if f.code == "replay_failed"] == ["replay_failed"]
    location = own_cluster.root / "space"
    location.mkdir()
    owner = own_cluster.datadir.stat()
    os.chown(location, owner.st_uid, owner.st_gid)
    execute(own_cluster.url(), f"CREATE TABLESPACE \"{space}\" LOCATION '{location}'")
    again = validate_database(database_url, journal, OPTIONS, shadow=shadow)
    assert again.status is Verdict.NEEDS_MIGRATION
    assert not [f for f in again.findings if f.code == "replay_failed"], again.findings


def test_a_migration_creating_a_table_as_another_role_replays_as_production_ran_it(
    database_url: str, server_url: str, tmp_path: Path, cache: Path
) -> None:
    """PostgreSQL 15 took CREATE on public from PUBLIC; production granted the role a
    migration switches to what it needs. The shadow, which lacks those grants (and at first
    the role), replays the migration all the same, and migrate and validate agree."""
    role = f"app_{secrets.token_hex(4)}"
    folder = write_folder(
        tmp_path / "drizzle",
        [
            (
                "0000_a",
                f'SET ROLE "{role}";\n--> statement-breakpoint\n'
                'CREATE TABLE "a" ("id" integer);\n--> statement-breakpoint\nRESET ROLE;',
            )
        ],
    )
    journal, shadow = read_journal(folder), ShadowSpec(server_url)
    try:
        # The role is missing from the shadow: the replay creates it.
        first = validate_database(database_url, journal, OPTIONS, shadow=shadow)
        assert first.status is Verdict.NEEDS_MIGRATION, first.findings
        assert not [f for f in first.findings if f.code == "replay_failed"], first.findings
        # Production's role (the replay left it on the shared server) with production's grant.
        execute(database_url, f'GRANT CREATE ON SCHEMA public TO "{role}"')
        migrate(database_url, folder, shadow)
        report = validate_database(database_url, journal, OPTIONS, shadow=shadow)
    finally:
        execute(database_url, f'DROP OWNED BY "{role}"')
        execute(server_url, f'DROP ROLE IF EXISTS "{role}"')
    assert report.status is Verdict.SAFE, report.findings


def test_a_timestamptz_literal_fixed_in_productions_zone_validates_after_migrate(
    database_url: str, tmp_path: Path, cache: Path
) -> None:
    """drizzle runs a migration in the session's zone, production's (here New York): a
    literal without an offset is that zone's instant. migrate does the same, and its own
    check afterwards (and a later validate) judges by a replay in that zone, not UTC."""
    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    execute(database_url, f"ALTER DATABASE \"{name}\" SET timezone = 'America/New_York'")
    folder = write_folder(
        tmp_path / "drizzle",
        [
            (
                "0000_events",
                'CREATE TABLE "events" ("at" timestamptz DEFAULT \'2030-01-01 00:00\', '
                'CHECK ("at" > \'2020-01-01 12:00\')) PARTITION BY RANGE ("at");\n'
                "--> statement-breakpoint\n"
                'CREATE TABLE "events_2030" PARTITION OF "events" '
                "FOR VALUES FROM ('2030-01-01') TO ('2031-01-01');",
            )
        ],
    )
    result = migrate_database(
        database_url,
        read_journal(folder),
        OPTIONS,
        confirm=lambda _r: True,
        shadow=suite_shadow(),
        retry=ONCE,
    )
    assert result.after.status is Verdict.SAFE, result.after.findings
    with psycopg.connect(database_url, options="-c TimeZone=UTC") as conn:
        [bound] = conn.execute(
            "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = 'events_2030'"
        ).fetchall()
    assert "05:00:00+00" in bound[0]  # New York's midnight, as drizzle would have stored it


def test_plan_on_a_database_whose_zone_is_spelled_etc_utc_replays_the_folder_once(
    database_url: str, server_url: str, cache: Path, tmp_path: Path
) -> None:
    """plan reads its facts from the history validate judged by: production's zone spelled
    otherwise than UTC (Etc/UTC, as some servers report it) is not a second replay in UTC."""
    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    execute(database_url, f"ALTER DATABASE \"{name}\" SET timezone = 'Etc/UTC'")
    folder = write_folder(tmp_path / "drizzle", RLS_FOLDER)
    arguments = ["--database-url", database_url, "--migrations", str(folder)]
    assert run(["plan", *arguments, "--shadow-url", server_url]) == 0
    assert len(list(cache.glob("*.json"))) == 1  # one history: the one replayed in Etc/UTC


def test_a_shadow_whose_databases_have_no_public_schema_still_replays(
    database_url: str, own_cluster: EmbeddedPostgres, tmp_path: Path, cache: Path
) -> None:
    """A hardened shadow server (template1 without ``public``): the grant that lets every role
    create in ``public`` has nothing to grant on, and the replay goes on without it."""
    template = psycopg.conninfo.make_conninfo(own_cluster.url(), dbname="template1")
    execute(template, "DROP SCHEMA public")
    sql = 'CREATE SCHEMA "app";\n--> statement-breakpoint\nCREATE TABLE "app"."a" ("id" int);'
    folder = write_folder(tmp_path / "drizzle", [("0000_a", sql)])
    shadow = ShadowSpec(own_cluster.url())
    report = validate_database(database_url, read_journal(folder), OPTIONS, shadow=shadow)
    assert report.status is Verdict.NEEDS_MIGRATION, report.findings


@pytest.mark.parametrize("zone", ["Etc/UTC", "GMT"])
def test_lint_after_validate_of_a_production_in_a_utc_alias_replays_the_folder_once(
    database_url: str, server_url: str, cache: Path, tmp_path: Path, zone: str
) -> None:
    """A server names UTC many ways (a Neon session says GMT): validate's history, replayed in
    production's zone, is the one lint (which reads no production: UTC) finds cached."""
    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    execute(database_url, f"ALTER DATABASE \"{name}\" SET timezone = '{zone}'")
    folder = write_folder(tmp_path / "drizzle", RLS_FOLDER)
    shadow = ["--migrations", str(folder), "--shadow-url", server_url]
    assert run(["validate", "--database-url", database_url, *shadow]) == 10
    assert run(["lint", *shadow]) in (0, 21)
    assert len(list(cache.glob("*.json"))) == 1  # one history, replayed once


CITEXT_FOLDER = [("0000_users", 'CREATE TABLE "users" ("email" citext NOT NULL);')]


def test_a_history_replayed_with_productions_extensions_serves_no_production_without_them(
    database_url: str, server_url: str, tmp_path: Path, cache: Path
) -> None:
    """The history built with citext created first is cached; a production that lacks
    citext is judged by a replay of its own, which PostgreSQL refuses, not by that one."""
    execute(database_url, "CREATE EXTENSION citext")
    journal = read_journal(write_folder(tmp_path / "drizzle", CITEXT_FOLDER))
    shadow = ShadowSpec(server_url)
    with_citext = validate_database(database_url, journal, OPTIONS, shadow=shadow)
    assert with_citext.status is Verdict.NEEDS_MIGRATION, with_citext.findings
    assert with_citext.replayed_on.endswith(", with production's citext")
    execute(database_url, "DROP EXTENSION citext")
    without = validate_database(database_url, journal, OPTIONS, shadow=shadow)
    assert "with production's" not in without.replayed_on
    assert [f.migration for f in without.findings if f.code == "replay_failed"] == ["0000_users"]


def test_plan_reads_locks_on_a_shadow_holding_productions_extensions(
    database_url: str, server_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The locks a DO block takes are PostgreSQL's answer alone (the SQL names no table):
    the replay that asks for them creates production's citext first, as the history's did."""
    execute(database_url, "CREATE EXTENSION citext")
    statement = "DO $$ BEGIN EXECUTE 'ALTER TABLE users ADD COLUMN nick citext'; END $$;"
    users = ("0000_users", 'CREATE TABLE "users" ("email" text NOT NULL);')
    folder = write_folder(tmp_path / "drizzle", [users, ("0001_nick", statement)])
    argv = ["--database-url", database_url, "--migrations", str(folder), "--shadow-url", server_url]
    assert run(["plan", "--json", *argv]) == 0
    plans = json.loads(capsys.readouterr().out)["migrations"]
    assert [(m["tag"], [(lock["table"], lock["mode"]) for lock in m["locks"]]) for m in plans] == [
        ("0000_users", []),
        ("0001_nick", [("public.users", "ACCESS EXCLUSIVE")]),
    ]


def test_a_migration_creating_an_extension_applied_by_hand_is_still_partial(
    database_url: str, server_url: str, tmp_path: Path, cache: Path
) -> None:
    """pg_trgm is there because someone ran 0001 by hand, its table with it, not because a
    console enabled it: the history is not replayed as if production had it first."""
    folder = write_folder(
        tmp_path / "drizzle",
        [
            ("0000_a", 'CREATE TABLE "a" ("id" integer);'),
            (
                "0001_b",
                'CREATE EXTENSION pg_trgm;\n--> statement-breakpoint\nCREATE TABLE "b" (x int);',
            ),
        ],
    )
    shadow = ShadowSpec(server_url)
    migrate(database_url, prefix_folder(folder, 1, tmp_path / "one"), shadow)
    execute(database_url, 'CREATE EXTENSION pg_trgm; CREATE TABLE "b" (x int)')
    report = validate_database(database_url, read_journal(folder), OPTIONS, shadow=shadow)
    assert report.status is Verdict.PARTIAL_MIGRATION, report.findings
    assert [(m.tag, m.state.value) for m in report.migrations][1] == ("0001_b", "untracked_present")
    assert "with production's" not in report.replayed_on


def test_a_migration_run_statement_by_statement_gets_productions_extension_too(
    database_url: str, server_url: str, tmp_path: Path, cache: Path
) -> None:
    """The table of citext (from a console) comes before a concurrent index: the replay, which
    runs it statement by statement, creates citext first and goes on from there, as
    ``migrate --allow-concurrent`` then does on production."""
    execute(database_url, "CREATE EXTENSION citext")
    migration = (
        'CREATE TABLE "tags" ("name" citext);\n--> statement-breakpoint\n'
        'CREATE INDEX CONCURRENTLY "tags_name" ON "tags" ("name");'
    )
    journal = read_journal(write_folder(tmp_path / "drizzle", [("0000_tags", migration)]))
    shadow = ShadowSpec(server_url)
    report = validate_database(database_url, journal, OPTIONS, shadow=shadow)
    assert report.status is Verdict.NEEDS_MIGRATION, report.findings
    assert report.replayed_on.endswith("with production's citext")
    concurrent = MigrateOptions(allow_concurrent=True)
    migrate_database(database_url, journal, concurrent, confirm=lambda _r: True, shadow=shadow)
    assert validate_database(database_url, journal, OPTIONS, shadow=shadow).status is Verdict.SAFE
