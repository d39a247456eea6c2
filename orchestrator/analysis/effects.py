"""What each statement of a migrations folder changes, derived from its SQL with pglast.

The folder is replayed in journal order against a small model of the schema (tables with
their columns' types, nullability and defaults; indexes; views; enums), so that every change
knows its context: whether the table it touches was created earlier in the same migration
(empty, unknown to the running code) or already existed, and what a dropped column was.

Everything here is pure: SQL text in, frozen values out. Bad SQL never raises; the statement
carries the parser's one-line message in ``error``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal

import pglast
from pglast import ast
from pglast.enums import AlterTableType, BoolExprType, ConstrType, ObjectType, SubLinkType

from orchestrator.analysis.typechange import ColumnType, TypeChange, classify_type_change
from orchestrator.drizzle.objects import DbObject, truncate_identifier

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

DEFAULT_SCHEMA = "public"

# Types that imply a default (a sequence) and stand for a plain integer type in the catalog.
_SERIAL_TYPES = {"serial": "int4", "serial4": "int4", "bigserial": "int8", "serial8": "int8"}
_SERIAL_TYPES |= {"smallserial": "int2", "serial2": "int2"}
# Aliases pglast leaves as written; everything standard it already names as pg_catalog does.
_TYPE_ALIASES = {"int": "int4", "integer": "int4", "bigint": "int8", "smallint": "int2"}
_TYPE_ALIASES |= {"decimal": "numeric", "boolean": "bool", "float": "float8", "real": "float4"}


@dataclass(frozen=True)
class Change:
    """One change a statement makes to one object.

    ``table`` is the relation concerned (``schema.name``) when there is one; ``table_is_new``
    says it was created earlier in the same migration (so it is empty and no running code
    knows it). ``rerunnable`` is whether running the statement a second time is harmless:
    for DDL, whether it has an IF [NOT] EXISTS / OR REPLACE form and uses it (``None`` when
    PostgreSQL offers no such form); for a data change, whether it is idempotent (INSERT ...
    ON CONFLICT or WHERE NOT EXISTS, UPDATE to values that do not depend on the old ones,
    DELETE).

    A ``no_op`` change is a CREATE TABLE / CREATE INDEX / ADD COLUMN ... IF NOT EXISTS of an
    object the replayed history already holds: PostgreSQL skips it; ``restates`` is the kind
    it would have been. An ``alter_column_type`` change carries the column's ``old_type``
    (``None`` when unknown) and ``new_type``, and ``using`` when it has a USING expression.
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

    @property
    def type_change(self) -> TypeChange | None:
        """For a column type change, whether it rewrites the table (None for other kinds)."""
        if self.kind != "alter_column_type" or self.new_type is None:
            return None
        return classify_type_change(self.old_type, self.new_type, using=self.using)

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

    @property
    def changes(self) -> tuple[Change, ...]:
        """All changes of all statements, in order."""
        return tuple(c for s in self.statements for c in s.changes)


@dataclass(frozen=True)
class ColumnSpec:
    """A column as the SQL defines it: catalog type name (``int4``, ``_text``), nullability."""

    type_name: str
    not_null: bool
    has_default: bool
    defined_by: str | None  # the migration that created it or last changed its type


@dataclass(frozen=True)
class FolderAnalysis:
    """The effects of every migration, and the columns the whole folder leaves behind."""

    migrations: tuple[MigrationEffects, ...]
    columns: Mapping[tuple[str, str, str], ColumnSpec]  # (schema, table, column)

    def by_tag(self, tag: str) -> MigrationEffects:
        """The effects of migration ``tag`` (KeyError if unknown)."""
        for migration in self.migrations:
            if migration.tag == tag:
                return migration
        raise KeyError(tag)


# --------------------------------------------------------------------------------------------
# The schema model the replay keeps.
# --------------------------------------------------------------------------------------------


@dataclass
class _Column:
    type_name: str
    not_null: bool
    has_default: bool
    defined_by: str | None
    type: ColumnType | None = None  # as written, with its modifiers


