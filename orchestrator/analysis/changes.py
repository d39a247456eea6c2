"""The shapes of an analysed migration: each statement's changes, as ``plan`` and ``lint`` read
them (built by :mod:`orchestrator.analysis.effects`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from orchestrator.analysis.typechange import ColumnType, TypeChange, classify_type_change

ChangeKind = Literal[
    "create_schema",
    "drop_schema",
    "create_table",
    "drop_table",
    "rename_table",
    "create_view",
    "drop_view",
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
    "rename_constraint",
    "create_index",
    "drop_index",
    "rename_index",
    "reindex",
    "create_enum",
    "add_enum_value",
    "rename_enum_value",
    "drop_type",
    "rename_type",
    "create_other",
    "data_change",
    "set_setting",
    "metadata",
    "no_op",
    "other",
]

Action = Literal["create", "alter", "drop", "rename", "data", "set", "none", "other"]

_ACTIONS: Mapping[str, Action] = {
    "add_column": "create",
    "add_constraint": "create",
    "add_enum_value": "create",
    "drop_column": "drop",
    "drop_constraint": "drop",
    "data_change": "data",
    "set_setting": "set",
    "no_op": "none",
    "other": "other",
}


@dataclass(frozen=True)
class Change:
    """One change a statement makes to one object.

    ``table`` is the relation concerned (``schema.name``) when there is one; ``table_is_new`` says
    it was created earlier in the same migration (so it is empty and no running code knows it).
    ``rerunnable`` is whether running the statement a second time is harmless: for DDL, whether it
    has an IF [NOT] EXISTS / OR REPLACE form and uses it (``None`` when PostgreSQL offers no such
    form); for a data change, whether it is idempotent (INSERT ... ON CONFLICT or WHERE NOT EXISTS,
    UPDATE to values that do not depend on the old ones, DELETE).

    A ``no_op`` change is a CREATE TABLE / CREATE INDEX / ADD COLUMN ... IF NOT EXISTS of an object
    the replayed history already holds: PostgreSQL skips it; ``restates`` is the kind it would have
    been. An ``alter_column_type`` change carries the column's ``old_type`` (``None`` when unknown)
    and ``new_type``, ``using`` when it has a USING expression, and ``rewrites``: whether the shadow
    saw the migration replace the table's storage (``None`` without a shadow).
    """

    kind: ChangeKind
    target: str
    table: str | None = None
    table_is_new: bool = False
    not_null: bool = False
    has_default: bool = False
    unique: bool = False
    concurrently: bool = False
    not_valid: bool = False
    constraint_type: str | None = None  # p, u, f, c, x (as pg_constraint.contype)
    rerunnable: bool | None = None
    detail: str = ""
    restates: ChangeKind | None = None
    old_type: ColumnType | None = None
    new_type: ColumnType | None = None
    using: bool = False
    rewrites: bool | None = None

    @property
    def type_change(self) -> TypeChange | None:
        """For a column type change, whether it rewrites the table (None for other kinds):
        the shadow's word when it kept the table's storage, else the rules of
        :func:`classify_type_change`."""
        if self.kind != "alter_column_type" or self.new_type is None:
            return None
        verdict = classify_type_change(self.old_type, self.new_type, using=self.using)
        if self.rewrites is False and verdict is TypeChange.REWRITES and not self._zone_bound:
            return TypeChange.RELAXES
        return verdict

    @property
    def _zone_bound(self) -> bool:
        """timestamp <-> timestamptz: rewritten unless the session's TimeZone is UTC, so a
        shadow in UTC saying "no rewrite" says nothing about production."""
        names = {t.name for t in (self.old_type, self.new_type) if t is not None}
        return names == {"timestamp", "timestamptz"}

    @property
    def action(self) -> Action:
        """create, alter, drop, rename, data, set or other."""
        if self.kind in _ACTIONS:
            return _ACTIONS[self.kind]
        prefix = self.kind.split("_", 1)[0]
        if prefix in ("create", "drop", "rename"):
            return prefix  # type: ignore[return-value]
        return "alter"

    @property
    def effective_kind(self) -> ChangeKind:
        """Its kind; for a ``no_op``, the kind it restates (PostgreSQL still takes that lock,
        and still refuses that CONCURRENTLY inside a transaction)."""
        return self.restates if self.kind == "no_op" and self.restates else self.kind

    @property
    def on_existing_table(self) -> bool:
        """True when it touches a table that existed before this migration."""
        return self.table is not None and not self.table_is_new


@dataclass(frozen=True)
class StatementEffects:
    """One SQL statement of a migration and its changes (or why it could not be parsed)."""

    number: int  # 1-based, counting statements across the migration's pieces
    sql: str  # the statement's text, stripped
    changes: tuple[Change, ...] = ()
    error: str | None = None
    line: int = 1  # 1-based line of the file where the statement starts (after comments)


@dataclass(frozen=True)
class MigrationEffects:
    """Every statement of one migration, in order."""

    tag: str
    statements: tuple[StatementEffects, ...]
    # From the shadow (empty without one): the objects the migration changes, as
    # (create | alter | drop, object key), and the tables whose storage it replaced.
    catalog: tuple[tuple[str, str], ...] = ()
    rewrites: tuple[str, ...] = ()

    @property
    def changes(self) -> tuple[Change, ...]:
        """All changes of all statements, in order."""
        return tuple(c for s in self.statements for c in s.changes)


@dataclass(frozen=True)
class FolderAnalysis:
    """The effects of every migration of a folder, in journal order."""

    migrations: tuple[MigrationEffects, ...]

    def by_tag(self, tag: str) -> MigrationEffects:
        """The effects of migration ``tag`` (KeyError if unknown)."""
        for migration in self.migrations:
            if migration.tag == tag:
                return migration
        raise KeyError(tag)
