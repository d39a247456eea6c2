"""Decide the migration state of a database: the report (:mod:`.report`), the judgement of
the schema against the history PostgreSQL built on a shadow database (:mod:`.judge`), and the
findings, checks and advice that come with it (:mod:`.findings`). Pure functions over plain
data; nothing here reads a database.
"""

from orchestrator.validation.judge import error_report, evidence_state, validate, verdict_for
from orchestrator.validation.report import (
    Check,
    Finding,
    MigrationState,
    MigrationStatus,
    ValidationReport,
    Verdict,
    summarize_missing,
)

__all__ = [
    "Check",
    "Finding",
    "MigrationState",
    "MigrationStatus",
    "ValidationReport",
    "Verdict",
    "error_report",
    "evidence_state",
    "summarize_missing",
    "validate",
    "verdict_for",
]
