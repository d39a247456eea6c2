"""Compatibility with the REAL drizzle-orm migrator (node-postgres), both ways.

The driver ``tests/drizzle_node/migrate.mjs`` runs ``migrate(drizzle(pool), {migrationsFolder})``
from drizzle-orm 0.45.4 (pinned by ``package-lock.json``) against the suite's PostgreSQL;
``walk.mjs`` runs that same call on a series of databases in one node process, each created
as a copy of the one before (tests/test_histories.py). The only reason these tests skip is a
missing ``node``/``npm`` or an ``npm ci`` that cannot finish.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from bench.folders import write_drizzle_folder
from orchestrator.database import validate_database
from orchestrator.db.migrator import MigrateOptions, MigrationFailed
from orchestrator.db.retry import RetryPolicy
from orchestrator.drizzle.journal import Journal, read_journal
from orchestrator.errors import PartialStateError, UsageError
from orchestrator.migrate import MigrateResult, migrate_database
from orchestrator.sandbox.pg import create_database, drop_database, with_dbname
from orchestrator.validation import MigrationState, ValidationReport, Verdict
from tests.conftest import suite_shadow
from tests.drizzle_helpers import (
    FIXTURE_MIGRATIONS,
    expected_rows,
    migrate_prefix,
    prefix_folder,
    schema_fingerprint,
    tracking_rows,
)

NODE_DIR = Path(__file__).resolve().parent / "drizzle_node"
DRIVER = NODE_DIR / "migrate.mjs"
WALKER = NODE_DIR / "walk.mjs"
INSTALL_TIMEOUT_S = 300  # a cold npm ci takes seconds; this only bounds a hung registry

OPTIONS = MigrateOptions()
ONCE = RetryPolicy.none()
SKIPPED_TAG = "0010_new_colleen_wing"
SKIPPED_TABLE = "cmdb_reconciliation_results"


def installed_matches_lock(node_dir: Path) -> bool:
    """Whether ``node_modules`` holds exactly the versions ``package-lock.json`` pins."""
    lock = json.loads((node_dir / "package-lock.json").read_text())
    for key, entry in lock["packages"].items():
        if not key:  # the root project itself
            continue
        manifest = node_dir / key / "package.json"
        if not manifest.is_file():
            return False
        if json.loads(manifest.read_text()).get("version") != entry.get("version"):
            return False
    return True


def node_connection_url(url: str) -> str:
    """``url`` as a postgres:// URL, since node-postgres does not read key=value conninfo."""
    if url.startswith(("postgres://", "postgresql://")):
        return url
    params = psycopg.conninfo.conninfo_to_dict(url)
    user = quote(str(params.get("user", "")), safe="")
    password = params.get("password")
    auth = f"{user}:{quote(str(password), safe='')}@" if password else (f"{user}@" if user else "")
    host = str(params.get("host", "localhost"))
    port = params.get("port", 5432)
    dbname = quote(str(params.get("dbname", "")), safe="")
    if host.startswith("/"):  # a unix socket directory
        return f"postgresql://{auth}/{dbname}?host={quote(host, safe='')}&port={port}"
    return f"postgresql://{auth}{host}:{port}/{dbname}"


