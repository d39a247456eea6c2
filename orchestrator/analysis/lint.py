"""Lint rules over a migration's parsed statements, in the spirit of squawk.

Each rule has a stable name, a severity and a one-line fix; ``docs/migration-analysis.md``
lists them. ``error`` findings fail ``orchestrator lint`` (exit 21); warnings are advice.

A table "exists" when it was created by an earlier migration (or by nothing in the folder,
so outside it); a table created earlier in the same migration is empty and unknown to the
running code, so the locking and compatibility rules leave it alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from orchestrator.analysis.effects import Change, MigrationEffects, StatementEffects
from orchestrator.analysis.locks import MODES, HeldLocks, table_locks
from orchestrator.analysis.nontransactional import catalog_checked, nontransactional_in
from orchestrator.analysis.typechange import TypeChange

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
    line: int | None = None  # 1-based line of ``<tag>.sql`` where the statement starts

    @property
    def location(self) -> str:
        """``<tag>.sql:<line>`` (just the file for a finding about the whole migration)."""
        return f"{self.tag}.sql" + (f":{self.line}" if self.line is not None else "")

    def to_json(self) -> dict[str, object]:
        """The JSON shape of ``plan``/``lint``: rule, severity, statement, line, message."""
        return {
            "rule": self.rule,
            "severity": self.severity,
            "statement": self.statement,
            "line": self.line,
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
    "CREATE/DROP INDEX CONCURRENTLY or REINDEX CONCURRENTLY in a migration: drizzle runs "
    "every migration inside a transaction, where PostgreSQL rejects it (a warning with "
    "--allow-concurrent: orchestrator then runs that migration outside a transaction)",
    "apply the folder with `orchestrator migrate --allow-concurrent` (drizzle-kit cannot), "
    "or remove CONCURRENTLY",
)
ENUM_VALUE_USED = Rule(
    "enum-value-used-in-transaction",
    "error",
    "ALTER TYPE ... ADD VALUE whose new value a later statement of the same release uses: "
    "inside one transaction PostgreSQL refuses it (unsafe use of new value); lint takes the "
    "whole folder as one release, as on a fresh database (a warning with --allow-concurrent)",
    "apply the folder with `orchestrator migrate --allow-concurrent` (which commits the value "
    "first), or use the value only in a later release",
)
TRANSACTION_CONTROL = Rule(
    "transaction-control",
    "error",
    "COMMIT, BEGIN, ROLLBACK, SAVEPOINT... in a migration: drizzle runs each migration in a "
    "transaction, which a COMMIT ends half-applied; orchestrator refuses to run such a migration",
    "remove it; what PostgreSQL refuses in a transaction runs with "
    "`orchestrator migrate --allow-concurrent`",
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
    "ALTER COLUMN ... TYPE that rewrites the table under an exclusive lock and may break both "
    "sides (not a relaxed limit such as varchar(n) to text or to varchar(m > n))",
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
    "a data change that is not idempotent (INSERT without ON CONFLICT or NOT EXISTS, UPDATE "
    "computing a column from itself) in a migration that nothing stops from running twice: "
    "on a database where it was applied by hand, it duplicates or compounds data silently",
    "make it idempotent (INSERT ... ON CONFLICT DO NOTHING, UPDATE ... SET fixed values "
    "WHERE not yet changed)",
)
LOCK_TIMEOUT = Rule(
    "require-lock-timeout",
    "warning",
    "a migration that locks existing tables without SET lock_timeout (0, DEFAULT or RESET "
    "sets none) can queue behind long queries and block all traffic behind it",
    "start the file with SET lock_timeout = '5s' (`orchestrator migrate` sets one itself; "
    "drizzle-kit migrate does not)",
)
LOCK_TIMEOUT_OFF = Rule(
    "disabling-lock-timeout",
    "error",
    "SET lock_timeout = 0 or DEFAULT, or RESET (ALL): it turns off the lock timeout "
    "`orchestrator migrate` sets for the release, so a statement waiting for its lock stalls "
    "the table's traffic until the statement timeout",
    "remove it; if locks take long to get, give `orchestrator migrate` more --lock-retries "
    "or a longer --lock-timeout",
)
RERUN_OUTSIDE_TRANSACTION = Rule(
    "rerun-unsafe-outside-transaction",
    "warning",
    "a statement of a migration that runs outside a transaction (--allow-concurrent) that "
    "fails when run again, and that orchestrator does not check in the catalog first (it "
    "does for an index build or drop and an ADD VALUE): a crash half-way leaves it applied "
    "without the tracking row, and the rerun stops on it",
    "make it rerun-safe (IF NOT EXISTS / IF EXISTS / CREATE OR REPLACE, an idempotent data "
    "change), or move it to a transactional migration of its own",
)

RULES: tuple[Rule, ...] = (
    NOT_NULL_WITHOUT_DEFAULT,
    NON_CONCURRENT_INDEX,
    CONCURRENTLY_IN_TRANSACTION,
    TRANSACTION_CONTROL,
    ENUM_VALUE_USED,
    DROP_COLUMN,
    DROP_TABLE,
    RENAME_COLUMN,
    RENAME_TABLE,
    CHANGE_TYPE,
    CONSTRAINT_NOT_VALID,
    NOT_RERUNNABLE,
    LOCK_TIMEOUT,
    LOCK_TIMEOUT_OFF,
    RERUN_OUTSIDE_TRANSACTION,
)


# Change kinds that fail when the statement runs a second time (besides every change whose
# statement could say IF [NOT] EXISTS / OR REPLACE and does not).
_FAIL_WHEN_RERUN = frozenset(
    {
        "create_enum",
        "rename_table",
        "rename_column",
        "rename_constraint",
        "rename_index",
        "rename_type",
        "rename_enum_value",
    }
)


def fails_when_rerun(change: Change) -> bool:
    """True when running the change's statement again on a database that has it fails.

    drizzle-kit's own DDL (CREATE TABLE, ADD COLUMN, CREATE INDEX, named ADD CONSTRAINT,
    CREATE TYPE, DROP without IF EXISTS...) does: a second run stops ("already exists",
    "does not exist") and the migration's transaction rolls back whole.
    """
    if change.kind == "data_change":
        return False
    if change.rerunnable is False or change.kind in _FAIL_WHEN_RERUN:
        return True
    return change.kind == "add_constraint" and not change.target.endswith(".(unnamed)")


def rerun_stops(migration: MigrationEffects) -> bool:
    """True when a second run of the whole migration cannot complete (it is one transaction, so one
    failing statement undoes every other): some statement fails when re-run, or cannot be parsed."""
    return any(
        statement.error is not None or any(fails_when_rerun(c) for c in statement.changes)
        for statement in migration.statements
    )


def _not_idempotent(c: Change) -> str | None:
    """The not-rerunnable message for a data change that is not idempotent."""
    if c.kind != "data_change" or c.rerunnable is not False:
        return None
    effect = (
        "adds its rows again (or fails on a unique key)"
        if c.detail == "INSERT"
        else "applies its change again on top of the first"
    )
    return (
        f"{c.detail} on {c.target} is not idempotent and nothing else in the migration fails "
        f"on a second run: applied twice (by hand, then by drizzle) it {effect}"
    )


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
        if c.effective_kind in ("create_index", "drop_index", "reindex") and c.concurrently:
            return f"{c.target}: CONCURRENTLY cannot run inside the migration's transaction"
        return None

    def transaction_control(c: Change) -> str | None:
        if c.kind == "other" and c.target == "TransactionStmt":
            return "it controls the migration's transaction"
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
        if c.type_change is TypeChange.REWRITES and not c.table_is_new:
            return f"{c.target} changes type ({c.detail}): the table is rewritten"
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

    def lock_timeout_off(c: Change) -> str | None:
        if _lock_timeout_set(c) is False:
            return "turns lock_timeout off: a lock wait now stalls traffic until statement_timeout"
        return None

    return [
        (NOT_NULL_WITHOUT_DEFAULT, not_null),
        (NON_CONCURRENT_INDEX, index),
        (CONCURRENTLY_IN_TRANSACTION, concurrently),
        (TRANSACTION_CONTROL, transaction_control),
        (DROP_COLUMN, drop_column),
        (DROP_TABLE, drop_table),
        (RENAME_COLUMN, rename_column),
        (RENAME_TABLE, rename_table),
        (CHANGE_TYPE, change_type),
        (CONSTRAINT_NOT_VALID, not_valid),
        (LOCK_TIMEOUT_OFF, lock_timeout_off),
    ]


_STATEMENT_RULES = _statement_rules()


def _finding(rule: Rule, tag: str, statement: StatementEffects, message: str) -> LintFinding:
    return LintFinding(rule.name, rule.severity, tag, statement.number, message, statement.line)


def lint_migration(migration: MigrationEffects) -> list[LintFinding]:
    """All findings for one migration, taken as a release of its own."""
    return lint_migrations([migration])


def lint_migrations(
    migrations: Iterable[MigrationEffects],
    *,
    allow_concurrent: bool = False,
    locks: Mapping[str, HeldLocks | None] | None = None,
) -> list[LintFinding]:
    """Findings for migrations applied together as one release, in order: per migration, its
    statements' findings (a non-idempotent data change only when nothing else in the migration stops
    a second run: see :func:`rerun_stops`), then the release's non-transactional ones (an ``ALTER
    TYPE ... ADD VALUE`` used later in the release, statements a rerun outside a transaction would
    stop on), then the missing lock_timeout. With ``allow_concurrent`` the non-transactional
    findings are warnings: ``migrate --allow-concurrent`` applies them. ``locks``: by tag, the locks
    each statement held on the shadow (see :func:`table_locks`).
    """
    migrations = list(migrations)
    outside = nontransactional_in(migrations)
    findings: list[LintFinding] = []
    for migration in migrations:
        idempotence = [] if rerun_stops(migration) else [(NOT_RERUNNABLE, _not_idempotent)]
        findings += [
            _finding(rule, migration.tag, statement, message)
            for statement in migration.statements
            for change in statement.changes
            for rule, check in [*_STATEMENT_RULES, *idempotence]
            if (message := check(change)) is not None
        ]
        findings += [
            LintFinding(ENUM_VALUE_USED.name, "error", f.tag, f.statement, f.reason, f.line)
            for f in outside
            if f.tag == migration.tag and f.kind == "enum_value"
        ]
        if any(f.tag == migration.tag for f in outside):
            findings += rerun_unsafe(migration)
        findings += _lock_timeout(migration, (locks or {}).get(migration.tag))
    if allow_concurrent:
        nontransactional = {CONCURRENTLY_IN_TRANSACTION.name, ENUM_VALUE_USED.name}
        findings = [
            replace(f, severity="warning") if f.rule in nontransactional else f for f in findings
        ]
    return findings


def _lock_timeout_set(change: Change) -> bool | None:
    """Whether ``change`` sets a lock_timeout (True), turns it off (False: 0, DEFAULT, RESET,
    RESET ALL), or leaves it alone (None)."""
    if change.kind != "set_setting" or change.target not in ("lock_timeout", "ALL"):
        return None
    return change.detail != "off"


def _lock_timeout(migration: MigrationEffects, held: HeldLocks | None) -> list[LintFinding]:
    """The first statement that locks an existing table while no lock_timeout of the
    migration's own is in effect; its locks as the shadow took them (``held``), else from
    the documented lock table. A data change's ROW EXCLUSIVE queues behind no DDL."""
    timeout, unprotected = False, set()
    for statement in migration.statements:
        for change in statement.changes:
            if (sets := _lock_timeout_set(change)) is not None:
                timeout = sets
        if not timeout:
            unprotected.add(statement.number)
    for table, mode, statement in table_locks(migration, held):
        if statement.number in unprotected and MODES.index(mode) > MODES.index("ROW EXCLUSIVE"):
            message = f"takes {mode} on existing table {table} with no lock_timeout set"
            return [_finding(LOCK_TIMEOUT, migration.tag, statement, message)]
    return []


def rerun_unsafe(migration: MigrationEffects) -> list[LintFinding]:
    """The statements a rerun of non-transactional ``migration`` would stop on.

    Outside a transaction each statement commits on its own, so after a crash half-way the
    rerun starts again from the first statement: one that fails when run twice, and that the
    runner does not skip by looking at the catalog, stops it for good.
    """
    findings = []
    for statement in migration.statements:
        if catalog_checked(statement):
            continue  # the runner skips it when the catalog has it
        if unsafe := [c for c in statement.changes if fails_when_rerun(c) or _not_idempotent(c)]:
            message = (
                f"{unsafe[0].target}: runs outside a transaction and fails when run again; "
                "after a crash half-way the rerun would stop here"
            )
            findings.append(_finding(RERUN_OUTSIDE_TRANSACTION, migration.tag, statement, message))
    return findings


def rule_named(name: str) -> Rule:
    """The rule called ``name`` (KeyError if none)."""
    return {rule.name: rule for rule in RULES}[name]
