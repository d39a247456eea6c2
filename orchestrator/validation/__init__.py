"""Decide the migration state of a database: the report (:mod:`.report`), the judgement of
the schema against the history PostgreSQL built on a shadow database (:mod:`.judge`), and the
findings, checks and advice that come with it (:mod:`.findings`). Pure functions over plain
data; nothing here reads a database.
"""

from orchestrator.validation.findings import (
    build_checks,
    drift_finding,
    out_of_order_findings,
    recommend,
    stray_file_findings,
    tracking_findings,
    unknown_hash_findings,
)
from orchestrator.validation.judge import (
    HistoryReading,
    error_report,
    evidence_state,
    read_history,
    validate,
    verdict_for,
)
from orchestrator.validation.report import (
    UNRECONCILED,
    Check,
    Finding,
    MigrationState,
    MigrationStatus,
    Severity,
    ValidationReport,
    Verdict,
    summarize_missing,
)

__all__ = [
    "UNRECONCILED",
    "Check",
    "Finding",
    "HistoryReading",
    "MigrationState",
    "MigrationStatus",
    "Severity",
    "ValidationReport",
    "Verdict",
    "build_checks",
    "drift_finding",
    "error_report",
    "evidence_state",
    "out_of_order_findings",
    "read_history",
    "recommend",
    "stray_file_findings",
    "summarize_missing",
    "tracking_findings",
    "unknown_hash_findings",
    "validate",
    "verdict_for",
]
