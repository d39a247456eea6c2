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
from collections.abc import Mapping, Sequence
from dataclasses import astuple
from functools import partial

from orchestrator.catalog import History, ReplayFailure
from orchestrator.db.connect import connect
from orchestrator.drizzle.journal import Journal, Migration
from orchestrator.errors import DatabaseError
from orchestrator.shadow import cache
from orchestrator.shadow.replay import (
    IncompleteReplay,
    ReplayStart,
    apply_migration,
    create_extensions,
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
#: release (resources, connection, concurrency, operator, system): the shadow's error.
CIRCUMSTANTIAL = ("08", "40", "53", "57", "58", "XX")

__all__ = [
    "LOCAL_SHADOW",
    "SHADOW_URL_ENV",
    "ReplayStart",
    "ShadowSpec",
    "cached_history",
    "one_transaction_refusal",
    "replayed_history",
]


def cached_history(
    journal: Journal,
    shadow: ShadowSpec,
    *,
    start: ReplayStart,
    production_major: int | None = None,
    extensions: Mapping[str, str] | None = None,
) -> History | None:
    """The folder's history if the cache holds it: replayed from ``start`` on production's
    major version, else (no shadow server named) on the local server binaries' one; with
    ``extensions`` (production's), only one that :meth:`~History.fits` them."""
    directory = cache.cache_directory(os.environ)
    hashes = [m.hash for m in journal.migrations]
    for major in dict.fromkeys([production_major, local_major() if shadow.url is None else None]):
        if major and (found := cache.load_history(directory, hashes, major, astuple(start))):
            return found if extensions is None or found.fits(extensions) else None
    return None


def replayed_history(
    journal: Journal,
    shadow: ShadowSpec,
    *,
    start: ReplayStart,
    extensions: Mapping[str, str] | None = None,
) -> History:
    """The folder's history replayed from ``start`` on the shadow, with production's
    ``extensions`` where a migration needs one no migration creates, and cached (when the
    cache had none)."""
    with ShadowServer(shadow) as server:
        # A named shadow's version is known only once connected: its replay may be cached.
        look_up = partial(cached_history, production_major=server.major, extensions=extensions)
        if found := look_up(journal, shadow, start=start):
            return found
        replay = partial(
            replay_history, start=start, server=server.description, extensions=extensions
        )
        try:
            with server.database() as url:
                history = replay(url, journal)
        except IncompleteReplay:
            with server.database() as url:
                history = replay(url, journal, incremental=False)
    # No failure is kept: it may come of what this shadow lacks (an OS locale, a tablespace, an
    # older extension), which another shadow, or this one later, has.
    if (failure := history.failure) is None:
        cache.store_history(cache.cache_directory(os.environ), history, astuple(start))
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
    start: ReplayStart,
    major: int | None = None,
    seeded: Sequence[tuple[str, str]] = (),
) -> ReplayFailure | None:
    """Whether PostgreSQL runs ``pending`` in one transaction after ``done`` (from
    ``start``): its refusal (the statement and PostgreSQL's message), or None.
    Asked of the shadow, and cached: for ``major`` (the PostgreSQL major version the
    folder's history was replayed on) or the local server's."""
    if not pending:
        return None
    directory = cache.cache_directory(os.environ)
    hashes = [m.hash for m in done] + ["--"] + [m.hash for m in pending]
    kind = f"one-transaction {astuple(start)!r} {tuple(seeded)!r}"
    for known_major in dict.fromkeys([major, local_major() if shadow.url is None else None]):
        if known_major and cache.load(directory, cache.cache_key(hashes, known_major, kind=kind)):
            return None  # only answers without a refusal are kept
    with (
        ShadowServer(shadow) as server,
        server.database() as url,
        connect(url, autocommit=True) as conn,
    ):
        start_as_production(conn, start)
        wanted = dict(seeded)
        for migration in done:
            if failure := apply_migration(conn, migration, server.description, wanted):
                return failure
        create_extensions(conn, wanted, wanted)  # production has them all by now
        refusal = run_in_transaction(conn, pending, commit=False, server=server.description)
        key = cache.cache_key(hashes, server.major, kind=kind)
    if refusal is None:
        cache.store(directory, key, {"refusal": None})
    return refusal
