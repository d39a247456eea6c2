"""PostgreSQL is the model: a folder's history (the catalog after every prefix of it, a
:class:`~orchestrator.catalog.History`) is what PostgreSQL builds when it replays it.

It comes from the cache when this folder was replayed before on the same PostgreSQL major
version (:func:`cached_history`), else from a replay on a shadow server
(:func:`replayed_history`; :mod:`.server`, :mod:`.replay`). :func:`one_transaction_refusal`
asks the shadow whether the pending migrations run in one transaction, as ``migrate`` will
run them. Nothing here ever connects to production.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from functools import partial

from orchestrator.catalog import History, ReplayFailure
from orchestrator.db.connect import connect
from orchestrator.drizzle.journal import Journal, Migration
from orchestrator.errors import DatabaseError
from orchestrator.shadow import cache
from orchestrator.shadow.replay import (
    IncompleteReplay,
    apply_migration,
    replay_history,
    run_in_transaction,
    start_as_production,
)
from orchestrator.shadow.server import ShadowServer, ShadowSpec, local_major

#: No server named: a throwaway local cluster.
LOCAL_SHADOW = ShadowSpec()
#: The environment variable naming a shadow server (``--shadow-url``'s default).
SHADOW_URL_ENV = "ORCHESTRATOR_SHADOW_URL"
#: SQLSTATE classes of a failure that says more of the server at that moment than of the
#: release (resources, connection, concurrency, operator, system): the shadow's error, not the
#: folder's. No failure is cached at all: one may come of what this shadow server lacks (an OS
#: locale, a tablespace, an older extension), which another shadow, or this one later, has.
CIRCUMSTANTIAL = ("08", "40", "53", "57", "58", "XX")

__all__ = [
    "LOCAL_SHADOW",
    "SHADOW_URL_ENV",
    "ShadowSpec",
    "TrackingTable",
    "cached_history",
    "one_transaction_refusal",
    "replayed_history",
]


@dataclass(frozen=True)
class TrackingTable:
    """Where drizzle keeps its tracking rows: left out of every snapshot."""

    schema: str = "drizzle"
    table: str = "__drizzle_migrations"


def cached_history(
    journal: Journal,
    shadow: ShadowSpec,
    *,
    production_major: int | None = None,
    tracking: TrackingTable = TrackingTable(),
    zone: str = "UTC",
) -> History | None:
    """The folder's history if the cache holds it: replayed on production's major version,
    else (no shadow server named) on the local server binaries' one, in TimeZone ``zone``."""
    directory = cache.cache_directory(os.environ)
    hashes = [m.hash for m in journal.migrations]
    for major in dict.fromkeys([production_major, local_major() if shadow.url is None else None]):
        if major and (
            found := cache.load_history(directory, hashes, major, (*astuple(tracking), zone))
        ):
            return found
    return None


def replayed_history(
    journal: Journal,
    shadow: ShadowSpec,
    *,
    tracking: TrackingTable = TrackingTable(),
    zone: str = "UTC",
) -> History:
    """The folder's history replayed on the shadow and cached (when the cache had none), its
    migrations run in TimeZone ``zone`` (production's sessions')."""
    directory = cache.cache_directory(os.environ)
    with ShadowServer(shadow) as server:
        # A named shadow's version is known only once connected: its replay may be cached.
        hashes = [m.hash for m in journal.migrations]
        found = cache.load_history(directory, hashes, server.major, (*astuple(tracking), zone))
        if found is not None:
            return found
        replay = partial(
            replay_history,
            schema=tracking.schema,
            table=tracking.table,
            server=server.description,
            zone=zone,
        )
        try:
            with server.database() as url:
                history = replay(url, journal)
        except IncompleteReplay:
            with server.database() as url:
                history = replay(url, journal, incremental=False)
    if (failure := history.failure) is None:
        cache.store_history(directory, history, (*astuple(tracking), zone))
    elif (failure.sqlstate or "").startswith(CIRCUMSTANTIAL):  # not the folder
        raise DatabaseError(
            f"the shadow ({server.description}) failed replaying {failure.tag}: "
            f"{failure.message} [{failure.sqlstate}]; nothing was cached: try again",
            transient=True,
        )
    return history


def one_transaction_refusal(
    done: Sequence[Migration],
    pending: Sequence[Migration],
    shadow: ShadowSpec,
    *,
    major: int | None = None,
    tracking: TrackingTable = TrackingTable(),
) -> ReplayFailure | None:
    """Whether PostgreSQL runs ``pending`` in one transaction after ``done`` (and drizzle's
    ``tracking`` table): its refusal (the statement and PostgreSQL's message), or None.
    Asked of the shadow, and cached: for ``major`` (the PostgreSQL major version the
    folder's history was replayed on) or the local server's."""
    if not pending:
        return None
    directory = cache.cache_directory(os.environ)
    hashes = [m.hash for m in done] + ["--"] + [m.hash for m in pending]
    majors = [major, local_major() if shadow.url is None else None]
    kind = f"one-transaction {astuple(tracking)!r}"
    for known_major in dict.fromkeys(m for m in majors if m):
        key = cache.cache_key(hashes, known_major, kind=kind)
        if cache.load(directory, key) is not None:
            return None  # only answers without a refusal are kept
    with (
        ShadowServer(shadow) as server,
        server.database() as url,
        connect(url, autocommit=True) as conn,
    ):
        start_as_production(conn, schema=tracking.schema, table=tracking.table)
        for migration in done:
            if (failure := apply_migration(conn, migration, server.description)) is not None:
                return failure
        refusal = run_in_transaction(conn, pending, commit=False, server=server.description)
        key = cache.cache_key(hashes, server.major, kind=kind)
    if refusal is None:
        cache.store(directory, key, {"refusal": None})
    return refusal
