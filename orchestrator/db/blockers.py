"""Who blocked a migration statement: the sessions holding conflicting locks on its tables.

When ``lock_timeout`` fires, our statement has left the lock queue, so
``pg_blocking_pids(<our pid>)`` is empty by the time we can ask. We ask the next best thing,
at once and on the same connection (whose transaction has just rolled back): which other
sessions hold (or wait for) a lock on the statement's tables in a mode that conflicts with
the one the statement needed, with ``pg_blocking_pids`` of the waiters to name the session at
the head of the queue, and ``pg_stat_activity`` for who they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from orchestrator.analysis.locks import conflicts, pg_mode

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
   AND l.relation IN (SELECT to_regclass(r) FROM unnest(%s::text[]) AS r)
 ORDER BY l.granted DESC, a.xact_start NULLS LAST, l.pid
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
        return {
            "pid": self.pid,
            "application_name": self.application_name,
            "state": self.state,
            "since_s": round(self.since_s, 1),
            "mode": self.mode,
            "table": self.table,
            "granted": self.granted,
        }


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
    conn: psycopg.Connection[Any], tables: Sequence[str], requested: str | None
) -> tuple[Blocker, ...]:
    """Who holds conflicting locks on ``tables`` now (best effort: empty on any error)."""
    if not tables:
        return ()
    try:
        rows = conn.execute(_LOCKS_SQL, (list(tables),)).fetchall()
    except psycopg.Error:
        return ()
    return select_blockers(rows, requested)


def statement_locks(statement: str) -> tuple[list[str], str | None]:
    """The tables ``statement`` locks and the strongest mode it needs there (pure, best
    effort: the analysis's reading, else the table names a regex finds, mode unknown)."""
    from orchestrator.analysis.effects import analyse_sql
    from orchestrator.analysis.locks import lock_mode, stronger

    tables: dict[str, str] = {}
    try:
        effects = analyse_sql(statement)
    except Exception:  # an exotic statement: fall back to the regex below
        effects = None
    for change in effects.changes if effects is not None else ():
        mode = lock_mode(change)
        if mode is not None and change.table is not None:
            known = tables.get(change.table)
            tables[change.table] = mode if known is None else stronger(mode, known)
    if tables:
        strongest = None
        for mode in tables.values():
            strongest = mode if strongest is None else stronger(strongest, mode)
        return list(tables), strongest
    from orchestrator.db.migrator import relations_in

    return relations_in(statement), None
