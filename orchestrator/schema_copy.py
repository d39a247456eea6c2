"""A copy of production's schema on the shadow server, for rehearsals.

``deploy --dry-run --rehearse-on local`` must not touch production beyond reading it: the
schema (``pg_dump --schema-only``) and drizzle's tracking rows (``pg_dump --data-only`` of
that one table) are read, and loaded into a database of its own on the shadow server, the
same one validation replays the folder on (:mod:`orchestrator.shadow`: the server the
playbook names, else a throwaway local cluster). The migrations are then applied there for
real. ``pg_dump`` takes ACCESS SHARE on every table while it reads the schema: reads and
writes go on, but DDL (and whatever queues behind that DDL) waits until the dump ends. The
wait for those locks is bounded by the rehearsal's lock bound (``--lock-wait-timeout``); the
session ends with the dump, and production keeps no lock of ours. A dump refused because the
server is not up yet is retried under the playbook's retry policy, as any first connection.
What a schema-only copy cannot catch, the rehearsal's report says (:data:`CANNOT_CATCH`).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import psycopg

from orchestrator import children
from orchestrator.db.blockers import pg_dump_lock_wait
from orchestrator.db.connect import describe, milliseconds, without_password
from orchestrator.db.retry import RetryPolicy, call_with_retry, is_transient_message
from orchestrator.errors import DatabaseError, UsageError
from orchestrator.redaction import redact
from orchestrator.sandbox.pg import ServerBinariesMissing, find_bindir
from orchestrator.shadow import ShadowSpec
from orchestrator.shadow.server import ShadowServer

CANNOT_CATCH = (
    "a schema-only copy cannot catch failures that depend on production's data (NOT NULL "
    "over nulls, a unique index over duplicates, a failing cast), lock waits under "
    "production's traffic, nor what the monitor's SQL checks would read on production (the "
    "copy has no rows: those checks are not predictive)"
)


@contextmanager
def local_copy(
    url: str, shadow: ShadowSpec, *, schema: str, table: str, lock_wait: float, retry: RetryPolicy
) -> Iterator[str]:
    """Copy production's schema and tracking rows into a new database on the shadow server,
    yield its URL; the database (and a throwaway cluster) is gone afterwards, whatever happens.

    ``lock_wait``: seconds each dump may wait for its ACCESS SHARE locks on production.
    ``retry``: the policy under which a dump that could not connect is tried again.
    """
    dump = partial(_dump, _pg_dump_binary(), url, lock_wait=lock_wait)
    tracking = ("--data-only", "--inserts", f"--table={schema}.{table}")
    schema_sql = call_with_retry(lambda: dump("--schema-only"), retry)
    rows_sql = call_with_retry(lambda: dump(*tracking), retry)
    with ShadowServer(shadow) as server, server.database() as copy_url:
        _load(copy_url, schema_sql, "schema")
        _load(copy_url, rows_sql, "tracking rows")
        yield copy_url


def _pg_dump_binary() -> str:
    try:
        return str(find_bindir() / "pg_dump")
    except ServerBinariesMissing:
        if (found := shutil.which("pg_dump")) is None:
            raise UsageError("--rehearse-on local needs pg_dump (postgresql-client)") from None
        return found


def _dump(pg_dump: str, url: str, *options: str, lock_wait: float) -> str:
    """``pg_dump`` of production with ``options``, as SQL; DatabaseError if it fails (marked
    transient when the server could not be reached). Its ACCESS SHARE locks are waited for
    at most ``lock_wait`` seconds."""
    conninfo, env = without_password(url)
    wait = f"--lock-wait-timeout={milliseconds(lock_wait)}"
    done = children.run(
        [pg_dump, "--no-owner", "--no-privileges", wait, *options, f"--dbname={conninfo}"], env=env
    )
    if done.returncode != 0:
        first = next((line for line in done.stderr.splitlines() if line.strip()), "no output")
        if "no matching tables" in first:
            return ""  # no tracking table yet: nothing applied
        if (locked := pg_dump_lock_wait(done.stderr, url, lock_wait)) is not None:
            raise DatabaseError(
                f"cannot read production's schema: {locked}, the lock bound; nothing was changed"
            )
        raise DatabaseError(
            f"cannot read production's schema: {redact(first)}",
            transient=is_transient_message(first),
        )
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
