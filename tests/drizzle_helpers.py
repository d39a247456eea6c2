"""Test helpers for building migrations folders and database states (no assertions here)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import psycopg

from orchestrator.db.migrator import MigrateOptions
from orchestrator.db.retry import RetryPolicy
from orchestrator.drizzle.journal import Migration, read_journal
from orchestrator.migrate import migrate_database
from tests.conftest import DRIZZLE_FIXTURE, suite_shadow

FIXTURE_MIGRATIONS = DRIZZLE_FIXTURE / "migrations"


def prefix_folder(source: Path, count: int, target: Path) -> Path:
    """A copy of ``source`` whose journal keeps only its first ``count`` entries."""
    shutil.copytree(source, target)
    for p in [target, *target.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    journal_file = target / "meta" / "_journal.json"
    document = json.loads(journal_file.read_text())
    document["entries"] = document["entries"][:count]
    journal_file.write_text(json.dumps(document, indent=2))
    return target


def migrate_prefix(url: str, folder: Path, count: int, where: Path) -> None:
    """``url`` migrated by our migrate (on the suite's shadow) to ``folder``'s first ``count``
    entries; ``where`` receives the shortened copy of the folder."""
    journal = read_journal(prefix_folder(folder, count, where))
    migrate_database(
        url,
        journal,
        MigrateOptions(),
        confirm=lambda _r: True,
        retry=RetryPolicy.none(),
        shadow=suite_shadow(),
    )


def fixture_migration(tag: str) -> Migration:
    """One migration of the drizzle contract fixture (tests/fixtures/drizzle)."""
    return read_journal(FIXTURE_MIGRATIONS).by_tag(tag)


def expected_rows() -> list[tuple[int, str, int]]:
    """The rows the real drizzle-orm migrator wrote for the whole fixture folder."""
    lines = (DRIZZLE_FIXTURE / "expected_tracking_rows.tsv").read_text().splitlines()[1:]
    return [(int(i), h, int(c)) for i, h, c in (line.split("\t") for line in lines)]


def run_sql(url: str, migration: Migration) -> None:
    """Execute a migration's statements without tracking it (someone ran it by hand)."""
    with psycopg.connect(url) as conn:
        for piece in migration.statements:
            if piece.strip():
                conn.execute(piece.encode())


def track(url: str, migration: Migration, schema: str = "drizzle") -> None:
    """Insert a tracking row as drizzle's migrator does, creating the table like drizzle."""
    with psycopg.connect(url) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'.encode())
        conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{schema}"."__drizzle_migrations" '
            "(id SERIAL PRIMARY KEY, hash text NOT NULL, created_at bigint)".encode()
        )
        conn.execute(
            f'insert into "{schema}"."__drizzle_migrations" ("hash", "created_at") '
            "values (%s, %s)".encode(),
            (migration.hash, migration.when),
        )


def tracking_rows(url: str) -> list[tuple[int, str, int]]:
    """All rows of drizzle.__drizzle_migrations, by id."""
    with psycopg.connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('drizzle.__drizzle_migrations')").fetchone()
        if exists is None or exists[0] is None:
            return []
        rows = conn.execute(
            "SELECT id, hash, created_at FROM drizzle.__drizzle_migrations ORDER BY id"
        ).fetchall()
        return [(int(r[0]), str(r[1]), int(r[2])) for r in rows]


def schema_fingerprint(url: str) -> list[tuple[str, ...]]:
    """Every user relation and column plus the tracking rows: to prove nothing changed."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2, 3"
        ).fetchall()
    return [tuple(str(v) for v in r) for r in rows] + [
        tuple(str(v) for v in r) for r in tracking_rows(url)
    ]
