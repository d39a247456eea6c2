"""Lint rules over a migration's parsed statements, in the spirit of squawk.

Each rule has a stable name, a severity and a one-line fix; ``docs/migration-analysis.md``
lists them. ``error`` findings fail ``orchestrator lint`` (exit 21); warnings are advice.

A table "exists" when it was created by an earlier migration (or by nothing in the folder,
so outside it); a table created earlier in the same migration is empty and unknown to the
running code, so the locking and compatibility rules leave it alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from orchestrator.analysis.effects import Change, MigrationEffects, StatementEffects

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Rule:
    """A lint rule's identity: name, severity, what it flags, and how to fix it."""

    name: str
    severity: Severity
    summary: str
    fix: str


@dataclass(frozen=True)
class LintFinding:
    """One finding: which rule, in which migration and statement, and a one-line message."""

    rule: str
    severity: Severity
    tag: str
    statement: int | None  # 1-based statement number, None for the whole migration
    message: str

    def to_json(self) -> dict[str, object]:
        """The JSON shape of ``plan``/``lint``: rule, severity, statement, message."""
        return {
            "rule": self.rule,
            "severity": self.severity,
            "statement": self.statement,
            "message": self.message,
        }


NOT_NULL_WITHOUT_DEFAULT = Rule(
    "adding-not-nullable-field",
    "error",
    "ADD COLUMN ... NOT NULL without a DEFAULT on an existing table",
    "add the column nullable (or with a DEFAULT), backfill, then SET NOT NULL in a later release",
)
NON_CONCURRENT_INDEX = Rule(
    "require-concurrent-index-creation",
    "warning",
    "CREATE INDEX without CONCURRENTLY on an existing table blocks its writes while it builds",
    "build it with CREATE INDEX CONCURRENTLY outside the migration transaction, "
    "or accept the write lock on a small table",
)
CONCURRENTLY_IN_TRANSACTION = Rule(
    "concurrently-in-transaction",
    "error",
    "CREATE/DROP INDEX CONCURRENTLY in a migration: drizzle and orchestrator run each "
    "migration inside a transaction, where PostgreSQL rejects it",
    "remove CONCURRENTLY, or run that statement by hand outside the migration",
)
DROP_COLUMN = Rule(
    "ban-drop-column",
    "error",
    "ALTER TABLE ... DROP COLUMN: old code still using the column breaks, and the data is lost",
    "ship code that no longer uses the column first, then drop it in a later release",
)
DROP_TABLE = Rule(
    "ban-drop-table",
    "error",
    "DROP TABLE: old code still using the table breaks, and the data is lost",
    "ship code that no longer uses the table first, then drop it in a later release",
)
RENAME_COLUMN = Rule(
    "renaming-column",
    "error",
    "ALTER TABLE ... RENAME COLUMN: old code uses the old name, new code the new one",
    "add the new column, write both, backfill, switch reads, drop the old one later",
)
RENAME_TABLE = Rule(
    "renaming-table",
    "error",
    "ALTER TABLE ... RENAME TO / SET SCHEMA: old code uses the old name, new code the new one",
    "create the new table (or a view under the old name), migrate code, drop the old later",
)
CHANGE_TYPE = Rule(
    "changing-column-type",
    "error",
    "ALTER COLUMN ... TYPE: rewrites the table under an exclusive lock and may break both sides",
    "add a column of the new type, backfill, switch code to it, drop the old column later",
)
CONSTRAINT_NOT_VALID = Rule(
    "constraint-missing-not-valid",
    "warning",
    "ADD CONSTRAINT FOREIGN KEY/CHECK on an existing table scans it under a lock",
    "add it NOT VALID, then VALIDATE CONSTRAINT in a later migration",
)
NOT_RERUNNABLE = Rule(
    "not-rerunnable",
    "warning",
    "a statement without IF [NOT] EXISTS fails when re-run on a half-applied or hand-applied "
    "database",
    "write IF NOT EXISTS / IF EXISTS (CREATE TABLE, CREATE INDEX, ADD COLUMN, DROP ...)",
)
LOCK_TIMEOUT = Rule(
    "require-lock-timeout",
    "warning",
    "a migration that locks existing tables without SET lock_timeout can queue behind "
    "long queries and block all traffic behind it",
    "start the file with SET lock_timeout = '5s' (`orchestrator migrate` sets one itself; "
    "drizzle-kit migrate does not)",
)
UNPARSEABLE = Rule(
    "unparseable-statement",
    "error",
    "pglast cannot parse the statement: it cannot be analysed (and probably not applied)",
    "fix the SQL syntax",
)

RULES: tuple[Rule, ...] = (
    NOT_NULL_WITHOUT_DEFAULT,
    NON_CONCURRENT_INDEX,
    CONCURRENTLY_IN_TRANSACTION,
    DROP_COLUMN,
    DROP_TABLE,
    RENAME_COLUMN,
    RENAME_TABLE,
    CHANGE_TYPE,
    CONSTRAINT_NOT_VALID,
    NOT_RERUNNABLE,
    LOCK_TIMEOUT,
    UNPARSEABLE,
)

