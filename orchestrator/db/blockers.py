"""Who blocked a statement or a read: the sessions holding conflicting locks on its tables.

When ``lock_timeout`` fires, our statement has left the lock queue, so
``pg_blocking_pids(<our pid>)`` is empty by the time we can ask. So while a migration
transaction runs, :class:`LockWatch` looks at its backend from a second connection: when the
backend waits for a table lock, it notes the table, the mode and ``pg_blocking_pids`` (the
sessions holding a conflicting lock or queued ahead of it) with who they are. That is what
a lock timeout reports, and the table names the statement that waited, so nothing has to be
replayed (a replay would queue for the same lock and stall traffic a second time).

When the watch saw nothing (the wait began and ended between two looks, or the second
connection could not be opened), :func:`find_blockers` asks the next best thing, at once and
on the same connection (whose transaction has just rolled back): which other sessions hold
(or wait for) a lock on the statement's tables in a mode that conflicts with the one the
statement needed. A read that gave up (``pg_dump``, the catalog read) asks it of every table.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from orchestrator.analysis.locks import conflicts, migration_locks, pg_mode, stronger
from orchestrator.db.connect import connect
from orchestrator.errors import DatabaseError

_LOCKS_SQL = """
SELECT l.pid, l.mode, l.granted, n.nspname || '.' || c.relname,
       coalesce(a.application_name, ''), coalesce(a.state, ''),
       extract(epoch FROM now() - coalesce(a.xact_start, a.query_start, a.backend_start)),
       pg_blocking_pids(l.pid)
  FROM pg_locks l
  JOIN pg_class c ON c.oid = l.relation
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'relation' AND l.pid <> pg_backend_pid()
   AND (%(tables)s::text[] IS NULL AND n.nspname !~ '^(pg_|information_schema$)'  -- any table
        OR l.relation IN (SELECT to_regclass(r) FROM unnest(%(tables)s::text[]) AS r))
 ORDER BY l.granted DESC, a.xact_start NULLS LAST, l.pid
"""


# What one backend waits for (a table lock), and the sessions pg_blocking_pids names with
# their locks on that table: the rows select_blockers reads, plus the requested mode.
_WAIT_SQL = """
WITH waiting AS (
  SELECT l.relation, l.mode, pg_blocking_pids(l.pid) AS blocking
    FROM pg_locks l
   WHERE l.pid = %s AND NOT l.granted AND l.locktype = 'relation'
)
SELECT b.pid, b.mode, b.granted, n.nspname || '.' || c.relname,
       coalesce(a.application_name, ''), coalesce(a.state, ''),
       extract(epoch FROM now() - coalesce(a.xact_start, a.query_start, a.backend_start)),
       w.blocking, w.mode
  FROM waiting w
  JOIN pg_class c ON c.oid = w.relation
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_locks b ON b.relation = w.relation AND b.locktype = 'relation'
                 AND b.pid = ANY (w.blocking)
  JOIN pg_stat_activity a ON a.pid = b.pid
 ORDER BY b.granted DESC, a.xact_start NULLS LAST, b.pid
"""


@dataclass(frozen=True)
class Blocker:
    """A session holding (or queued for) a lock our statement had to wait for."""

    pid: int
    application_name: str
    state: str
    since_s: float  # how long its transaction (or query) has been open, in seconds
    mode: str  # as LOCK TABLE spells it: ACCESS SHARE, ...
    table: str
    granted: bool = True

    def describe(self) -> str:
        """``pid 4242 (app, idle in transaction for 8.1s) holds ACCESS SHARE on public.users``."""
        who = self.application_name or "no application_name"
        verb = "holds" if self.granted else "waits for"
        return (
            f"pid {self.pid} ({who}, {self.state or 'unknown state'} for {self.since_s:.1f}s) "
            f"{verb} {self.mode} on {self.table}"
        )

    def to_json(self) -> dict[str, object]:
        """The audit trail's shape of one blocker."""
        return {**asdict(self), "since_s": round(self.since_s, 1)}


def describe_all(blockers: Sequence[Blocker], limit: int = 3) -> str:
    """``blocked by <one>; <two>`` (empty when nobody is known)."""
    if not blockers:
        return ""
    shown = "; ".join(b.describe() for b in blockers[:limit])
    more = f" (and {len(blockers) - limit} more)" if len(blockers) > limit else ""
    return f"blocked by {shown}{more}"


def select_blockers(rows: Sequence[tuple[Any, ...]], requested: str | None) -> tuple[Blocker, ...]:
    """The sessions among ``rows`` (as :data:`_LOCKS_SQL` returns them) that made a request
    for ``requested`` wait (pure): granted conflicting locks, then queued conflicting
    requests that no other listed session blocks. ``None`` means the mode is unknown, so
    every lock counts (as if ACCESS EXCLUSIVE)."""
    wanted = requested or "ACCESS EXCLUSIVE"
    found: list[Blocker] = []
    seen: set[int] = set()
    for pid, mode, granted, table, app, state, since, _blocking in rows:
        held = pg_mode(str(mode))
        if int(pid) in seen or not conflicts(wanted, held):
            continue
        seen.add(int(pid))
        found.append(
            Blocker(int(pid), str(app), str(state), float(since or 0.0), held, str(table), granted)
        )
    return tuple(found)


