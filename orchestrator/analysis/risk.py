"""A migration's risk level (LOW / MEDIUM / HIGH) and the reasons for it.

- **HIGH**: it breaks one side of the deploy outright, destroys data (drops a table or a
  column), rewrites a table (a type change PostgreSQL cannot do in the catalog alone), has a
  lint error, or cannot be parsed.
- **MEDIUM**: it locks an existing table, changes existing data, or does something the
  analysis does not understand.
- **LOW**: additive only: new tables, indexes on them, types, schemas.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from orchestrator.analysis.compatibility import Compat, MigrationCompat
from orchestrator.analysis.effects import MigrationEffects
from orchestrator.analysis.lint import LintFinding
from orchestrator.analysis.locks import lock_mode
from orchestrator.analysis.typechange import TypeChange


class RiskLevel(StrEnum):
    """How careful to be with a migration."""

    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


@dataclass(frozen=True)
class Risk:
    """A level and the reasons that set it (most severe first)."""

    level: RiskLevel
    reasons: tuple[str, ...]


def assess_risk(
    migration: MigrationEffects, compat: MigrationCompat, lint: Sequence[LintFinding]
) -> Risk:
    """The risk of applying ``migration`` during a deploy (pure)."""
    high: list[str] = []
    medium: list[str] = []
    if compat.new_code_on_old_schema is Compat.BREAKS:
        high.append("breaks new code on the old schema")
    if compat.old_code_on_new_schema is Compat.BREAKS:
        high.append("breaks old code on the new schema")
    for statement in migration.statements:
        if statement.error is not None:
            high.append(
                f"statement {statement.number} (line {statement.line}) cannot be parsed: "
                f"{statement.error}"
            )
        for change in statement.changes:
            if change.table_is_new:
                continue
            if change.kind in ("drop_table", "drop_column"):
                high.append(f"destroys data: {change.target} is dropped")
            elif change.type_change is TypeChange.REWRITES:
                high.append(
                    f"rewrites {change.table} under an exclusive lock "
                    f"({change.target}: {change.detail})"
                )
            elif change.type_change is not None:
                medium.append(
                    f"changes the type of {change.target} without a rewrite ({change.detail})"
                )
            elif change.kind == "data_change":
                medium.append(f"changes existing data: {change.detail} on {change.target}")
            elif change.kind == "other":
                medium.append(f"not analysed: {change.target} ({change.detail})")
            # a data change's ROW EXCLUSIVE queues behind no DDL
            if lock_mode(change) not in (None, "ROW EXCLUSIVE"):
                medium.append(f"locks existing table {change.table}")
    explained = {c.table for c in migration.changes if c.type_change is TypeChange.REWRITES}
    high.extend(
        f"rewrites {table} under an exclusive lock (the shadow saw its storage replaced)"
        for table in migration.rewrites
        if table not in explained
    )
    high.extend(f"lint error {f.rule}: {f.message}" for f in lint if f.severity == "error")
    if high:
        return Risk(RiskLevel.HIGH, _unique([*high, *medium]))
    if medium:
        return Risk(RiskLevel.MEDIUM, _unique(medium))
    return Risk(RiskLevel.LOW, (_additive_summary(migration),))


def _additive_summary(migration: MigrationEffects) -> str:
    created = [c.target.split(" ", 1)[0] for c in migration.changes if c.action == "create"]
    if not created:
        return "changes nothing that running code depends on"
    return f"additive only: creates {counted(created)}; nothing existing is locked or changed"


def counted(nouns: Iterable[str]) -> str:
    """``2 tables, 1 index``: each noun with how often it comes, in the order first seen."""
    return ", ".join(
        f"{n} {noun if n == 1 else _plural(noun)}" for noun, n in Counter(nouns).items()
    )


def _plural(noun: str) -> str:
    return f"{noun}es" if noun.endswith(("x", "s")) else f"{noun}s"


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