# Change kinds that take a lock on an existing table (everything that touches one, except
# reading data or creating things elsewhere).
_LOCKING_KINDS = frozenset(
    {
        "add_column",
        "drop_column",
        "rename_column",
        "alter_column_type",
        "set_not_null",
        "drop_not_null",
        "set_default",
        "drop_default",
        "add_constraint",
        "drop_constraint",
        "validate_constraint",
        "create_index",
        "drop_index",
        "drop_table",
        "rename_table",
        "other",
    }
)


def takes_lock_on_existing_table(change: Change) -> bool:
    """True when the change locks a table that existed before the migration."""
    return change.on_existing_table and change.kind in _LOCKING_KINDS


ChangeCheck = Callable[[Change], str | None]


def _statement_rules() -> list[tuple[Rule, ChangeCheck]]:
    """(rule, check) pairs; a check returns the message for a change that breaks the rule."""

    def not_null(c: Change) -> str | None:
        if c.kind == "add_column" and c.on_existing_table and c.not_null and not c.has_default:
            return f"{c.target} is added NOT NULL without a DEFAULT: fails on a non-empty table"
        return None

    def index(c: Change) -> str | None:
        if c.kind == "create_index" and c.on_existing_table and not c.concurrently:
            return f"{c.target} is built without CONCURRENTLY on existing table {c.table}"
        return None

    def concurrently(c: Change) -> str | None:
        if c.kind in ("create_index", "drop_index") and c.concurrently:
            return f"{c.target}: CONCURRENTLY cannot run inside the migration's transaction"
        return None

    def drop_column(c: Change) -> str | None:
        return f"{c.target} is dropped" if c.kind == "drop_column" and not c.table_is_new else None

    def drop_table(c: Change) -> str | None:
        return f"{c.target} is dropped" if c.kind == "drop_table" and not c.table_is_new else None

    def rename_column(c: Change) -> str | None:
        if c.kind == "rename_column" and not c.table_is_new:
            return f"{c.target} is renamed {c.detail}"
        return None

    def rename_table(c: Change) -> str | None:
        if c.kind == "rename_table" and not c.table_is_new:
            return f"{c.target} is renamed {c.detail}"
        return None

    def change_type(c: Change) -> str | None:
        if c.kind == "alter_column_type" and not c.table_is_new:
            return f"{c.target} changes type ({c.detail})"
        return None

    def not_valid(c: Change) -> str | None:
        if (
            c.kind == "add_constraint"
            and c.constraint_type in ("f", "c")
            and c.on_existing_table
            and not c.not_valid
        ):
            what = "foreign key" if c.constraint_type == "f" else "check constraint"
            return f"{what} {c.target} is validated while it is added (no NOT VALID)"
        return None

    def rerunnable(c: Change) -> str | None:
        if c.rerunnable is False:
            verb = "IF EXISTS" if c.action == "drop" else "IF NOT EXISTS"
            return f"{c.target} ({c.action}) has no {verb}: re-running the statement fails"
        return None

    return [
        (NOT_NULL_WITHOUT_DEFAULT, not_null),
        (NON_CONCURRENT_INDEX, index),
        (CONCURRENTLY_IN_TRANSACTION, concurrently),
        (DROP_COLUMN, drop_column),
        (DROP_TABLE, drop_table),
        (RENAME_COLUMN, rename_column),
        (RENAME_TABLE, rename_table),
        (CHANGE_TYPE, change_type),
        (CONSTRAINT_NOT_VALID, not_valid),
        (NOT_RERUNNABLE, rerunnable),
    ]


_STATEMENT_RULES = _statement_rules()


def lint_statement(tag: str, statement: StatementEffects) -> list[LintFinding]:
    """Findings of the per-statement rules for one statement."""
    if statement.error is not None:
        return [
            LintFinding(
                UNPARSEABLE.name,
                UNPARSEABLE.severity,
                tag,
                statement.number,
                f"cannot parse: {statement.error}",
            )
        ]
    findings = []
    for change in statement.changes:
        for rule, check in _STATEMENT_RULES:
            message = check(change)
            if message is not None:
                findings.append(
                    LintFinding(rule.name, rule.severity, tag, statement.number, message)
                )
    return findings


def lint_migration(migration: MigrationEffects) -> list[LintFinding]:
    """All findings for one migration, in statement order, then migration-wide ones."""
    findings = [f for s in migration.statements for f in lint_statement(migration.tag, s)]
    timeout_set = False
    for statement in migration.statements:
        for change in statement.changes:
            if change.kind == "set_setting" and change.target == "lock_timeout":
                timeout_set = True
            elif takes_lock_on_existing_table(change) and not timeout_set:
                findings.append(
                    LintFinding(
                        LOCK_TIMEOUT.name,
                        LOCK_TIMEOUT.severity,
                        migration.tag,
                        statement.number,
                        f"locks existing table {change.table} before any lock_timeout is set",
                    )
                )
                return findings
    return findings


def lint_migrations(migrations: Iterable[MigrationEffects]) -> list[LintFinding]:
    """Findings for several migrations, in order."""
    return [f for m in migrations for f in lint_migration(m)]


def has_errors(findings: Sequence[LintFinding]) -> bool:
    """True when some finding is an error (lint then exits 21)."""
    return any(f.severity == "error" for f in findings)


def rule_named(name: str) -> Rule:
    """The rule called ``name`` (KeyError if none)."""
    for rule in RULES:
        if rule.name == name:
            return rule
    raise KeyError(name)