@pytest.fixture(scope="session")
def drizzle_node() -> Iterator[Path]:
    """``tests/drizzle_node`` with its pinned packages installed (``npm ci`` at most once)."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found on PATH: cannot run the real drizzle-orm migrator")
    # Concurrent pytest runs share this folder, and npm ci deletes node_modules first: serialise.
    digest = hashlib.sha256(str(NODE_DIR).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"orchestrator-drizzle-node-{digest}.lock"
    with lock_path.open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            if not installed_matches_lock(NODE_DIR):
                install = [
                    "npm",
                    "ci",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    "--prefer-offline",  # the lock pins integrity hashes: a cached copy is exact
                    # Offline should skip within seconds, not after npm's minute of back-off.
                    "--fetch-retries=1",
                    "--fetch-retry-mintimeout=1000",
                    "--fetch-retry-maxtimeout=5000",
                ]
                try:
                    done = subprocess.run(
                        install,
                        cwd=NODE_DIR,
                        capture_output=True,
                        text=True,
                        timeout=INSTALL_TIMEOUT_S,
                    )
                except subprocess.TimeoutExpired:
                    pytest.skip(
                        f"npm ci of drizzle-orm/pg timed out after {INSTALL_TIMEOUT_S}s "
                        "(npm registry unreachable?)"
                    )
                if done.returncode != 0:
                    head = " ".join((done.stderr or done.stdout).split())[:240]  # npm's error code
                    pytest.skip(f"npm ci of drizzle-orm/pg failed (no network?): {head}")
                assert installed_matches_lock(NODE_DIR), "npm ci left node_modules off the lock"
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
    yield NODE_DIR


def drizzle_migrate(node_dir: Path, url: str, folder: Path) -> None:
    """Run the real drizzle-orm migrator on ``folder``; fail the test if it fails."""
    done = subprocess.run(
        ["node", str(node_dir / DRIVER.name), node_connection_url(url), str(folder)],
        cwd=node_dir,
        capture_output=True,
        text=True,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    assert done.returncode == 0, f"drizzle migrator failed ({done.returncode}): {done.stderr}"


def drizzle_walk(node_dir: Path, server_url: str, steps: list[tuple[str, str, Path]]) -> None:
    """Each step ``(database, template, folder)`` in turn, in one node process: ``CREATE
    DATABASE database TEMPLATE template`` (an exact copy), then the real drizzle-orm migrator
    on it with ``folder``; fail the test if any step fails."""
    plan = {
        "server": node_connection_url(server_url),
        "steps": [
            {
                "database": database,
                "template": template,
                "url": node_connection_url(with_dbname(server_url, database)),
                "folder": str(folder),
            }
            for database, template, folder in steps
        ],
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump(plan, file)
    try:
        done = subprocess.run(
            ["node", str(node_dir / WALKER.name), file.name],
            cwd=node_dir,
            capture_output=True,
            text=True,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
        )
    finally:
        os.unlink(file.name)
    assert done.returncode == 0, f"drizzle walk failed ({done.returncode}): {done.stderr}"


def full() -> Journal:
    return read_journal(FIXTURE_MIGRATIONS)


def validate(url: str, journal: Journal | None = None) -> ValidationReport:
    journal = journal or full()
    return validate_database(url, journal, OPTIONS, retry=ONCE, shadow=suite_shadow())


def migrate(url: str, journal: Journal | None = None) -> MigrateResult:
    return migrate_database(
        url, journal or full(), OPTIONS, confirm=lambda _r: True, retry=ONCE, shadow=suite_shadow()
    )


def codes(report: ValidationReport) -> list[tuple[str, str | None]]:
    return [(f.code, f.migration) for f in report.findings]


def table_exists(url: str, name: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT to_regclass(%s)", (f"public.{name}",)).fetchone()
    return row is not None and row[0] is not None


def hash_of(tag: str) -> str:
    return full().by_tag(tag).hash


def test_drizzle_finds_nothing_to_do_after_our_migrate(
    drizzle_node: Path, database_url: str
) -> None:
    result = migrate(database_url)
    assert [a.tag for a in result.applied] == [m.tag for m in full().migrations]
    assert tracking_rows(database_url) == expected_rows()
    before = schema_fingerprint(database_url)

    drizzle_migrate(drizzle_node, database_url, FIXTURE_MIGRATIONS)

    assert tracking_rows(database_url) == expected_rows()
    assert schema_fingerprint(database_url) == before


def test_database_migrated_by_real_drizzle_validates_safe(
    drizzle_node: Path, database_url: str
) -> None:
    drizzle_migrate(drizzle_node, database_url, FIXTURE_MIGRATIONS)
    assert tracking_rows(database_url) == expected_rows()  # the fixture's record, reproduced

    report = validate(database_url)
    assert report.status is Verdict.SAFE, report.findings
    assert report.findings == ()
    assert {m.state for m in report.migrations} == {MigrationState.APPLIED}

    before = schema_fingerprint(database_url)
    result = migrate(database_url)
    assert result.applied == ()
    assert schema_fingerprint(database_url) == before


def test_drizzles_blind_spot_is_partial_and_we_repair_it(
    drizzle_node: Path, database_url: str, tmp_path: Path
) -> None:
    prefix = prefix_folder(FIXTURE_MIGRATIONS, 10, tmp_path / "p10")  # 0000-0009
    drizzle_migrate(drizzle_node, database_url, prefix)
    assert tracking_rows(database_url) == expected_rows()[:10]

    drizzle_migrate(drizzle_node, database_url, FIXTURE_MIGRATIONS)
    # drizzle skipped 0010 silently (its `when` is older than 0009's) and applied 0011.
    rows = tracking_rows(database_url)
    assert len(rows) == 11
    assert hash_of(SKIPPED_TAG) not in [digest for _, digest, _ in rows]
    assert rows[10][1:] == (hash_of("0011_cute_skin"), full().by_tag("0011_cute_skin").when)
    assert not table_exists(database_url, SKIPPED_TABLE)

    report = validate(database_url)
    assert report.status is Verdict.PARTIAL_MIGRATION
    assert {m.tag: m.state for m in report.migrations}[SKIPPED_TAG] is MigrationState.PENDING
    assert ("out_of_order", SKIPPED_TAG) in codes(report)

    result = migrate(database_url)
    assert [a.tag for a in result.applied] == [SKIPPED_TAG]
    assert table_exists(database_url, SKIPPED_TABLE)
    assert validate(database_url).status is Verdict.SAFE

    before = schema_fingerprint(database_url)
    drizzle_migrate(drizzle_node, database_url, FIXTURE_MIGRATIONS)
    assert schema_fingerprint(database_url) == before


def test_out_of_order_finding_matches_what_real_drizzle_does(
    drizzle_node: Path, database_url: str, tmp_path: Path
) -> None:
    migrate_prefix(database_url, FIXTURE_MIGRATIONS, 10, tmp_path / "p10")  # 0000-0009, by us

    report = validate(database_url)
    assert report.status is Verdict.NEEDS_MIGRATION
    assert [f.migration for f in report.findings if f.code == "out_of_order"] == [SKIPPED_TAG]

    # The finding's claim, checked against the real thing: drizzle skips 0010.
    drizzle_migrate(drizzle_node, database_url, FIXTURE_MIGRATIONS)
    digests = [digest for _, digest, _ in tracking_rows(database_url)]
    assert len(digests) == 11
    assert hash_of(SKIPPED_TAG) not in digests
    assert hash_of("0011_cute_skin") in digests
    assert not table_exists(database_url, SKIPPED_TABLE)


REPEATED = "CREATE OR REPLACE VIEW active_users AS SELECT * FROM users WHERE active"
RELEASES = [
    ("0000_users", ["CREATE TABLE users (id int, active boolean)"]),
    ("0001_view", [REPEATED]),
    ("0002_email", ["ALTER TABLE users ADD COLUMN email text"]),
    ("0003_view", [REPEATED]),  # the same text again: the view takes the new column
]


def test_a_text_the_journal_repeats_is_applied_once_per_entry_as_drizzle_does(
    drizzle_node: Path, database_url: str, server_url: str, tmp_path: Path
) -> None:
    first = read_journal(write_drizzle_folder(tmp_path / "first", RELEASES[:2]))
    folder = write_drizzle_folder(tmp_path / "second", RELEASES)
    journal = read_journal(folder)
    migrate_database(
        database_url, first, OPTIONS, confirm=lambda _r: True, retry=ONCE, shadow=suite_shadow()
    )
    report = validate_database(database_url, journal, OPTIONS, retry=ONCE, shadow=suite_shadow())
    assert report.status is Verdict.NEEDS_MIGRATION, report.findings
    assert [m.tag for m in report.pending] == ["0002_email", "0003_view"]
    result = migrate_database(
        database_url, journal, OPTIONS, confirm=lambda _r: True, retry=ONCE, shadow=suite_shadow()
    )
    assert [a.tag for a in result.applied] == ["0002_email", "0003_view"]
    assert result.after.status is Verdict.SAFE
    # drizzle's own database of the same folder: the same rows, the same schema.
    name = f"orch_theirs_{os.getpid()}"
    create_database(server_url, name)
    try:
        theirs = with_dbname(server_url, name)
        drizzle_migrate(drizzle_node, theirs, folder)
        assert tracking_rows(theirs) == tracking_rows(database_url)
        assert schema_fingerprint(theirs) == schema_fingerprint(database_url)
        assert (
            validate_database(theirs, journal, OPTIONS, retry=ONCE, shadow=suite_shadow()).status
            is Verdict.SAFE
        )
    finally:
        drop_database(server_url, name)


def test_a_migration_drizzle_applied_is_not_refused_for_how_it_is_written(
    drizzle_node: Path, database_url: str, tmp_path: Path
) -> None:
    # Applied by drizzle long ago: a comment saved as Latin-1 (drizzle ran it with U+FFFD),
    # a column named system_user, a word PostgreSQL 16 reserved (pglast's grammar is newer
    # than this server's), and a hand-written COMMIT. Only the migrations still to run are
    # held to any of them.
    users = ("0000_users", ["CREATE TABLE users (id int, system_user text)", "COMMIT"])
    first = write_drizzle_folder(tmp_path / "first", [users])
    folder = write_drizzle_folder(tmp_path / "second", [users, RELEASES[2]])
    latin1 = b"-- r\xe9sum\xe9\n" + (first / "0000_users.sql").read_bytes()
    for written in (first, folder):
        (written / "0000_users.sql").write_bytes(latin1)
    drizzle_migrate(drizzle_node, database_url, first)

    journal = read_journal(folder)
    report = validate_database(database_url, journal, OPTIONS, retry=ONCE, shadow=suite_shadow())
    assert report.status is Verdict.NEEDS_MIGRATION, report.findings
    assert [m.tag for m in report.pending] == ["0002_email"]
    result = migrate_database(
        database_url, journal, OPTIONS, confirm=lambda _r: True, retry=ONCE, shadow=suite_shadow()
    )
    assert [a.tag for a in result.applied] == ["0002_email"]
    assert result.after.status is Verdict.SAFE


def test_drizzle_commits_half_a_migration_that_holds_a_commit_and_we_refuse_to_run_it(
    drizzle_node: Path, database_url: str, tmp_path: Path
) -> None:
    # A hand-written COMMIT, then a statement that fails (users exists): drizzle-kit leaves
    # what came before the COMMIT committed, without the migration's tracking row.
    half = ("0001_half", ["CREATE TABLE half (id int)", "COMMIT", "CREATE TABLE users (id int)"])
    folder = write_drizzle_folder(tmp_path / "m", [RELEASES[0], half])
    journal = read_journal(folder)
    with pytest.raises(UsageError, match=r"0001_half\.sql:3: COMMIT controls the migration's"):
        migrate_database(
            database_url,
            journal,
            OPTIONS,
            confirm=lambda _r: True,
            retry=ONCE,
            shadow=suite_shadow(),
        )
    assert tracking_rows(database_url) == [] and not table_exists(database_url, "users")

    with pytest.raises(AssertionError, match="drizzle migrator failed"):
        drizzle_migrate(drizzle_node, database_url, folder)
    assert table_exists(database_url, "half")  # committed, though its migration failed
    assert [row[1] for row in tracking_rows(database_url)] == [journal.migrations[0].hash]


SEEDED = [
    ("0000_t", ['CREATE TABLE "t" ("x" integer)']),
    ("0001_seed", ['INSERT INTO "t" VALUES (1)']),
]


def seeded_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute('SELECT count(*) FROM "t"').fetchone()
    return int(row[0]) if row else 0


def test_a_migration_edited_after_drizzle_applied_it_is_partial_and_never_run_again(
    drizzle_node: Path, database_url: str, tmp_path: Path
) -> None:
    """drizzle tracks by created_at and skips an applied file edited since (a comment added
    to a seed); a tracking by hash alone took it for pending and ran the seed again."""
    folder = write_drizzle_folder(tmp_path / "drizzle", SEEDED)
    drizzle_migrate(drizzle_node, database_url, folder)
    seed = folder / "0001_seed.sql"
    seed.write_text(seed.read_text() + "\n-- reviewed")

    report = validate(database_url, read_journal(folder))
    assert report.status is Verdict.PARTIAL_MIGRATION and int(report.exit_code) == 20
    assert [f.migration for f in report.findings if f.code == "edited_migration"] == ["0001_seed"]
    with pytest.raises(PartialStateError, match=r"0001_seed\.sql changed after it was applied"):
        migrate(database_url, read_journal(folder))
    assert seeded_rows(database_url) == 1 and len(tracking_rows(database_url)) == 2
    drizzle_migrate(drizzle_node, database_url, folder)  # the oracle: it runs nothing
    assert seeded_rows(database_url) == 1


def test_an_applied_migration_whose_when_was_raised_is_said_drizzle_would_run_it_again(
    drizzle_node: Path, database_url: str, tmp_path: Path
) -> None:
    folder = write_drizzle_folder(tmp_path / "drizzle", SEEDED)
    migrate(database_url, read_journal(folder))
    journal = folder / "meta" / "_journal.json"
    document = json.loads(journal.read_text())
    document["entries"][1]["when"] += 5000  # the usual fix for a skipped migration, made late
    journal.write_text(json.dumps(document))

    report = validate(database_url, read_journal(folder))
    assert report.status is Verdict.SAFE
    [finding] = [f for f in report.findings if f.code == "rerun_by_drizzle"]
    assert finding.migration == "0001_seed" and finding.severity == "error"
    assert "drizzle-kit migrate" in report.recommendation
    assert migrate(database_url, read_journal(folder)).applied == ()
    # The finding's claim, checked against the real thing: drizzle runs the seed again.
    drizzle_migrate(drizzle_node, database_url, folder)
    assert seeded_rows(database_url) == 2


def test_a_migration_creating_drizzles_schema_is_refused_by_the_replay_as_by_drizzle(
    drizzle_node: Path, database_url: str, tmp_path: Path
) -> None:
    """drizzle creates its schema and tracking table before the first migration: one that
    creates that schema again fails there, and so it does on the shadow, before production."""
    folder = write_drizzle_folder(
        tmp_path / "m", [("0000_jobs", ['CREATE SCHEMA "drizzle"', 'CREATE TABLE "t" (x int)'])]
    )
    report = validate(database_url, read_journal(folder))
    [finding] = [f for f in report.findings if f.code == "replay_failed"]
    assert finding.migration == "0000_jobs" and 'schema "drizzle" already exists' in finding.message
    with pytest.raises(MigrationFailed, match="when the release ran on the shadow"):
        migrate(database_url, read_journal(folder))
    assert not table_exists(database_url, "t")
    with pytest.raises(AssertionError, match='schema "drizzle" already exists'):
        drizzle_migrate(drizzle_node, database_url, folder)  # the oracle refuses it too
    assert not table_exists(database_url, "t")


CITEXT_USERS = 'CREATE TABLE "users" ("id" serial PRIMARY KEY, "email" citext NOT NULL)'
# (console SQL, after how many migrations it ran, the folder, how many drizzle applied)
BY_CONSOLE = {
    "citext in public, pg_trgm in a schema of its own (as Supabase puts them)": (
        "CREATE EXTENSION citext; CREATE SCHEMA extensions; "
        "CREATE EXTENSION pg_trgm SCHEMA extensions",
        0,
        [
            ("0000_users", [CITEXT_USERS]),
            (
                "0001_search",
                ['CREATE INDEX "s" ON "users" USING gin ("email" extensions.gin_trgm_ops)'],
            ),
            ("0002_nick", ['ALTER TABLE "users" ADD COLUMN "nick" citext']),
        ],
        2,
    ),
    "one a migration creates as well, without IF NOT EXISTS, once it was applied": (
        "CREATE EXTENSION citext",
        0,
        [
            ("0000_users", [CITEXT_USERS]),
            ("0001_trgm", ["CREATE EXTENSION pg_trgm"]),
            ("0002_search", ['CREATE INDEX "s" ON "users" USING gin ("email" gin_trgm_ops)']),
        ],
        3,
    ),
    "one a pending migration creates IF NOT EXISTS": (
        "CREATE EXTENSION citext",
        0,
        [
            ("0000_users", ['CREATE TABLE "users" ("id" serial PRIMARY KEY)']),
            (
                "0001_email",
                [
                    "CREATE EXTENSION IF NOT EXISTS citext",
                    'ALTER TABLE "users" ADD COLUMN "email" citext',
                ],
            ),
        ],
        1,
    ),
    "one in a schema a migration created": (
        "CREATE EXTENSION citext SCHEMA extensions",
        1,
        [
            ("0000_schema", ['CREATE SCHEMA "extensions"']),
            ("0001_users", ['CREATE TABLE "users" ("email" extensions.citext)']),
            ("0002_nick", ['ALTER TABLE "users" ADD COLUMN "nick" extensions.citext']),
        ],
        2,
    ),
    "one that requires an extension a migration created": (
        "CREATE EXTENSION earthdistance",
        1,
        [
            ("0000_cube", ["CREATE EXTENSION cube"]),
            ("0001_places", ['CREATE TABLE "places" ("at" earth DEFAULT ll_to_earth(0, 0))']),
        ],
        2,
    ),
}


@pytest.mark.parametrize("case", BY_CONSOLE)
def test_extensions_enabled_from_a_console_are_productions_on_the_shadow_too(
    drizzle_node: Path, database_url: str, tmp_path: Path, case: str
) -> None:
    """Extensions production has and no migration creates, enabled from a console before the
    migrations that use them: the history starts with them, as production's did, so the
    applied migrations replay, the rest migrate (the one-transaction check passing) and the
    real migrator then finds nothing to do."""
    console, after, migrations, applied = BY_CONSOLE[case]
    write = partial(write_drizzle_folder, tmp_path / "m")
    if after:
        drizzle_migrate(drizzle_node, database_url, write(migrations[:after]))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(console)
    drizzle_migrate(drizzle_node, database_url, write(migrations[:applied]))
    folder = write(migrations)
    report = validate(database_url, read_journal(folder))
    assert [m.tag for m in report.pending] == [tag for tag, _ in migrations[applied:]]
    assert not report.findings and "with production's" in report.replayed_on, report.findings
    migrate(database_url, read_journal(folder))
    assert validate(database_url, read_journal(folder)).status is Verdict.SAFE
    before = schema_fingerprint(database_url)
    drizzle_migrate(drizzle_node, database_url, folder)
    assert schema_fingerprint(database_url) == before


def test_a_pending_migration_creating_an_extension_production_has_fails_as_on_production(
    drizzle_node: Path, database_url: str, tmp_path: Path
) -> None:
    """pg_trgm came from a console; the pending migration creates it without IF NOT EXISTS,
    which production refuses: so does the shadow, before production is touched."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION citext; CREATE EXTENSION pg_trgm")
    migrations = [("0000_users", [CITEXT_USERS]), ("0001_trgm", ["CREATE EXTENSION pg_trgm"])]
    drizzle_migrate(
        drizzle_node, database_url, write_drizzle_folder(tmp_path / "a", migrations[:1])
    )
    folder = write_drizzle_folder(tmp_path / "m", migrations)
    report = validate(database_url, read_journal(folder))
    [finding] = [f for f in report.findings if f.code == "replay_failed"]
    assert (
        finding.migration == "0001_trgm" and 'extension "pg_trgm" already exists' in finding.message
    )
    with pytest.raises(MigrationFailed, match="when the release ran on the shadow"):
        migrate(database_url, read_journal(folder))
    with pytest.raises(AssertionError, match='extension "pg_trgm" already exists'):
        drizzle_migrate(drizzle_node, database_url, folder)  # the oracle fails there too


def test_a_skipped_migration_is_applied_on_a_production_with_a_console_extension(
    drizzle_node: Path, database_url: str, tmp_path: Path
) -> None:
    """A hole (0001 pending, 0002 applied) on a production whose citext came from a console:
    both orders are replayed with citext, so migrate sees they build one schema and applies it."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION citext")
    migrations = [
        ("0000_users", [CITEXT_USERS]),
        ("0001_posts", ['CREATE TABLE "posts" ("id" serial PRIMARY KEY)']),
        ("0002_tags", ['CREATE TABLE "tags" ("name" citext PRIMARY KEY)']),
    ]
    skipped = [migrations[0], migrations[2]]
    drizzle_migrate(drizzle_node, database_url, write_drizzle_folder(tmp_path / "a", skipped))
    folder = write_drizzle_folder(tmp_path / "m", migrations)
    assert [a.tag for a in migrate(database_url, read_journal(folder)).applied] == ["0001_posts"]
    assert table_exists(database_url, "posts")
