"""Validate a database: the read-only operations every verb and the deploy engine share.

``validate_database`` reads one catalog snapshot of production (retrying transient
failures), gets the folder's history as PostgreSQL builds it on a shadow database
(:mod:`orchestrator.shadow`, cached by the migrations' hashes) and judges the one against
the other. It does not know the command line; migrating, which validates before and after,
is :mod:`orchestrator.migrate`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from functools import partial

from psycopg import ConnectionInfo

from orchestrator.catalog import CatalogSnapshot, History
from orchestrator.db.catalog_reader import read_catalog
from orchestrator.db.connect import check_url, connect
from orchestrator.db.migrator import MigrateOptions
from orchestrator.db.retry import OnRetry, RetryPolicy, call_with_retry
from orchestrator.drizzle.journal import Journal
from orchestrator.errors import DatabaseError
from orchestrator.shadow import (
    LOCAL_SHADOW,
    ReplayStart,
    ShadowSpec,
    cached_history,
    replayed_history,
)
from orchestrator.validation import ValidationReport, error_report, validate

DEFAULT_RETRY = RetryPolicy()


def take_snapshot(
    url: str,
    options: MigrateOptions,
    *,
    retry: RetryPolicy = DEFAULT_RETRY,
    on_retry: OnRetry | None = None,
    on_connected: Callable[[ConnectionInfo], object] | None = None,
) -> CatalogSnapshot:
    """One catalog snapshot of the database at ``url`` (a read-only transaction that waits at
    most ``options.read_lock_timeout`` seconds for a table lock); transient failures retried.

    ``on_connected``: called with the connection's info (the server's version, the TimeZone
    its sessions start in) once connected (again on a retry), before the statement is sent;
    work it starts in another thread overlaps the time the server takes to print its catalog.
    """

    def attempt() -> CatalogSnapshot:
        with connect(url, autocommit=True) as conn:
            if on_connected is not None:
                on_connected(conn.info)
            return read_catalog(
                conn,
                schema=options.schema,
                table=options.table,
                lock_timeout=options.read_lock_timeout,
            )

    return call_with_retry(attempt, retry, on_retry=on_retry)


# The names PostgreSQL takes for UTC (a Neon session's TimeZone is GMT): one start, so one
# replay and one cache entry, whichever a server or a command (lint, plan --all: UTC) says.
_UTC_NAMES = frozenset(
    f"{prefix}{name}"
    for prefix in ("", "Etc/")
    for name in ("UTC", "UCT", "GMT", "GMT0", "Greenwich", "Universal", "Zulu")
)


def replay_start(options: MigrateOptions, zone: str = "UTC") -> ReplayStart:
    """Where a replay for ``options`` starts: their tracking table, sessions in ``zone``."""
    return ReplayStart(options.schema, options.table, "UTC" if zone in _UTC_NAMES else zone)


def folder_history(
    journal: Journal,
    options: MigrateOptions,
    shadow: ShadowSpec = LOCAL_SHADOW,
    *,
    production: CatalogSnapshot | None = None,
    extensions: Mapping[str, str] | None = None,
) -> History:
    """The folder's history as the shadow builds it: from the cache, else replayed; as on
    ``production`` (its major version, its sessions' TimeZone, its extensions) when given,
    else with ``extensions`` (name: schema) where a migration needs one."""
    start = replay_start(options, production.zone if production else "UTC")
    major = production.server_major if production else None
    extensions = production.extensions if production else extensions
    look_up = partial(cached_history, production_major=major, extensions=extensions)

    def history_from(start: ReplayStart) -> History:
        cached = look_up(journal, shadow, start=start)
        return cached or replayed_history(journal, shadow, start=start, extensions=extensions)

    history = history_from(start)
    # An extension production has and a migration it has not run creates: it had it first.
    if production and (later := history.created_unapplied(production)):
        history = history_from(replace(start, extensions=tuple(sorted(later.items()))))
    return history


def validate_database(
    url: str,
    journal: Journal,
    options: MigrateOptions,
    *,
    shadow: ShadowSpec = LOCAL_SHADOW,
    retry: RetryPolicy = DEFAULT_RETRY,
    on_retry: OnRetry | None = None,
    history: History | None = None,
) -> ValidationReport:
    """Read-only on production: judge the database at ``url`` against ``journal``.

    Bad input raises :class:`UsageError`: a migration still to run that drizzle would run
    other than as written, a shadow that lacks an extension the folder needs. An unreachable
    or unreadable database yields a report with verdict ERROR rather than an exception,
    since "cannot tell" is a verdict. ``history``: the folder's history when the caller has
    it already (it does not depend on the database).
    """
    return judge_database(
        url, journal, options, shadow=shadow, retry=retry, on_retry=on_retry, history=history
    )[0]


def judge_database(
    url: str,
    journal: Journal,
    options: MigrateOptions,
    *,
    shadow: ShadowSpec,
    retry: RetryPolicy,
    on_retry: OnRetry | None,
    history: History | None,
) -> tuple[ValidationReport, History | None]:
    """:func:`validate_database`, and the history it judged by (None on ERROR)."""
    check_url(url)
    shadow.check_not(url)
    with ThreadPoolExecutor(max_workers=1) as background:
        cached: list[Future[History | None]] = []

        def look_up_cached_history(info: ConnectionInfo) -> None:
            # The cache is read while production prints its catalog.
            if history is None and not cached:
                start = replay_start(options, info.parameter_status("TimeZone") or "UTC")
                look_up = partial(cached_history, production_major=info.server_version // 10000)
                cached.append(background.submit(look_up, journal, shadow, start=start))

        try:
            snapshot = take_snapshot(
                url, options, retry=retry, on_retry=on_retry, on_connected=look_up_cached_history
            )
        except DatabaseError as exc:
            return error_report(str(exc)), history
    journal.refuse_unrunnable(journal.untracked(snapshot.row_hashes))
    if history is None:  # the cache was asked already: on a miss, replay
        found = cached[0].result() if cached else None
        if (
            found is None
            or not found.fits(snapshot.extensions)
            or found.created_unapplied(snapshot)
        ):
            found = folder_history(journal, options, shadow, production=snapshot)
        history = found
    return validate(journal, history, snapshot), history