@dataclass
class _Table:
    columns: dict[str, _Column] = field(default_factory=dict)


@dataclass
class _Model:
    tables: dict[tuple[str, str], _Table] = field(default_factory=dict)
    indexes: dict[tuple[str, str], tuple[tuple[str, str] | None, bool]] = field(
        default_factory=dict
    )


def type_name_of(node: Any) -> str:
    """The catalog name (``pg_type.typname``) of a pglast TypeName; arrays get a ``_``."""
    names = [str(n.sval) for n in node.names or () if isinstance(n, ast.String)]
    base = names[-1].lower() if names else "?"
    base = _SERIAL_TYPES.get(base, _TYPE_ALIASES.get(base, base))
    return f"_{base}" if node.arrayBounds else base


def column_type_of(node: Any) -> ColumnType:
    """The type of a pglast TypeName with its modifiers (``None`` if not plain integers)."""
    mods: list[int] = []
    for mod in node.typmods or ():
        value = getattr(mod, "val", None)
        number = value.ival if isinstance(value, ast.Integer) else None
        if not isinstance(mod, ast.A_Const) or not isinstance(number, int):
            return ColumnType(type_name_of(node), None)
        mods.append(number)
    return ColumnType(type_name_of(node), tuple(mods))


def _is_serial(node: Any) -> bool:
    names = [str(n.sval) for n in node.names or () if isinstance(n, ast.String)]
    return bool(names) and names[-1].lower() in _SERIAL_TYPES


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class _Replay:
    """Turns parsed statements into changes, keeping the schema model up to date."""

    def __init__(self) -> None:
        self.model = _Model()
        self.tag = ""
        self.created_here: set[tuple[str, str]] = set()

    def start(self, tag: str) -> None:
        self.tag = tag
        self.created_here = set()

    # -- names -----------------------------------------------------------------------------

    @staticmethod
    def _rv(rv: Any) -> tuple[str, str]:
        schema = truncate_identifier(str(rv.schemaname)) if rv.schemaname else DEFAULT_SCHEMA
        return schema, truncate_identifier(str(rv.relname))

    @staticmethod
    def _any_name(items: Any) -> tuple[str, str]:
        names = [truncate_identifier(str(n.sval)) for n in items or () if isinstance(n, ast.String)]
        if not names:
            return DEFAULT_SCHEMA, "?"
        return (names[-2] if len(names) > 1 else DEFAULT_SCHEMA, names[-1])

    def _table_context(self, key: tuple[str, str]) -> dict[str, Any]:
        return {"table": f"{key[0]}.{key[1]}", "table_is_new": key in self.created_here}

    # -- dispatch --------------------------------------------------------------------------

    def changes(self, node: Any) -> list[Change]:
        handler = getattr(self, f"_{type(node).__name__}", None)
        if handler is None:
            return [Change("other", type(node).__name__, detail="not analysed")]
        result: list[Change] = handler(node)
        return result

    # -- CREATE ----------------------------------------------------------------------------

    def _CreateSchemaStmt(self, node: Any) -> list[Change]:
        name = truncate_identifier(str(node.schemaname or node.authrole.rolename))
        changes = [
            Change(
                "create_schema",
                str(DbObject("schema", name, name)),
                rerunnable=bool(node.if_not_exists),
            )
        ]
        for element in node.schemaElts or ():
            changes.extend(self.changes(element))
        return changes

    def _CreateStmt(self, node: Any) -> list[Change]:
        if node.relation.relpersistence == "t":
            return [Change("other", "temporary table", detail="leaves nothing behind")]
        key = self._rv(node.relation)
        target = str(DbObject("table", *key))
        rerunnable = bool(node.if_not_exists)
        if rerunnable and key in self.model.tables:
            return [self._no_op("create_table", target, key)]
        table = _Table()
        primary: set[str] = set()
        for element in node.tableElts or ():
            if isinstance(element, ast.ColumnDef):
                table.columns[truncate_identifier(str(element.colname))] = self._column(element)
            elif (
                isinstance(element, ast.Constraint) and element.contype == ConstrType.CONSTR_PRIMARY
            ):
                primary.update(str(k.sval) for k in element.keys or ())
        for name in primary:
            if name in table.columns:
                table.columns[name].not_null = True
        self.model.tables[key] = table
        self.created_here.add(key)
        return [
            Change(
                "create_table",
                target,
                rerunnable=rerunnable,
                detail=f"{len(table.columns)} columns",
                **self._table_context(key),
            )
        ]

    def _no_op(self, restates: ChangeKind, target: str, table: tuple[str, str]) -> Change:
        """An IF NOT EXISTS statement whose object the replayed history already holds."""
        return Change(
            "no_op",
            target,
            rerunnable=True,
            restates=restates,
            detail="already exists: IF NOT EXISTS makes it a no-op",
            **self._table_context(table),
        )

    def _column(self, node: Any) -> _Column:
        not_null = bool(node.is_not_null)
        has_default = _is_serial(node.typeName) or node.raw_default is not None
        for constraint in node.constraints or ():
            if constraint.contype in (ConstrType.CONSTR_NOTNULL, ConstrType.CONSTR_PRIMARY):
                not_null = True
            elif constraint.contype in (
                ConstrType.CONSTR_DEFAULT,
                ConstrType.CONSTR_IDENTITY,
                ConstrType.CONSTR_GENERATED,
            ):
                has_default = True
        return _Column(
            type_name_of(node.typeName),
            not_null,
            has_default,
            self.tag,
            column_type_of(node.typeName),
        )

    def _CreateTableAsStmt(self, node: Any) -> list[Change]:
        key = self._rv(node.into.rel)
        if node.if_not_exists and key in self.model.tables:
            return [self._no_op("create_table", str(DbObject("table", *key)), key)]
        if node.objtype == ObjectType.OBJECT_MATVIEW:
            return [
                Change(
                    "create_view", str(DbObject("view", *key)), rerunnable=bool(node.if_not_exists)
                )
            ]
        self.model.tables[key] = _Table()
        self.created_here.add(key)
        return [
            Change(
                "create_table",
                str(DbObject("table", *key)),
                rerunnable=bool(node.if_not_exists),
                detail="CREATE TABLE AS",
                **self._table_context(key),
            )
        ]

    def _ViewStmt(self, node: Any) -> list[Change]:
        key = self._rv(node.view)
        return [Change("create_view", str(DbObject("view", *key)), rerunnable=bool(node.replace))]

    def _IndexStmt(self, node: Any) -> list[Change]:
        table = self._rv(node.relation)
        name = truncate_identifier(str(node.idxname)) if node.idxname else f"{table[1]}_idx"
        if node.if_not_exists and (table[0], name) in self.model.indexes:
            # still locks the table (SHARE) before PostgreSQL finds the index, and still
            # cannot be CONCURRENTLY inside a transaction
            change = self._no_op("create_index", str(DbObject("index", table[0], name)), table)
            return [replace(change, concurrently=bool(node.concurrent))]
        self.model.indexes[(table[0], name)] = (table, bool(node.unique))
        return [
            Change(
                "create_index",
                str(DbObject("index", table[0], name)),
                unique=bool(node.unique),
                concurrently=bool(node.concurrent),
                rerunnable=bool(node.if_not_exists),
                **self._table_context(table),
            )
        ]

    def _CreateEnumStmt(self, node: Any) -> list[Change]:
        return [Change("create_enum", str(DbObject("enum", *self._any_name(node.typeName))))]

    def _AlterEnumStmt(self, node: Any) -> list[Change]:
        schema, name = self._any_name(node.typeName)
        value = str(DbObject("enum_value", schema, str(node.newVal), name))
        if node.oldVal is not None:
            return [Change("rename_enum_value", value, detail=f"from {node.oldVal!r}")]
        return [Change("add_enum_value", value, rerunnable=bool(node.skipIfNewValExists))]

    def _CreateExtensionStmt(self, node: Any) -> list[Change]:
        return [
            Change("create_other", f"extension {node.extname}", rerunnable=bool(node.if_not_exists))
        ]

    def _CreateSeqStmt(self, node: Any) -> list[Change]:
        schema, name = self._rv(node.sequence)
        return [
            Change("create_other", f"sequence {schema}.{name}", rerunnable=bool(node.if_not_exists))
        ]

    def _CreateFunctionStmt(self, node: Any) -> list[Change]:
        schema, name = self._any_name(node.funcname)
        return [Change("create_other", f"function {schema}.{name}", rerunnable=bool(node.replace))]

    # -- ALTER TABLE -----------------------------------------------------------------------

    def _AlterTableStmt(self, node: Any) -> list[Change]:
        if node.objtype != ObjectType.OBJECT_TABLE:
            return [
                Change(
                    "other", f"ALTER {ObjectType(node.objtype).name[7:]}", detail=("not analysed")
                )
            ]
        key = self._rv(node.relation)
        table = self.model.tables.get(key)
        changes = []
        for cmd in node.cmds or ():
            changes.append(self._alter_cmd(key, table, cmd, bool(node.missing_ok)))
        return changes

    def _alter_cmd(
        self, key: tuple[str, str], table: _Table | None, cmd: Any, if_exists: bool
    ) -> Change:
        context = self._table_context(key)
        subtype = cmd.subtype
        if subtype == AlterTableType.AT_AddColumn:
            column = self._column(cmd.def_)
            name = truncate_identifier(str(cmd.def_.colname))
            target = str(DbObject("column", key[0], name, key[1]))
            if table is not None and cmd.missing_ok and name in table.columns:
                # still takes the table's ACCESS EXCLUSIVE lock before skipping
                return self._no_op("add_column", target, key)
            if table is not None:
                table.columns[name] = column
            return Change(
                "add_column",
                target,
                not_null=column.not_null,
                has_default=column.has_default,
                rerunnable=bool(cmd.missing_ok),
                detail=column.type_name,
                **context,
            )
        column_name = truncate_identifier(str(cmd.name)) if cmd.name else ""
        target = str(DbObject("column", key[0], column_name, key[1]))
        known = table.columns.get(column_name) if table is not None else None
        if subtype == AlterTableType.AT_DropColumn:
            if table is not None:
                table.columns.pop(column_name, None)
            return Change(
                "drop_column",
                target,
                not_null=known.not_null if known else False,
                has_default=known.has_default if known else False,
                rerunnable=bool(cmd.missing_ok),
                **context,
            )
        if subtype == AlterTableType.AT_AlterColumnType:
            new_type = column_type_of(cmd.def_.typeName)
            old_type = known.type if known else None
            if known is not None:
                known.type_name, known.type = type_name_of(cmd.def_.typeName), new_type
                known.defined_by = self.tag
            using = cmd.def_.raw_default is not None
            return Change(
                "alter_column_type",
                target,
                detail=f"{old_type or '?'} -> {new_type}" + (" USING ..." if using else ""),
                old_type=old_type,
                new_type=new_type,
                using=using,
                **context,
            )
        if subtype == AlterTableType.AT_SetNotNull:
            if known is not None:
                known.not_null = True
            return Change("set_not_null", target, rerunnable=True, **context)
        if subtype == AlterTableType.AT_DropNotNull:
            if known is not None:
                known.not_null = False
            return Change("drop_not_null", target, rerunnable=True, **context)
        if subtype == AlterTableType.AT_ColumnDefault:
            if known is not None:
                known.has_default = cmd.def_ is not None
            kind: ChangeKind = "set_default" if cmd.def_ is not None else "drop_default"
            return Change(kind, target, rerunnable=True, **context)
        if subtype == AlterTableType.AT_AddConstraint:
            return self._add_constraint(key, table, cmd.def_, context)
        if subtype == AlterTableType.AT_DropConstraint:
            name = str(DbObject("constraint", key[0], column_name, key[1]))
            return Change("drop_constraint", name, rerunnable=bool(cmd.missing_ok), **context)
        if subtype == AlterTableType.AT_ValidateConstraint:
            name = str(DbObject("constraint", key[0], column_name, key[1]))
            return Change("validate_constraint", name, rerunnable=True, **context)
        label = AlterTableType(subtype).name.removeprefix("AT_")
        return Change("other", f"table {key[0]}.{key[1]}", detail=f"ALTER TABLE {label}", **context)

    def _add_constraint(
        self, key: tuple[str, str], table: _Table | None, node: Any, context: dict[str, Any]
    ) -> Change:
        letters = {
            ConstrType.CONSTR_PRIMARY: "p",
            ConstrType.CONSTR_UNIQUE: "u",
            ConstrType.CONSTR_FOREIGN: "f",
            ConstrType.CONSTR_CHECK: "c",
            ConstrType.CONSTR_EXCLUSION: "x",
        }
        letter = letters.get(node.contype)
        name = truncate_identifier(str(node.conname)) if node.conname else "(unnamed)"
        if letter == "p" and table is not None:
            for column_key in node.keys or ():
                if (column := table.columns.get(str(column_key.sval))) is not None:
                    column.not_null = True
        return Change(
            "add_constraint",
            str(DbObject("constraint", key[0], name, key[1])),
            constraint_type=letter,
            not_valid=bool(node.skip_validation),
            detail=f"USING INDEX {node.indexname}" if node.indexname else "",
            **context,
        )

    # -- RENAME / SET SCHEMA ---------------------------------------------------------------

    def _RenameStmt(self, node: Any) -> list[Change]:
        kind = node.renameType
        new = truncate_identifier(str(node.newname))
        if kind in (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_VIEW, ObjectType.OBJECT_MATVIEW):
            key = self._rv(node.relation)
            label = "table" if kind == ObjectType.OBJECT_TABLE else "view"
            if (table := self.model.tables.pop(key, None)) is not None:
                self.model.tables[(key[0], new)] = table
            context = self._table_context(key)
            return [
                Change("rename_table", f"{label} {key[0]}.{key[1]}", detail=f"to {new}", **context)
            ]
        if kind == ObjectType.OBJECT_COLUMN:
            key = self._rv(node.relation)
            old = truncate_identifier(str(node.subname))
            table = self.model.tables.get(key)
            if table is not None and old in table.columns:
                table.columns[new] = table.columns.pop(old)
            target = str(DbObject("column", key[0], old, key[1]))
            return [Change("rename_column", target, detail=f"to {new}", **self._table_context(key))]
        if kind == ObjectType.OBJECT_TABCONSTRAINT:
            key = self._rv(node.relation)
            target = str(DbObject("constraint", key[0], str(node.subname), key[1]))
            return [Change("rename_constraint", target, detail=f"to {new}")]
        if kind == ObjectType.OBJECT_INDEX:
            schema, name = self._rv(node.relation)
            return [
                Change("rename_index", str(DbObject("index", schema, name)), detail=f"to {new}")
            ]
        if kind == ObjectType.OBJECT_TYPE:
            schema, name = self._any_name(node.object)
            return [Change("rename_type", f"type {schema}.{name}", detail=f"to {new}")]
        return [Change("other", f"RENAME {ObjectType(kind).name[7:]}", detail="not analysed")]

    def _AlterObjectSchemaStmt(self, node: Any) -> list[Change]:
        if node.objectType in (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_VIEW):
            key = self._rv(node.relation)
            if (table := self.model.tables.pop(key, None)) is not None:
                self.model.tables[(str(node.newschema), key[1])] = table
            return [
                Change(
                    "rename_table",
                    f"table {key[0]}.{key[1]}",
                    detail=f"to schema {node.newschema}",
                    **self._table_context(key),
                )
            ]
        return [Change("other", "SET SCHEMA", detail="not analysed")]

    # -- DROP ------------------------------------------------------------------------------

    def _DropStmt(self, node: Any) -> list[Change]:
        kind = node.removeType
        missing_ok = bool(node.missing_ok)
        changes = []
        for target in node.objects or ():
            if kind == ObjectType.OBJECT_SCHEMA:
                name = truncate_identifier(str(target.sval))
                changes.append(Change("drop_schema", f"schema {name}", rerunnable=missing_ok))
                continue
            items = target.names if isinstance(target, ast.TypeName) else target
            key = self._any_name(items)
            if kind == ObjectType.OBJECT_TABLE:
                context = self._table_context(key)
                self.model.tables.pop(key, None)
                changes.append(
                    Change(
                        "drop_table", str(DbObject("table", *key)), rerunnable=missing_ok, **context
                    )
                )
            elif kind in (ObjectType.OBJECT_VIEW, ObjectType.OBJECT_MATVIEW):
                changes.append(
                    Change("drop_view", str(DbObject("view", *key)), rerunnable=missing_ok)
                )
            elif kind == ObjectType.OBJECT_INDEX:
                on, unique = self.model.indexes.pop(key, (None, False))
                context = self._table_context(on) if on else {}
                changes.append(
                    Change(
                        "drop_index",
                        str(DbObject("index", *key)),
                        unique=unique,
                        concurrently=bool(node.concurrent),
                        rerunnable=missing_ok,
                        **context,
                    )
                )
            elif kind == ObjectType.OBJECT_TYPE:
                changes.append(
                    Change("drop_type", f"type {key[0]}.{key[1]}", rerunnable=missing_ok)
                )
            else:
                label = ObjectType(kind).name[7:]
                changes.append(Change("other", f"DROP {label}", detail="not analysed"))
        return changes

    # -- data, settings, metadata ----------------------------------------------------------

    def _data(self, node: Any, verb: str, idempotent: bool) -> list[Change]:
        key = self._rv(node.relation)
        return [
            Change(
                "data_change",
                str(DbObject("table", *key)),
                detail=verb,
                rerunnable=idempotent,
                **self._table_context(key),
            )
        ]

    def _InsertStmt(self, node: Any) -> list[Change]:
        # Run twice, an INSERT adds its rows twice (or fails on a key), unless it skips rows
        # already there: ON CONFLICT, or INSERT ... SELECT ... WHERE NOT EXISTS (...).
        guarded = node.onConflictClause is not None or _has_not_exists(
            getattr(node.selectStmt, "whereClause", None)
        )
        return self._data(node, "INSERT", guarded)

    def _UpdateStmt(self, node: Any) -> list[Change]:
        # SET n = n + 1 compounds when run twice; SET n = 0 does not.
        return self._data(node, "UPDATE", not _assigns_from_itself(node))

    def _DeleteStmt(self, node: Any) -> list[Change]:
        return self._data(node, "DELETE", True)

    def _VariableSetStmt(self, node: Any) -> list[Change]:
        return [Change("set_setting", str(node.name or "?"), rerunnable=True)]

    def _CommentStmt(self, node: Any) -> list[Change]:
        return [Change("metadata", "COMMENT", rerunnable=True)]

    def _GrantStmt(self, node: Any) -> list[Change]:
        return [Change("metadata", "GRANT" if node.is_grant else "REVOKE", rerunnable=True)]

    def _DoStmt(self, node: Any) -> list[Change]:
        return [Change("other", "DO block", detail="not analysed (procedural code)")]


