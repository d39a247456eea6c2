"""Read-only reports on a release: ``plan`` (risk, compatibility, strategy and the locks each
statement takes), ``lint`` (the rules, one finding each) and ``inspect`` (every table with its
creating migration, and drift both ways).

Each reads the folder's history from the shadow (:mod:`orchestrator.shadow`) and, where it
names a database, that database's state through :mod:`orchestrator.database`; the analysis
itself is pure (:mod:`orchestrator.analysis`, :mod:`orchestrator.inventory`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from orchestrator.analysis.effects import analyse_migrations
from orchestrator.analysis.lint import LintFinding, lint_migrations
from orchestrator.analysis.plan import Plan, build_plan, statement_texts
from orchestrator.catalog import History
from orchestrator.database import DEFAULT_RETRY, folder_history, judge_database, take_snapshot
from orchestrator.db.migrator import MigrateOptions
from orchestrator.db.retry import OnRetry, RetryPolicy
from orchestrator.drizzle.journal import Journal
from orchestrator.errors import DatabaseError, UsageError
from orchestrator.inventory import Inventory, build_inventory
from orchestrator.shadow import LOCAL_SHADOW, ShadowSpec
from orchestrator.shadow.locks import locks_taken as shadow_locks
from orchestrator.validation import MigrationState, Verdict

__all__ = ["inspect", "lint", "plan", "shadow_facts"]


def plan(
    url: str | None,
    journal: Journal,
    options: MigrateOptions,
    *,
    shadow: ShadowSpec = LOCAL_SHADOW,
    retry: RetryPolicy = DEFAULT_RETRY,
    on_retry: OnRetry | None = None,
) -> Plan:
    """Risk, compatibility and strategy of the migrations the database lacks (every
    migration when ``url`` is None), read with the folder's facts from the shadow. The
    database's states come from ``validate``, so plan and validate never disagree on what
    is pending. Without shadow facts: from the SQL alone, with a note."""
    tags = history = None
    if url is None:
        journal.refuse_unrunnable(journal.migrations)
    else:
        report, history = judge_database(
            url, journal, options, shadow=shadow, retry=retry, on_retry=on_retry, history=None
        )
        if report.status is Verdict.ERROR:
            raise DatabaseError(report.first_error("cannot tell the migration state"))
        tags = {m.tag for m in report.migrations if m.state is not MigrationState.APPLIED}
    # The history validate judged by: replayed in production's zone, not in UTC again.
    history, locks, note = shadow_facts(journal, shadow, options, tags, history)
    return replace(build_plan(journal, tags, history, locks), note=note)


def shadow_facts(
    journal: Journal,
    shadow: ShadowSpec,
    options: MigrateOptions,
    tags: set[str] | None,
    history: History | None = None,
) -> tuple[History | None, Mapping[str, Any], str]:
    """The folder's history from the shadow (``history`` if known) and the locks each
    statement of the migrations ``tags`` (all when None) takes there
    (:mod:`orchestrator.shadow.locks`); or None, no locks and a one-line note saying why not
    (no server to replay on, or PostgreSQL refused the folder): the analysis then reads the
    SQL alone."""
    try:
        history = history or folder_history(journal, options, shadow)
        if history.failure is None:
            texts = statement_texts(journal, tags)
            return history, shadow_locks(journal, texts, shadow, history.seeded), ""
        reason = f"PostgreSQL refused {history.failure}"
    except (UsageError, DatabaseError) as exc:
        reason = " ".join(str(exc).split())
    return None, {}, f"no facts from the shadow, static rules only: {reason}"


def lint(
    journal: Journal, *, allow_concurrent: bool = False, shadow: ShadowSpec = LOCAL_SHADOW
) -> tuple[list[LintFinding], str]:
    """Every lint finding of every migration of ``journal``, in order (the whole folder taken
    as one release; ``allow_concurrent``: non-transactional statements are warnings), read
    with the folder's facts from the shadow; and a note when there are none."""
    # A COMMIT is a finding: in a migration drizzle applied long ago it is history, not input
    journal.refuse_unrunnable(journal.migrations, transaction_control=False)
    history, locks, note = shadow_facts(journal, shadow, MigrateOptions(), None)
    analysis = analyse_migrations([(m.tag, m.statements) for m in journal.migrations], history)
    findings = lint_migrations(analysis.migrations, allow_concurrent=allow_concurrent, locks=locks)
    return findings, note


def inspect(
    url: str,
    journal: Journal,
    options: MigrateOptions,
    *,
    shadow: ShadowSpec = LOCAL_SHADOW,
    retry: RetryPolicy = DEFAULT_RETRY,
    on_retry: OnRetry | None = None,
) -> Inventory:
    """Every table with its columns and creating migration, and drift against the tracked
    migrations; read-only."""
    snapshot = take_snapshot(url, options, retry=retry, on_retry=on_retry)
    history = folder_history(journal, options, shadow, production=snapshot)
    if any(m.hash in snapshot.row_hashes for m in journal.migrations[len(history.deltas) :]):
        raise DatabaseError(
            f"cannot tell: production tracks what the shadow cannot replay: {history.failure}"
        )
    return build_inventory(journal, history, snapshot)
