"""A throwaway local PostgreSQL holding a copy of production's schema, for rehearsals.

``deploy --dry-run --rehearse-on local`` must not touch production beyond reading it: the
schema (``pg_dump --schema-only``) and drizzle's tracking rows (``pg_dump --data-only`` of
that one table) are read, and loaded into a cluster started for the occasion with the same
``initdb`` + ``pg_ctl`` rig the test suite uses. The migrations are then applied there for
real. ``pg_dump`` takes ACCESS SHARE locks while it reads, which block no query, and ends its
session when done: production keeps no lock of ours.

What a schema-only copy cannot catch: failures that depend on data (a ``NOT NULL`` on a
column holding nulls, a unique index over duplicates, a cast that fails on one row), and
timing (how long a lock is held under real traffic). The rehearsal's report says so.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from orchestrator.db.connect import describe
from orchestrator.engine.steps.backup import without_password
from orchestrator.errors import DatabaseError, UsageError
from orchestrator.redaction import redact
from orchestrator.testing.pg import (
    EmbeddedPostgres,
    ServerBinariesMissing,
    create_database,
    find_bindir,
    with_dbname,
)

__all__ = ["CANNOT_CATCH", "local_copy"]

CANNOT_CATCH = (
    "a schema-only copy cannot catch failures that depend on production's data (NOT NULL "
    "over nulls, a unique index over duplicates, a failing cast) nor lock waits under "
    "production's traffic"
)
COPY_DATABASE = "rehearsal"


@contextmanager
def local_copy(url: str, *, schema: str, table: str) -> Iterator[str]:
    """Start a local cluster, copy production's schema and tracking rows into it, yield its
    URL; the cluster is destroyed afterwards, whatever happens."""
    pg_dump = _pg_dump_binary()
    schema_sql = _dump(pg_dump, url, "--schema-only")
    rows_sql = _dump(pg_dump, url, "--data-only", "--inserts", f"--table={schema}.{table}")
    try:
        cluster = EmbeddedPostgres()
    except ServerBinariesMissing as exc:
        raise UsageError(f"--rehearse-on local needs PostgreSQL server binaries: {exc}") from None
    cluster.__enter__()
    try:
        create_database(cluster.url(), COPY_DATABASE)
        copy_url = with_dbname(cluster.url(), COPY_DATABASE)
        _load(copy_url, schema_sql, "schema")
        _load(copy_url, rows_sql, "tracking rows")
        yield copy_url
    finally:
        cluster.destroy()


def _pg_dump_binary() -> str:
    try:
        return str(find_bindir() / "pg_dump")
    except ServerBinariesMissing:
        found = shutil.which("pg_dump")
        if found is None:
            raise UsageError("--rehearse-on local needs pg_dump (postgresql-client)") from None
        return found


def _dump(pg_dump: str, url: str, *options: str) -> str:
    conninfo, env = without_password(url)
    done = subprocess.run(
        [pg_dump, "--no-owner", "--no-privileges", *options, f"--dbname={conninfo}"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        first = next((line for line in done.stderr.splitlines() if line.strip()), "no output")
        if "no matching tables" in first:
            return ""  # no tracking table yet: nothing applied
        raise DatabaseError(f"cannot read production's schema: {redact(first)}")
    # psql meta-commands (\restrict ...) are not SQL: the copy is loaded without psql.
    return "\n".join(line for line in done.stdout.splitlines() if not line.startswith("\\"))


def _load(url: str, text: str, what: str) -> None:
    if not text.strip():
        return
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(text.encode())
    except psycopg.Error as exc:
        raise DatabaseError(
            f"cannot load production's {what} into the local copy: {describe(exc)} (an "
            "extension missing here, or a server newer than the local one)"
        ) from exc
