"""One deploy (or migrate) at a time per database: a session-level advisory lock.

The lock is held on a connection of its own for as long as the run does database work. Its
key is derived from the tracking table's name, so every orchestrator process working on the
same database and tracking table contends for the same lock, whatever its version. A second
process does not wait: it is refused at once, told which run holds the lock (each connection
names its run in ``application_name``). When a holder dies, PostgreSQL ends its session and
releases the lock with it, so nothing ever needs unlocking by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from orchestrator.db.connect import connect, database_error
from orchestrator.errors import UsageError

APPLICATION_PREFIX = "orchestrator"

# Who holds an advisory lock: pg_locks splits a bigint key into classid (high 32 bits) and
# objid (low 32 bits), with objsubid 1 for the single-bigint form.
_HOLDER_SQL = """
SELECT a.pid, a.application_name, a.backend_start::text
  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND l.classid::bigint = %(classid)s AND l.objid::bigint = %(objid)s AND l.objsubid = 1
"""

_SESSIONS_SQL = """
SELECT pid FROM pg_stat_activity
 WHERE application_name = %(name)s AND pid <> pg_backend_pid()
   AND datname = current_database()
"""


def lock_key(schema: str, table: str) -> int:
    """The advisory lock key of a tracking table: a stable signed 64-bit number (pure)."""
    digest = hashlib.sha256(f"orchestrator.run:{schema}.{table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def application_name(run_id: str | None, verb: str = "run") -> str:
    """What ``pg_stat_activity`` shows for our connections: names the run (pure).

    PostgreSQL truncates application_name to 63 bytes; run ids are 23 characters.
    """
    return f"{APPLICATION_PREFIX} {verb} {run_id}" if run_id else f"{APPLICATION_PREFIX} {verb}"


def run_id_of(name: str) -> str | None:
    """The run id named by an application_name of ours, if any (pure)."""
    parts = name.split()
    return parts[2] if len(parts) == 3 and parts[0] == APPLICATION_PREFIX else None


@dataclass(frozen=True)
class Holder:
    """The session holding the lock."""

    pid: int
    application_name: str
    since: str

    def describe(self) -> str:
        """One line naming the holder for an error message."""
        run = run_id_of(self.application_name)
        who = f"run {run}" if run else f"{self.application_name or 'another session'}"
        return f"{who} (backend pid {self.pid}, since {self.since})"


class DatabaseBusy(UsageError):
    """Another deploy or migrate holds the database: refused before anything changed."""


def run_lock(url: str, schema: str, table: str, verb: str, run_id: str | None = None) -> RunLock:
    """The run lock of the tracking table ``schema.table``, held in the name of ``verb`` (and
    of run ``run_id``): what ``pg_stat_activity`` shows another holder."""
    return RunLock(url, schema=schema, table=table, owner=application_name(run_id, verb))


class RunLock:
    """The run lock on a dedicated connection: acquire, check it is still held, release.

    ``with RunLock(url, schema=..., table=..., owner=...):`` holds it for the block; another
    holder is refused at once (:class:`DatabaseBusy`, exit 2) and told which run has it.
    A server restart or a dropped connection ends the session and with it the lock, without
    telling us; :meth:`ensure` notices and takes the lock again before the next step acts.
    """

    def __init__(self, url: str, *, schema: str, table: str, owner: str) -> None:
        self.url = url
        self.schema = schema
        self.table = table
        self.owner = owner
        self.key = lock_key(schema, table)
        self._conn: psycopg.Connection[Any] | None = None

    def acquire(self) -> None:
        """Take the lock; :class:`DatabaseBusy` (exit 2) at once if another session holds it."""
        self.release()
        conn = connect(self.url, autocommit=True, application_name=self.owner)
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
            if not (row and row[0]):
                holder = find_holder(conn, self.key)
                raise DatabaseBusy(
                    f"another deploy or migrate holds {self.schema}.{self.table}: "
                    f"{holder.describe() if holder else 'a session that just ended; retry'}"
                )
        except psycopg.Error as exc:
            conn.close()
            raise database_error("cannot take the run lock", exc) from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def ensure(self) -> bool:
        """Check the lock's session is alive; if not, take the lock again. True if re-taken."""
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.execute("SELECT 1")
                return False
            except psycopg.Error:
                pass  # the session is gone, and the lock with it
        self.acquire()
        return True

    def release(self) -> None:
        """Let go: unlock, then end the session. Ending it alone releases the lock only once
        the server has seen it end, and a next holder asking before then is refused."""
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):  # a lost session holds nothing
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            self._conn.close()
            self._conn = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def find_holder(conn: psycopg.Connection[Any], key: int) -> Holder | None:
    """The session holding advisory lock ``key``, if any."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    params = {"classid": unsigned >> 32, "objid": unsigned & 0xFFFFFFFF}
    if (row := conn.execute(_HOLDER_SQL, params).fetchone()) is None:
        return None
    return Holder(pid=int(row[0]), application_name=str(row[1] or ""), since=str(row[2]))


def end_orphan_sessions(url: str, owner: str, *, wait_s: float = 10.0) -> list[int]:
    """End sessions still named ``owner`` whose process is gone; return their pids.

    Called by ``resume`` while it holds the run's file lock, which proves no live process
    drives that run: a backend still named after it belongs to a killed process and is only
    waiting to notice (e.g. in the middle of a slow statement). Ending it rolls its
    transaction back and releases its locks, instead of waiting for lock_timeout.
    """
    with connect(url, autocommit=True, application_name=f"{owner} resume") as conn:
        pids = [int(str(r[0])) for r in conn.execute(_SESSIONS_SQL, {"name": owner}).fetchall()]
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + wait_s
        while pids and time.monotonic() < deadline:
            if not conn.execute(_SESSIONS_SQL, {"name": owner}).fetchall():
                break
            time.sleep(0.05)
    return pids
