"""Reading one statement's changes from the replayed history, just before it runs.

:class:`StatementReader` asks the one replay engine (:class:`~orchestrator.drizzle.model.
HistoryReplay`) for the context it needs: whether a table exists or was created earlier in
the same migration, a column's type, nullability and default, whether an IF NOT EXISTS
object is already there. It keeps no schema of its own and changes nothing: the caller
applies the statement to the history after reading it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from orchestrator.analysis.changes import Change, ChangeKind
from orchestrator.analysis.idempotence import (
    insert_skips_existing_rows,
    update_reads_what_it_sets,
)
from orchestrator.analysis.typechange import ColumnType
from orchestrator.drizzle.facts import SERIAL_TYPES
from orchestrator.drizzle.model import (
    DbObject,
    HistoryReplay,
    catalog_type_name,
    truncate_identifier,
)
from orchestrator.drizzle.pgjson import Node

__all__ = ["StatementReader", "column_type_of", "type_name_of"]

DEFAULT_SCHEMA = "public"


def type_name_of(node: Any) -> str:
    """The catalog name (``pg_type.typname``) of a TypeName node; arrays get a ``_``."""
    names = [str(n.sval) for n in node.names or () if _is(n, "String")]
    return catalog_type_name(names, bool(node.arrayBounds))


def column_type_of(node: Any) -> ColumnType:
    """The type of a TypeName node with its modifiers (``None`` if not plain integers)."""
    mods: list[int] = []
    for mod in node.typmods or ():
        value: Any = mod.val if _is(mod, "A_Const") else None
        if not _is(value, "Integer"):
            return ColumnType(type_name_of(node), None)
        mods.append(int(value.ival))
    return ColumnType(type_name_of(node), tuple(mods))


def _is(node: Any, tag: str) -> bool:
    return isinstance(node, Node) and node.tag == tag


def _is_serial(node: Any) -> bool:
    names = [str(n.sval) for n in node.names or () if _is(n, "String")]
    return bool(names) and names[-1].lower() in SERIAL_TYPES


_CONSTRAINT_LETTERS = {
    "CONSTR_PRIMARY": "p",
    "CONSTR_UNIQUE": "u",
    "CONSTR_FOREIGN": "f",
    "CONSTR_CHECK": "c",
    "CONSTR_EXCLUSION": "x",
}
_RELATIONS = ("OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW")


class StatementReader:
    """One statement's changes, read from the replayed history just before it runs.

    It never changes ``history``: the caller applies the statement after reading it.
    """

    def __init__(self, history: HistoryReplay) -> None:
        self.history = history
        self.default_schema = DEFAULT_SCHEMA
        # tables created by an earlier part of the statement being read (CREATE SCHEMA ...
        # CREATE TABLE ...): the history holds them only once the statement is applied
        self.pending: set[tuple[str, str]] = set()

    def changes(self, node: Node) -> list[Change]:
        """The changes of one top-level statement."""
        self.pending = set()
        return self._changes(node)

    def _changes(self, node: Node) -> list[Change]:
        handler = getattr(self, f"_{node.tag}", None)
        if handler is None:
            return [Change("other", node.tag, detail="not analysed")]
        result: list[Change] = handler(node)
        return result

    # -- names and context -----------------------------------------------------------------

    def _rv(self, rv: Any) -> tuple[str, str]:
        schema = truncate_identifier(str(rv.schemaname)) if rv.schemaname else self.default_schema
        return schema, truncate_identifier(str(rv.relname))

    def _any_name(self, items: Any) -> tuple[str, str]:
        if not isinstance(items, tuple):  # a function's signature, ...: not a dotted name
            return self.default_schema, "?"
        names = [truncate_identifier(str(n.sval)) for n in items if _is(n, "String")]
        if not names:
            return self.default_schema, "?"
        return (names[-2] if len(names) > 1 else self.default_schema, names[-1])

    def _exists(self, key: tuple[str, str]) -> bool:
        return key in self.pending or self.history.relation_exists(*key)

    def _table_context(self, key: tuple[str, str]) -> dict[str, Any]:
        is_new = key in self.pending or self.history.table_is_new(*key)
        return {"table": f"{key[0]}.{key[1]}", "table_is_new": is_new}

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
        outer, self.default_schema = self.default_schema, name
        try:
            for element in node.schemaElts or ():
                changes.extend(self._changes(element))
        finally:
            self.default_schema = outer
        return changes

    def _CreateStmt(self, node: Any) -> list[Change]:
        if node.relation.relpersistence == "t":
            return [Change("other", "temporary table", detail="leaves nothing behind")]
        key = self._rv(node.relation)
        target = str(DbObject("table", *key))
        rerunnable = bool(node.if_not_exists)
        if rerunnable and self._exists(key):
            return [self._no_op("create_table", target, key)]
        columns = {
            truncate_identifier(str(element.colname))
            for element in node.tableElts or ()
            if _is(element, "ColumnDef")
        }
        self.pending.add(key)
        return [
            Change(
                "create_table",
                target,
                rerunnable=rerunnable,
                detail=f"{len(columns)} columns",
                table=f"{key[0]}.{key[1]}",
                table_is_new=True,
            )
        ]

    def _column(self, node: Any) -> tuple[bool, bool]:
        """A column definition's ``(not_null, has_default)``."""
        not_null = bool(node.is_not_null)
        has_default = _is_serial(node.typeName) or node.raw_default is not None
        for constraint in node.constraints or ():
            if constraint.contype in ("CONSTR_NOTNULL", "CONSTR_PRIMARY"):
                not_null = True
            elif constraint.contype in ("CONSTR_DEFAULT", "CONSTR_IDENTITY", "CONSTR_GENERATED"):
                has_default = True
        return not_null, has_default

    def _CreateTableAsStmt(self, node: Any) -> list[Change]:
        key = self._rv(node.into.rel)
        if node.if_not_exists and self._exists(key):
            return [self._no_op("create_table", str(DbObject("table", *key)), key)]
        if node.objtype == "OBJECT_MATVIEW":
            return [
                Change(
                    "create_view", str(DbObject("view", *key)), rerunnable=bool(node.if_not_exists)
                )
            ]
        self.pending.add(key)
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
        if node.if_not_exists and self._exists((table[0], name)):
            # still locks the table (SHARE) before PostgreSQL finds the index, and still
            # cannot be CONCURRENTLY inside a transaction
            change = self._no_op("create_index", str(DbObject("index", table[0], name)), table)
            return [replace(change, concurrently=bool(node.concurrent))]
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

    def _ReindexStmt(self, node: Any) -> list[Change]:
        concurrently = any(
            _is(p, "DefElem") and str(p.defname) == "concurrently" for p in node.params or ()
        )
        if node.relation is None:  # REINDEX SCHEMA / DATABASE / SYSTEM
            return [Change("reindex", "REINDEX", concurrently=concurrently, rerunnable=True)]
        key = self._rv(node.relation)
        if str(node.kind).endswith("INDEX"):
            index = self.history.index(*key)
            on = index.on if index else None
            return [
                Change(
                    "reindex",
                    str(DbObject("index", *key)),
                    concurrently=concurrently,
                    rerunnable=True,
                    **(self._table_context(on) if on else {}),
                )
            ]
        return [
            Change(
                "reindex",
                str(DbObject("table", *key)),
                concurrently=concurrently,
                rerunnable=True,
                **self._table_context(key),
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
        if node.objtype != "OBJECT_TABLE":
            return [Change("other", f"ALTER {str(node.objtype)[7:]}", detail="not analysed")]
        key = self._rv(node.relation)
        return [self._alter_cmd(key, cmd) for cmd in node.cmds or ()]

    def _alter_cmd(self, key: tuple[str, str], cmd: Any) -> Change:
        context = self._table_context(key)
        subtype = cmd.subtype
        if subtype == "AT_AddColumn":
            name = truncate_identifier(str(cmd.def_.colname))
            target = str(DbObject("column", key[0], name, key[1]))
            if cmd.missing_ok and self.history.column(*key, name) is not None:
                # still takes the table's ACCESS EXCLUSIVE lock before skipping
                return self._no_op("add_column", target, key)
            not_null, has_default = self._column(cmd.def_)
            return Change(
                "add_column",
                target,
                not_null=not_null,
                has_default=has_default,
                rerunnable=bool(cmd.missing_ok),
                detail=type_name_of(cmd.def_.typeName),
                **context,
            )
        column_name = truncate_identifier(str(cmd.name)) if cmd.name else ""
        target = str(DbObject("column", key[0], column_name, key[1]))
        if subtype == "AT_DropColumn":
            known = self.history.column(*key, column_name)
            return Change(
                "drop_column",
                target,
                not_null=known.not_null if known else False,
                has_default=known.has_default if known else False,
                rerunnable=bool(cmd.missing_ok),
                **context,
            )
        if subtype == "AT_AlterColumnType":
            known = self.history.column(*key, column_name)
            new_type = column_type_of(cmd.def_.typeName)
            old_type = None
            if known is not None and known.type_name is not None:
                old_type = ColumnType(known.type_name, known.type_mods)
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
        if subtype == "AT_SetNotNull":
            return Change("set_not_null", target, rerunnable=True, **context)
        if subtype == "AT_DropNotNull":
            return Change("drop_not_null", target, rerunnable=True, **context)
        if subtype == "AT_ColumnDefault":
            kind: ChangeKind = "set_default" if cmd.def_ is not None else "drop_default"
            return Change(kind, target, rerunnable=True, **context)
        if subtype == "AT_AddConstraint":
            return self._add_constraint(key, cmd.def_, context)
        if subtype == "AT_DropConstraint":
            name = str(DbObject("constraint", key[0], column_name, key[1]))
            return Change("drop_constraint", name, rerunnable=bool(cmd.missing_ok), **context)
        if subtype == "AT_ValidateConstraint":
            name = str(DbObject("constraint", key[0], column_name, key[1]))
            return Change("validate_constraint", name, rerunnable=True, **context)
        label = str(subtype).removeprefix("AT_")
        return Change("other", f"table {key[0]}.{key[1]}", detail=f"ALTER TABLE {label}", **context)

    def _add_constraint(self, key: tuple[str, str], node: Any, context: dict[str, Any]) -> Change:
        name = truncate_identifier(str(node.conname)) if node.conname else "(unnamed)"
        return Change(
            "add_constraint",
            str(DbObject("constraint", key[0], name, key[1])),
            constraint_type=_CONSTRAINT_LETTERS.get(node.contype),
            not_valid=bool(node.skip_validation),
            detail=f"USING INDEX {node.indexname}" if node.indexname else "",
            **context,
        )

    # -- RENAME / SET SCHEMA ---------------------------------------------------------------

    def _RenameStmt(self, node: Any) -> list[Change]:
        kind = node.renameType
        new = truncate_identifier(str(node.newname))
        if kind in _RELATIONS:
            key = self._rv(node.relation)
            label = "table" if kind == "OBJECT_TABLE" else "view"
            context = self._table_context(key)
            return [
                Change("rename_table", f"{label} {key[0]}.{key[1]}", detail=f"to {new}", **context)
            ]
        if kind == "OBJECT_COLUMN":
            key = self._rv(node.relation)
            old = truncate_identifier(str(node.subname))
            target = str(DbObject("column", key[0], old, key[1]))
            return [Change("rename_column", target, detail=f"to {new}", **self._table_context(key))]
        if kind == "OBJECT_TABCONSTRAINT":
            key = self._rv(node.relation)
            target = str(DbObject("constraint", key[0], str(node.subname), key[1]))
            return [Change("rename_constraint", target, detail=f"to {new}")]
        if kind == "OBJECT_INDEX":
            schema, name = self._rv(node.relation)
            return [
                Change("rename_index", str(DbObject("index", schema, name)), detail=f"to {new}")
            ]
        if kind == "OBJECT_TYPE":
            schema, name = self._any_name(node.object)
            return [Change("rename_type", f"type {schema}.{name}", detail=f"to {new}")]
        return [Change("other", f"RENAME {str(kind)[7:]}", detail="not analysed")]

    def _AlterObjectSchemaStmt(self, node: Any) -> list[Change]:
        if node.objectType in ("OBJECT_TABLE", "OBJECT_VIEW"):
            key = self._rv(node.relation)
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
            if kind == "OBJECT_SCHEMA":
                name = truncate_identifier(str(target.sval))
                changes.append(Change("drop_schema", f"schema {name}", rerunnable=missing_ok))
                continue
            key = self._any_name(target.names if _is(target, "TypeName") else target)
            if kind == "OBJECT_TABLE":
                changes.append(
                    Change(
                        "drop_table",
                        str(DbObject("table", *key)),
                        rerunnable=missing_ok,
                        **self._table_context(key),
                    )
                )
            elif kind in ("OBJECT_VIEW", "OBJECT_MATVIEW"):
                changes.append(
                    Change("drop_view", str(DbObject("view", *key)), rerunnable=missing_ok)
                )
            elif kind == "OBJECT_INDEX":
                index = self.history.index(*key)
                on = index.on if index else None
                changes.append(
                    Change(
                        "drop_index",
                        str(DbObject("index", *key)),
                        unique=index.unique if index else False,
                        concurrently=bool(node.concurrent),
                        rerunnable=missing_ok,
                        **(self._table_context(on) if on else {}),
                    )
                )
            elif kind == "OBJECT_TYPE":
                changes.append(
                    Change("drop_type", f"type {key[0]}.{key[1]}", rerunnable=missing_ok)
                )
            else:
                changes.append(Change("other", f"DROP {str(kind)[7:]}", detail="not analysed"))
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
        return self._data(node, "INSERT", insert_skips_existing_rows(node))

    def _UpdateStmt(self, node: Any) -> list[Change]:
        # SET n = n + 1 compounds when run twice; SET n = 0 does not.
        return self._data(node, "UPDATE", not update_reads_what_it_sets(node))

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
