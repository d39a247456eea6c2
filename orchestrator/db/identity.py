"""Which database a connection string reaches: the identity a run pins at its start.

PostgreSQL names a cluster by the ``system_identifier`` of its control file (set by initdb, kept by
every restart, replica and restore of that cluster) and a database in it by its oid and name. Neon's
branches of one project share all three (a branch is a copy-on-write copy of its parent), so on Neon
the project and branch are read too: the compute's ``neon.tenant_id`` and ``neon.timeline_id``
settings. A run records them before it changes anything; a resume whose connection string reaches
another database (an empty one, a restored copy under a new cluster, staging, another Neon branch)
is refused before it acts. :func:`identity_changes` is the pure judgement; :func:`named_database`
judges from the connection string alone, where connecting is not wanted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from orchestrator.db.connect import connect, database_error, is_local_host, neon_direct_host
from orchestrator.errors import DatabaseError

_KEYS = ("system_identifier", "database_oid", "database_name")
# Neon's project and branch, as its compute names them; absent elsewhere.
_NEON_SETTINGS = {"neon_project": "neon.tenant_id", "neon_branch": "neon.timeline_id"}


def read_identity(url: str, *, started: bool = False) -> dict[str, str]:
    """``system_identifier``, ``database_oid`` and ``database_name`` of the database ``url``
    reaches (strings: the identifier does not fit JSON's safe integers). ``started``: with
    its server's start time too, which a run does not pin (every restart changes it).

    :class:`DatabaseError` (transient when a retry may help) when it cannot be read.
    """
    try:
        with connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT (SELECT system_identifier FROM pg_control_system())::text, "
                "d.oid::text, d.datname, pg_postmaster_start_time()::text FROM pg_database d "
                "WHERE d.datname = current_database()"
            ).fetchone()
            if row is None:
                raise DatabaseError("cannot read which database this is: no current database")
            identity = dict(zip(_KEYS, (str(value) for value in row[:3]), strict=True))
            if started:
                identity["server_started"] = str(row[3])
            for key, setting in _NEON_SETTINGS.items():
                if value := _setting(conn, setting):
                    identity[key] = value
    except psycopg.Error as exc:
        raise database_error("cannot read which database this is", exc) from exc
    return identity


def _setting(conn: psycopg.Connection[tuple[object, ...]], name: str) -> str | None:
    """A setting's value; None when the server has none (not Neon) or hides it from us."""
    try:
        row = conn.execute("SELECT current_setting(%s, true)", (name,)).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return None
    return str(row[0]) if row is not None and row[0] else None


def identity_changes(pinned: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """How the database reached ``now`` differs from the one ``pinned`` (empty: the same)."""
    return [
        f"{key} was {pinned[key]}, is {now.get(key)}"
        for key in (*_KEYS, *sorted(set(pinned) - set(_KEYS)))
        if key in pinned and str(pinned[key]) != str(now.get(key))
    ]


def same_database(url: str, other: str) -> bool:
    """Whether ``url`` and ``other`` reach the same database, however each spells its server
    (localhost, a DNS alias, Neon's pooled endpoint): the same identity on the same running
    server. A physical copy (a snapshot restored, a fork) has its original's identity but a
    server of its own, started at another time."""
    return read_identity(url, started=True) == read_identity(other, started=True)


def named_database(url: str) -> tuple[str, str, str]:
    """Host, port and database, each server spelled one way: lowercased without a final dot,
    Neon's pooled endpoint as its direct one, localhost, loopback and a socket as this machine."""
    params = conninfo_to_dict(url)
    host = str(params.get("host") or params.get("hostaddr") or "")
    host = (direct[1] if (direct := neon_direct_host(url)) else host).lower().removesuffix(".")
    return (
        "" if is_local_host(host) else host,
        str(params.get("port") or "5432"),
        str(params.get("dbname") or params.get("user") or ""),
    )
