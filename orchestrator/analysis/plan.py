"""The plan of a release: per migration its changes, risk, compatibility and lint findings,
and the deploy strategy they force. Pure: a journal in, a frozen value (and its JSON) out.

With the folder's history from the shadow, each migration is read with what PostgreSQL
built before it (so "existing table" means existing before the migration, whatever is
selected), and the plan names the objects it changes in the catalog and the tables it
rewrites. Only the selected migrations are reported and decide the strategy.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.analysis.compatibility import MigrationCompat, migration_compat
from orchestrator.analysis.effects import Change, MigrationEffects, analyse_migrations
from orchestrator.analysis.lint import LintFinding, lint_migration, lint_migrations
from orchestrator.analysis.locks import HeldLocks, TableLock, migration_locks
from orchestrator.analysis.risk import RiskLevel, assess_risk
from orchestrator.analysis.strategy import StrategyDecision, choose_strategy
from orchestrator.catalog import History
from orchestrator.drizzle.journal import Journal


@dataclass(frozen=True)
class ObjectChange:
    """One object a statement creates, alters, drops or renames."""

    statement: int
    action: str
    object: str
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        """``{"statement", "action", "object"}`` (plus ``detail`` when there is one)."""
        document = asdict(self)
        if not self.detail:
            del document["detail"]
        return document


@dataclass(frozen=True)
class MigrationPlan(MigrationCompat):
    """Everything ``plan`` says about one migration: its compatibility both ways, and more."""

    risk: RiskLevel
    risk_reasons: tuple[str, ...]
    objects: tuple[ObjectChange, ...]
    lint: tuple[LintFinding, ...]
    # The existing tables the migration locks, and in which mode (strongest per table).
    locks: tuple[TableLock, ...] = ()
    # From the shadow: (create | alter | drop, object key) of each object it changes.
    catalog: tuple[tuple[str, str], ...] = ()

    @property
    def reasons(self) -> tuple[str, ...]:
        """Risk reasons, then the compatibility reasons of each direction."""
        return (
            *self.risk_reasons,
            *(f"old code on the new schema: {r}" for r in self.old_reasons),
            *(f"new code on the old schema: {r}" for r in self.new_reasons),
        )

    def to_json(self) -> dict[str, Any]:
        """The shape of ``plan --json``'s migrations entries."""
        return {
            "tag": self.tag,
            "risk": self.risk.value,
            "reasons": list(self.reasons),
            "old_code_on_new_schema": self.old_code_on_new_schema.value,
            "new_code_on_old_schema": self.new_code_on_old_schema.value,
            "objects": [o.to_json() for o in self.objects],
            "lint": [f.to_json() for f in self.lint],
            "locks": [lock.to_json() for lock in self.locks],
            "catalog": [{"action": a, "object": key} for a, key in self.catalog],
        }


@dataclass(frozen=True)
class Plan:
    """The plan for a set of migrations, and the deploy strategy."""

    strategy: StrategyDecision
    migrations: tuple[MigrationPlan, ...]
    note: str = ""  # why the shadow gave no facts, when it did not

    @property
    def lint(self) -> tuple[LintFinding, ...]:
        """Every lint finding, in migration order."""
        return tuple(f for m in self.migrations for f in m.lint)

    def to_json(self) -> dict[str, Any]:
        """``{"strategy", "migrations": [...]}`` as documented for ``plan --json``."""
        document: dict[str, Any] = {
            "strategy": self.strategy.strategy.value,
            "migrations": [m.to_json() for m in self.migrations],
        }
        if self.note:
            document["note"] = self.note
        return document


def _detail(change: Change) -> str:
    if change.kind == "add_column":
        nullability = "NOT NULL" if change.not_null else "nullable"
        default = ", default" if change.has_default else ""
        return f"{change.detail}, {nullability}{default}"
    return change.detail


def plan_migration(
    migration: MigrationEffects,
    held: HeldLocks | None = None,
    lint: Sequence[LintFinding] | None = None,
) -> MigrationPlan:
    """Risk, compatibility, objects and lint of one analysed migration; its locks as the
    shadow took them (``held``), else from the documented lock table; ``lint``: its findings
    within its release (None: the migration linted as a release of its own)."""
    unparsed = any(s.error is not None for s in migration.statements)
    compat = migration_compat(migration.tag, migration.changes, unparsed=unparsed)
    findings = tuple(lint_migration(migration) if lint is None else lint)
    risk = assess_risk(migration, compat, findings)
    return MigrationPlan(
        **asdict(compat),  # its tag, and its compatibility both ways with the reasons
        risk=risk.level,
        risk_reasons=risk.reasons,
        objects=tuple(
            ObjectChange(statement.number, change.action, change.target, _detail(change))
            for statement in migration.statements
            for change in statement.changes
        ),
        lint=findings,
        locks=migration_locks(migration, held),
        catalog=migration.catalog,
    )


def statement_texts(journal: Journal, tags: Collection[str] | None) -> dict[str, list[str]]:
    """The statements of the migrations named in ``tags`` (all when None) one by one, as the
    plan numbers them (for :func:`orchestrator.shadow.locks.locks_taken`)."""
    folder = [(m.tag, m.statements) for m in journal.migrations]
    analysis = analyse_migrations(folder, tags=tags)
    return {m.tag: [s.sql for s in m.statements] for m in analysis.migrations}


def build_plan(
    journal: Journal,
    tags: Collection[str] | None = None,
    history: History | None = None,
    locks: Mapping[str, HeldLocks | None] | None = None,
) -> Plan:
    """Plan the migrations of ``journal`` named in ``tags`` (all of them when ``None``), a
    release linted as one; ``history``: the folder as the shadow replayed it (None: from the
    SQL alone); ``locks``: by tag, the locks each statement held on the shadow (see
    :func:`plan_migration`). Only the migrations planned are parsed."""
    folder = [(m.tag, m.statements) for m in journal.migrations]
    selected = analyse_migrations(folder, history, tags).migrations
    held = locks or {}
    findings = lint_migrations(selected, locks=held)
    plans = tuple(
        plan_migration(m, held.get(m.tag), [f for f in findings if f.tag == m.tag])
        for m in selected
    )
    return Plan(choose_strategy(plans), plans)