def find_blockers(
    conn: psycopg.Connection[Any], tables: Sequence[str] | None, requested: str | None
) -> tuple[Blocker, ...]:
    """Who holds conflicting locks on ``tables`` (every table: None) now (best effort)."""
    if tables is not None and not tables:
        return ()
    try:
        listed = None if tables is None else list(tables)
        rows = conn.execute(_LOCKS_SQL, {"tables": listed}).fetchall()
    except psycopg.Error:
        return ()
    return select_blockers(rows, requested)


def holders_at(url: str, requested: str) -> str:
    """``blocked by ...``: who holds a lock on any table that ``requested`` waits for, asked
    on a new connection (what ``pg_dump`` or ``psql`` cannot say); empty when unknown."""
    try:
        with connect(url, autocommit=True) as conn:
            return describe_all(find_blockers(conn, None, requested))
    except DatabaseError:
        return ""


def pg_dump_lock_wait(stderr: str, url: str, waited: float) -> str | None:
    """Why ``pg_dump`` stopped when its ``--lock-wait-timeout`` ran out (its ``stderr``
    quotes the ``LOCK TABLE`` it gave up on), naming who holds the lock; None when
    ``stderr`` tells of another failure."""
    if "Query was: LOCK TABLE" not in stderr:
        return None
    held = holders_at(url, "ACCESS SHARE") or "locked by a session that has ended since"
    return f"pg_dump waited {waited:g}s for ACCESS SHARE on a table it reads ({held})"


def statement_locks(statement: str) -> tuple[list[str], str | None]:
    """The tables ``statement`` locks and the strongest mode it needs there (pure, best
    effort: the analysis's reading, else the table names a regex finds, mode unknown)."""
    from orchestrator.analysis.effects import analyse_sql  # pglast's tree: only when needed

    try:
        effects = analyse_sql(statement)
    except Exception:  # an exotic statement: fall back to the regex below
        effects = None
    locks = migration_locks(effects) if effects is not None else ()
    if tables := {lock.table: lock.mode for lock in locks}:  # the strongest mode per table
        return list(tables), functools.reduce(stronger, tables.values())
    return relations_in(statement), None


# The tables a DDL statement has to lock: ALTER TABLE x, CREATE INDEX ... ON x, REFERENCES x...
_RELATION = re.compile(
    r"\b(?:ALTER\s+TABLE|DROP\s+TABLE|TRUNCATE|LOCK\s+TABLE|ON|REFERENCES|INTO|UPDATE)\s+"
    r"(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?((?:\"[^\"]+\"|\w+)(?:\.(?:\"[^\"]+\"|\w+))?)",
    re.IGNORECASE,
)

_NOT_RELATIONS = frozenset({"DELETE", "UPDATE", "CASCADE", "RESTRICT", "NO", "SET", "COMMIT"})


def relations_in(statement: str) -> list[str]:
    """The table names a statement locks, as written (pure, best effort)."""
    names = (m.group(1) for m in _RELATION.finditer(statement))
    return list(dict.fromkeys(n for n in names if n.upper() not in _NOT_RELATIONS))


@dataclass(frozen=True)
class LockWait:
    """What a watched backend was seen waiting for: a lock on ``table`` in ``mode``."""

    table: str  # schema.name
    mode: str  # as LOCK TABLE spells it
    blockers: tuple[Blocker, ...]


def wait_from_rows(rows: Sequence[tuple[Any, ...]]) -> LockWait | None:
    """The wait :data:`_WAIT_SQL`'s ``rows`` describe (pure): ``None`` without one. The
    backend waits for one lock at a time, so every row names the same table and mode."""
    if not rows:
        return None
    requested = pg_mode(str(rows[0][8]))
    return LockWait(str(rows[0][3]), requested, select_blockers([r[:8] for r in rows], requested))


class LockWatch:
    """Looks at backend ``pid`` every ``interval`` seconds from a second connection, in a
    thread, and keeps the last table lock it was seen waiting for (:attr:`last`).

    Best effort: when the second connection cannot be opened or a look fails, it just sees
    nothing. The second connection only reads ``pg_locks``: it never queues for a lock.
    """

    def __init__(self, conn: psycopg.Connection[Any], interval: float) -> None:
        self.pid = conn.info.backend_pid
        self.interval = interval
        self.last: LockWait | None = None
        self._source = conn
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watcher: psycopg.Connection[Any] | None = None

    def __enter__(self) -> LockWatch:
        info = self._source.info
        name = info.get_parameters().get("application_name") or "orchestrator"
        try:
            self._watcher = psycopg.connect(
                info.dsn,
                password=info.password,
                autocommit=True,
                connect_timeout=10,
                application_name=f"{name} lock watch",
            )
        except psycopg.Error:
            return self
        self._thread = threading.Thread(target=self._watch, name="lock-watch", daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        assert self._watcher is not None
        while not self._stop.wait(self.interval):
            try:
                rows = self._watcher.execute(_WAIT_SQL, (self.pid,)).fetchall()
            except psycopg.Error:
                return
            if (seen := wait_from_rows(rows)) is not None:
                self.last = seen

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._watcher is not None:
            self._watcher.close()