def _nodes(value: Any) -> Any:
    """Every pglast node under ``value`` (itself included), depth first."""
    if isinstance(value, ast.Node):
        yield value
        for name in value:
            yield from _nodes(getattr(value, name))
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _nodes(item)


def _has_not_exists(where: Any) -> bool:
    """True when a WHERE clause holds ``NOT EXISTS (subquery)``."""
    for node in _nodes(where):
        if isinstance(node, ast.BoolExpr) and node.boolop == BoolExprType.NOT_EXPR:
            for arg in node.args or ():
                if isinstance(arg, ast.SubLink) and arg.subLinkType == SubLinkType.EXISTS_SUBLINK:
                    return True
    return False


def _assigns_from_itself(node: Any) -> bool:
    """True when an UPDATE sets a column from an expression reading that same column."""
    for target in node.targetList or ():
        name = str(target.name)
        for ref in _nodes(target.val):
            if isinstance(ref, ast.ColumnRef):
                fields = [f for f in ref.fields or () if isinstance(f, ast.String)]
                if fields and str(fields[-1].sval) == name:
                    return True
    return False


def _statement_text(piece: str, raw: Any) -> str:
    """The text of one parsed statement inside ``piece`` (pglast gives its location and
    length in characters of the str it parsed, not in UTF-8 bytes)."""
    start = raw.stmt_location or 0
    end = start + raw.stmt_len if raw.stmt_len else len(piece)
    return piece[start:end].strip()


