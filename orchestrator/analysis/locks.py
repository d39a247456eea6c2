"""Which existing tables a migration's statements lock, and in which mode (pure).

PostgreSQL's table-level lock modes, weakest first, and which of them conflict, as its
documentation's "Conflicting Lock Modes" table gives them. A statement that needs a mode
waits behind every session holding a conflicting one, and every later query that conflicts
with *it* queues behind it: that is how one long read plus an ``ALTER TABLE`` stalls an app.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

from orchestrator.analysis.changes import Change, MigrationEffects, StatementEffects

#: The eight table lock modes, weakest first, as ``LOCK TABLE`` spells them.
MODES = (
    "ACCESS SHARE",
    "ROW SHARE",
    "ROW EXCLUSIVE",
    "SHARE UPDATE EXCLUSIVE",
    "SHARE",
    "SHARE ROW EXCLUSIVE",
    "EXCLUSIVE",
    "ACCESS EXCLUSIVE",
)

# For each mode, the modes it conflicts with (PostgreSQL docs, table 13.2).
_CONFLICTS: dict[str, frozenset[str]] = {
    "ACCESS SHARE": frozenset({"ACCESS EXCLUSIVE"}),
    "ROW SHARE": frozenset({"EXCLUSIVE", "ACCESS EXCLUSIVE"}),
    "ROW EXCLUSIVE": frozenset(MODES[4:]),
    "SHARE UPDATE EXCLUSIVE": frozenset(MODES[3:]),
    "SHARE": frozenset(MODES[2:]) - {"SHARE"},  # SHARE does not conflict with itself
    "SHARE ROW EXCLUSIVE": frozenset(MODES[2:]),
    "EXCLUSIVE": frozenset(MODES[1:]),
    "ACCESS EXCLUSIVE": frozenset(MODES),
}

# What blocks what, in words, for the plan: the traffic each mode stops while held or queued.
_BLOCKS = {
    "ACCESS EXCLUSIVE": "blocks reads and writes",
    "EXCLUSIVE": "blocks writes and SELECT ... FOR UPDATE",
    "SHARE ROW EXCLUSIVE": "blocks writes",
    "SHARE": "blocks writes",
    "SHARE UPDATE EXCLUSIVE": "blocks no reads or writes (only other schema changes)",
    "ROW EXCLUSIVE": "blocks no reads or writes (row locks only)",
}


def pg_mode(name: str) -> str:
    """``AccessShareLock`` (as ``pg_locks.mode`` says it) as ``ACCESS SHARE`` (pure)."""
    return " ".join(re.findall(r"[A-Z][a-z]*", name.removesuffix("Lock"))).upper()


def conflicts(requested: str, held: str) -> bool:
    """Whether a lock of mode ``held`` makes a request for mode ``requested`` wait."""
    return held in _CONFLICTS.get(requested, frozenset(MODES))


def stronger(a: str, b: str) -> str:
    """The stronger of two modes."""
    return a if MODES.index(a) >= MODES.index(b) else b


def blocks(mode: str) -> str:
    """What traffic a lock of ``mode`` blocks, in a few words."""
    return _BLOCKS.get(mode, "blocks nothing but schema changes")


_ACCESS_EXCLUSIVE_KINDS = frozenset(
    {
        "add_column",
        "drop_column",
        "rename_column",
        "alter_column_type",
        "set_not_null",
        "drop_not_null",
        "set_default",
        "drop_default",
        "drop_constraint",
        "drop_table",
        "rename_table",
        "other",
    }
)


def lock_mode(change: Change) -> str | None:
    """The lock ``change``'s statement takes on its table (None: no table, or none taken).

    Only tables that existed before the migration count: a table created in the same
    migration is unknown to running code, so its locks stall nobody.
    """
    if not change.on_existing_table:
        return None
    kind = change.effective_kind
    if kind == "create_index":
        return "SHARE UPDATE EXCLUSIVE" if change.concurrently else "SHARE"
    if kind in ("drop_index", "reindex"):
        return "SHARE UPDATE EXCLUSIVE" if change.concurrently else "ACCESS EXCLUSIVE"
    if kind == "validate_constraint":
        return "SHARE UPDATE EXCLUSIVE"
    if kind == "add_constraint":
        # A foreign key takes SHARE ROW EXCLUSIVE (on both tables); the others rewrite rules.
        return "SHARE ROW EXCLUSIVE" if change.constraint_type == "f" else "ACCESS EXCLUSIVE"
    if kind == "data_change":
        return "ROW EXCLUSIVE"
    if kind in _ACCESS_EXCLUSIVE_KINDS:
        return "ACCESS EXCLUSIVE"
    return None


@dataclass(frozen=True)
class TableLock:
    """The strongest lock a migration takes on one existing table, and where it first does."""

    table: str
    mode: str
    statement: int  # 1-based statement that takes the strongest mode first
    line: int

    @property
    def description(self) -> str:
        """``public.users: ACCESS EXCLUSIVE (statement 2, line 3) blocks reads and writes``."""
        return (
            f"{self.table}: {self.mode} (statement {self.statement}, line {self.line}) "
            f"{blocks(self.mode)}"
        )

    def to_json(self) -> dict[str, object]:
        """``{"table", "mode", "statement", "line"}``."""
        return asdict(self)


#: Per statement, the (table, ``pg_locks`` mode) pairs its transaction holds after it on the
#: shadow (:func:`orchestrator.shadow.locks.locks_taken`), on the tables there were before
#: the migration, named as they were then.
HeldLocks = Sequence[Sequence[tuple[str, str]]]


def table_locks(
    migration: MigrationEffects, held: HeldLocks | None = None
) -> Iterator[tuple[str, str, StatementEffects]]:
    """Each (table, mode, statement) lock ``migration`` takes on a table that existed before
    it, in statement order: as PostgreSQL took them on the shadow when ``held`` is given (a
    lock first held after a statement is that statement's), else from the documented lock
    table (:func:`lock_mode`), which leaves out the tables the migration creates."""
    if held is None:
        return (
            (change.table, mode, statement)
            for statement in migration.statements
            for change in statement.changes
            if (mode := lock_mode(change)) is not None and change.table is not None
        )
    return (
        (table, pg_mode(name), statement)
        for statement, pairs, before in zip(migration.statements, held, [(), *held], strict=False)
        for table, name in pairs
        if (table, name) not in before and pg_mode(name) in MODES
    )


def migration_locks(
    migration: MigrationEffects, held: HeldLocks | None = None
) -> tuple[TableLock, ...]:
    """The strongest lock per existing table ``migration`` takes (see :func:`table_locks`),
    in order of each table's first lock, with the statement that first takes that mode."""
    found: dict[str, TableLock] = {}
    for table, mode, statement in table_locks(migration, held):
        known = found.get(table)
        if known is None or stronger(mode, known.mode) != known.mode:
            found[table] = TableLock(table, mode, statement.number, statement.line)
    return tuple(found.values())
