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
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple, replace
from functools import partial

from orchestrator.catalog import History, ReplayFailure
from orchestrator.db.connect import connect
from orchestrator.drizzle.journal import Journal, Migration
from orchestrator.errors import DatabaseError
from orchestrator.shadow import cache
from orchestrator.shadow.replay import (
    IncompleteReplay,
    ReplayError,
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
#: A type, function, or schema that does not exist: maybe an extension production has.
UNDEFINED = ("42704", "42883", "3F000")
_EXISTING_EXTENSION = re.compile(r'extension "([^"]+)" already exists')

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
    """The folder's history replayed from ``start`` on the shadow and cached (when the cache
    had none); with production's ``extensions`` created first where a migration needs one
    that no migration creates (:func:`_replayed_with`)."""
    with ShadowServer(shadow) as server:
        # A named shadow's version is known only once connected: its replay may be cached.
        look_up = partial(cached_history, production_major=server.major, extensions=extensions)
        if found := look_up(journal, shadow, start=start):
            return found

        def replay(seed: Mapping[str, str]) -> History:
            run = partial(replay_history, start=start, server=server.description, extensions=seed)
            try:
                with server.database() as url:
                    return run(url, journal)
            except IncompleteReplay:
                with server.database() as url:
                    return run(url, journal, incremental=False)

        history = _replayed_with(extensions or {}, replay, history=replay({}), server=server)
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


def _replayed_with(
    extensions: Mapping[str, str],
    replay: Callable[[Mapping[str, str]], History],
    *,
    history: History,
    server: ShadowServer,
) -> History:
    """``history``, or the folder replayed with production's ``extensions`` created first
    when a migration failed for a type, function or schema no migration creates (a
    console's ``CREATE EXTENSION``) and that replay goes further. One a migration creates
    itself is not created first. Raises :class:`ReplayError` when it does not go further
    and the shadow cannot create some of them: they may be what the migration needs."""
    failure = history.failure
    seed = {name: s for name, s in extensions.items() if f"extension {name}" not in history.initial}
    if not seed or failure is None or failure.sqlstate not in UNDEFINED:
        return history
    seeded = replay(seed)
    while seeded.failure and (found := _EXISTING_EXTENSION.search(seeded.failure.message)):
        if seed.pop(found.group(1), None) is None:
            break
        seeded = replay(seed)
    if len(seeded.deltas) > len(history.deltas):
        names = ", ".join(name for name, _ in seeded.seeded)
        return replace(seeded, server=f"{seeded.server}, {names} created first")
    if lacking := [name for name in seed if f"extension {name}" not in seeded.initial]:
        raise ReplayError(
            f"{failure.tag} uses what no migration creates ({failure.message}); production "
            f"has extensions the shadow ({server.description}) cannot create, which may "
            f"provide it: {', '.join(lacking)}. Name a shadow server that has them "
            "(--shadow-url, or the playbook's shadow: {url_env: NAME}), or fix the migration"
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
        create_extensions(conn, dict(seeded))
        for migration in done:
            if (failure := apply_migration(conn, migration, server.description)) is not None:
                return failure
        refusal = run_in_transaction(conn, pending, commit=False, server=server.description)
        key = cache.cache_key(hashes, server.major, kind=kind)
    if refusal is None:
        cache.store(directory, key, {"refusal": None})
    return refusal
