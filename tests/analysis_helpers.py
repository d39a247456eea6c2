"""Test helpers for the analysis: SQL read with the facts of its replay on the shadow server
(the test server, see conftest's ``shadow_server``). No assertions here."""

from __future__ import annotations

import os

from orchestrator.analysis.changes import MigrationEffects
from orchestrator.analysis.effects import analyse_migrations
from orchestrator.catalog import History
from orchestrator.database import folder_history
from orchestrator.db.migrator import MigrateOptions
from orchestrator.drizzle.journal import Journal, Migration, hash_sql
from orchestrator.shadow import SHADOW_URL_ENV, ShadowSpec


def journal_of(*migrations: tuple[str, str]) -> Journal:
    """A journal of ``(tag, sql)`` in order (pieces split at drizzle's breakpoints)."""
    return Journal(
        "test",
        "postgresql",
        tuple(
            Migration(index, tag, 1_700_000_000_000 + index, sql, hash_sql(sql))
            for index, (tag, sql) in enumerate(migrations)
        ),
    )


def replayed(journal: Journal) -> History:
    """The journal's history, replayed on the test server."""
    return folder_history(journal, MigrateOptions(), ShadowSpec(os.environ[SHADOW_URL_ENV]))


def analyse_on_shadow(sql: str, *, before: str = "", tag: str = "snippet") -> MigrationEffects:
    """The effects of ``sql`` as a migration after ``before`` (an earlier migration), read
    with the facts the shadow gives when it replays both."""
    journal = journal_of(*([("before", before)] if before else []), (tag, sql))
    folder = [(m.tag, m.statements) for m in journal.migrations]
    return analyse_migrations(folder, replayed(journal)).by_tag(tag)