def _skip_blanks_and_comments(text: str, start: int = 0) -> int:
    """The index of the first character at or after ``start`` that is neither white space
    nor inside a comment (``-- ...`` to the end of the line, ``/* ... */``, nested)."""
    i, n = start, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        else:
            break
    return i


def _line_of(piece: str, first_line: int, offset: int = 0) -> int:
    """The file line where the statement at character ``offset`` of ``piece`` starts,
    skipping the blank lines and comments before it; ``first_line`` is the line ``piece``
    starts on."""
    start = _skip_blanks_and_comments(piece, offset)
    return first_line + piece.count("\n", 0, start)


def analyse_migrations(migrations: Sequence[tuple[str, Sequence[str]]]) -> FolderAnalysis:
    """Replay ``(tag, statements)`` in journal order and return every statement's changes.

    ``statements`` are the file's pieces split on ``--> statement-breakpoint``, untrimmed (a
    piece may hold several SQL statements; they are numbered one by one). Each statement
    knows the file line it starts on, counted from the pieces' newlines.
    """
    replay = _Replay()
    results: list[MigrationEffects] = []
    for tag, pieces in migrations:
        replay.start(tag)
        statements: list[StatementEffects] = []
        first_line = 1
        for piece in pieces:
            piece_line, first_line = first_line, first_line + piece.count("\n")
            if not piece.strip():
                continue
            try:
                parsed = pglast.parse_sql(piece)
            except Exception as exc:  # pglast.parser.ParseError and friends
                statements.append(
                    StatementEffects(
                        len(statements) + 1,
                        piece.strip(),
                        error=_one_line(exc),
                        line=_line_of(piece, piece_line),
                    )
                )
                continue
            for raw in parsed:
                text = _statement_text(piece, raw)
                line = _line_of(piece, piece_line, raw.stmt_location or 0)
                number = len(statements) + 1
                try:
                    changes = tuple(replay.changes(raw.stmt))
                except Exception as exc:  # an exotic statement must not crash the analysis
                    reason = f"could not analyse ({type(exc).__name__}: {_one_line(exc)})"
                    statements.append(StatementEffects(number, text, error=reason, line=line))
                    continue
                statements.append(StatementEffects(number, text, changes, line=line))
        results.append(MigrationEffects(tag, tuple(statements)))
    columns = {
        (schema, table, name): ColumnSpec(c.type_name, c.not_null, c.has_default, c.defined_by)
        for (schema, table), t in replay.model.tables.items()
        for name, c in t.columns.items()
    }
    return FolderAnalysis(tuple(results), MappingProxyType(columns))


def analyse_sql(sql: str, *, tag: str = "snippet", before: str = "") -> MigrationEffects:
    """The effects of one SQL text (pieces split on ``;``-terminated statements by pglast).

    ``before`` is SQL replayed first as an earlier migration, to set up existing tables.
    Convenient for tests and for linting a single file.
    """
    folder = [("before", [before]), (tag, [sql])] if before else [(tag, [sql])]
    return analyse_migrations(folder).by_tag(tag)
