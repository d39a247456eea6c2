"""Reading one statement's changes from its SQL, with what the shadow knows of the schema.

:class:`StatementReader` reads each statement of a migration in order. Whether a table was
created earlier in the same migration it follows itself (from the statements read so far);
what existed before the migration (a table, a column's type, nullability and default, an
index, an object an IF NOT EXISTS finds already there) it asks the shadow's
:class:`~orchestrator.analysis.shadowfacts.MigrationFacts`, when there are any. Without
them every table a statement names counts as existing, and what it holds as unknown.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from pglast import ast
from pglast.enums import AlterTableType, ConstrType, ObjectType, ReindexObjectType
from pglast.stream import RawStream

from orchestrator.analysis.changes import Change, ChangeKind
from orchestrator.analysis.idempotence import insert_skips_existing_rows, update_reads_what_it_sets
from orchestrator.analysis.shadowfacts import ColumnFacts, IndexFacts, MigrationFacts
from orchestrator.analysis.typechange import ColumnType, column_type_of, is_serial, type_name_of

__all__ = ["StatementReader", "truncate_identifier"]

DEFAULT_SCHEMA = "public"
NAMEDATALEN = 64  # PostgreSQL's compile-time default; identifiers keep NAMEDATALEN-1 bytes


def truncate_identifier(name: str) -> str:
    """Cut ``name`` to NAMEDATALEN-1 bytes of UTF-8 without splitting a character, like PG."""
    encoded = name.encode("utf-8")
    if len(encoded) < NAMEDATALEN:
        return name
    # errors="ignore" drops a trailing partial character, as pg_mbcliplen does.
    return encoded[: NAMEDATALEN - 1].decode("utf-8", errors="ignore")


def _key(kind: str, schema: str, name: str, parent: str | None = None) -> str:
    """An object's name as the catalog keys it: ``column public.users.email``."""
    if kind == "schema":
        return f"schema {name}"
    return f"{kind} {schema}.{name}" if parent is None else f"{kind} {schema}.{parent}.{name}"


_CONSTRAINT_LETTERS = {
    ConstrType.CONSTR_PRIMARY: "p",
    ConstrType.CONSTR_UNIQUE: "u",
    ConstrType.CONSTR_FOREIGN: "f",
    ConstrType.CONSTR_CHECK: "c",
    ConstrType.CONSTR_EXCLUSION: "x",
}
_RELATIONS = (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_VIEW, ObjectType.OBJECT_MATVIEW)
_DEFAULTS = (ConstrType.CONSTR_DEFAULT, ConstrType.CONSTR_IDENTITY, ConstrType.CONSTR_GENERATED)


def _is_null(expression: Any) -> bool:
    """A NULL constant, cast or not: as a DEFAULT it is none (PostgreSQL stores no default)."""
    while isinstance(expression, ast.TypeCast):
        expression = expression.arg
    return isinstance(expression, ast.A_Const) and bool(expression.isnull)


class StatementReader:
    """The changes of each statement of one migration, read in order (see the module)."""

    def __init__(self, facts: MigrationFacts | None = None) -> None:
        self.facts = facts
        self.default_schema = DEFAULT_SCHEMA
        # relations and columns created, and relations dropped, by the statements read so far
        self.created: set[tuple[str, ...]] = set()
        self.dropped: set[tuple[str, ...]] = set()
        # column types set by the statements read so far
        self.types: dict[tuple[str, ...], ColumnType] = {}

    def changes(self, node: Any) -> list[Change]:
        """The changes of the migration's next statement (or of an element of a schema)."""
        tag = type(node).__name__
        if (handler := getattr(self, f"_{tag}", None)) is None:
            return [Change("other", tag, detail="not analysed")]
        result: list[Change] = handler(node)
        return result

    # -- names and context -----------------------------------------------------------------

    def _rv(self, rv: Any) -> tuple[str, str]:
        schema = truncate_identifier(str(rv.schemaname)) if rv.schemaname else self.default_schema
        return schema, truncate_identifier(str(rv.relname))

    def _any_name(self, items: Any) -> tuple[str, str]:
        if not isinstance(items, tuple):  # a function's signature, ...: not a dotted name
            return self.default_schema, "?"
        names = [truncate_identifier(str(n.sval)) for n in items if isinstance(n, ast.String)]
        if not names:
            return self.default_schema, "?"
        return (names[-2] if len(names) > 1 else self.default_schema, names[-1])

    def _exists(self, key: tuple[str, str]) -> bool:
        if key in self.created or key in self.dropped:
            return key in self.created
        return self.facts is not None and self.facts.relation_exists(*key)

    def _column(self, table: tuple[str, str], name: str) -> ColumnFacts | None:
        """The column as it was before the migration (None: unknown, or added in it)."""
        if self.facts is None or (*table, name) in self.created or table in self.created:
            return None
        return self.facts.column(*table, name)

    def _index(self, key: tuple[str, str]) -> IndexFacts | None:
        if self.facts is None or key in self.created:
            return None
        return self.facts.index(*key)

    def _table_context(self, key: tuple[str, str]) -> dict[str, Any]:
        return {"table": f"{key[0]}.{key[1]}", "table_is_new": key in self.created}

    def _no_op(self, restates: ChangeKind, target: str, table: tuple[str, str]) -> Change:
        """An IF NOT EXISTS statement whose object already exists (before it, or earlier in it)."""
        return Change(
            "no_op",
            target,
            rerunnable=True,
            restates=restates,
            detail="already exists: IF NOT EXISTS makes it a no-op",
            **self._table_context(table),
        )

    def _create(self, key: tuple[str, ...]) -> None:
        self.created.add(key)
        self.dropped.discard(key)

    def _drop(self, key: tuple[str, ...]) -> None:
        self.created.discard(key)
        self.dropped.add(key)

    # -- CREATE ----------------------------------------------------------------------------

    def _CreateSchemaStmt(self, node: Any) -> list[Change]:
        name = truncate_identifier(str(node.schemaname or node.authrole.rolename))
        changes = [
            Change("create_schema", _key("schema", name, name), rerunnable=bool(node.if_not_exists))
        ]
        outer, self.default_schema = self.default_schema, name
        try:
            for element in node.schemaElts or ():
                changes.extend(self.changes(element))
        finally:
            self.default_schema = outer
        return changes

    def _CreateStmt(self, node: Any) -> list[Change]:
        if node.relation.relpersistence == "t":
            return [Change("other", "temporary table", detail="leaves nothing behind")]
        key = self._rv(node.relation)
        target = _key("table", *key)
        rerunnable = bool(node.if_not_exists)
        if rerunnable and self._exists(key):
            return [self._no_op("create_table", target, key)]
        columns = {
            truncate_identifier(str(element.colname))
            for element in node.tableElts or ()
            if isinstance(element, ast.ColumnDef)
        }
        self._create(key)
        return [
            Change(
                "create_table",
                target,
                rerunnable=rerunnable,
                detail=f"{len(columns)} columns",
                **self._table_context(key),
            )
        ]

    def _column_def(self, node: Any) -> tuple[bool, bool]:
        """A column definition's ``(not_null, has_default)``."""
        not_null = bool(node.is_not_null)
        has_default = is_serial(node.typeName) or node.raw_default is not None
        for constraint in node.constraints or ():
            if constraint.contype in (ConstrType.CONSTR_NOTNULL, ConstrType.CONSTR_PRIMARY):
                not_null = True
            elif constraint.contype in _DEFAULTS and not _is_null(constraint.raw_expr):
                has_default = True
        return not_null, has_default

    def _CreateTableAsStmt(self, node: Any) -> list[Change]:
        key = self._rv(node.into.rel)
        if node.if_not_exists and self._exists(key):
            return [self._no_op("create_table", _key("table", *key), key)]
        if node.objtype == ObjectType.OBJECT_MATVIEW:
            return [Change("create_view", _key("view", *key), rerunnable=bool(node.if_not_exists))]
        self._create(key)
        return [
            Change(
                "create_table",
                _key("table", *key),
                rerunnable=bool(node.if_not_exists),
                detail="CREATE TABLE AS",
                **self._table_context(key),
            )
        ]

    def _ViewStmt(self, node: Any) -> list[Change]:
        key = self._rv(node.view)
        return [Change("create_view", _key("view", *key), rerunnable=bool(node.replace))]

    def _IndexStmt(self, node: Any) -> list[Change]:
        table = self._rv(node.relation)
        name = truncate_identifier(str(node.idxname)) if node.idxname else f"{table[1]}_idx"
        if node.if_not_exists and self._exists((table[0], name)):
            # still locks the table (SHARE) before PostgreSQL finds the index, and still
            # cannot be CONCURRENTLY inside a transaction
            change = self._no_op("create_index", _key("index", table[0], name), table)
            return [replace(change, concurrently=bool(node.concurrent))]
        self._create((table[0], name))
        return [
            Change(
                "create_index",
                _key("index", table[0], name),
                unique=bool(node.unique),
                concurrently=bool(node.concurrent),
                rerunnable=bool(node.if_not_exists),
                **self._table_context(table),
            )
        ]

    def _ReindexStmt(self, node: Any) -> list[Change]:
        concurrently = any(
            isinstance(p, ast.DefElem) and p.defname == "concurrently" for p in node.params or ()
        )
        if node.relation is None:  # REINDEX SCHEMA / DATABASE / SYSTEM
            return [Change("reindex", "REINDEX", concurrently=concurrently, rerunnable=True)]
        key = self._rv(node.relation)
        if node.kind == ReindexObjectType.REINDEX_OBJECT_INDEX:
            index = self._index(key)
            target, on = _key("index", *key), index.table if index else None
        else:
            target, on = _key("table", *key), key
        return [
            Change(
                "reindex",
                target,
                concurrently=concurrently,
                rerunnable=True,
                **(self._table_context(on) if on else {}),
            )
        ]

    def _CreateEnumStmt(self, node: Any) -> list[Change]:
        return [Change("create_enum", _key("enum", *self._any_name(node.typeName)))]

    def _AlterEnumStmt(self, node: Any) -> list[Change]:
        schema, name = self._any_name(node.typeName)
        value = _key("enum_value", schema, str(node.newVal), name)
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
            return [Change("other", f"ALTER {node.objtype.name[7:]}", detail="not analysed")]
        key = self._rv(node.relation)
        return [self._alter_cmd(key, cmd) for cmd in node.cmds or ()]

    def _alter_cmd(self, key: tuple[str, str], cmd: Any) -> Change:
        context = self._table_context(key)
        subtype = cmd.subtype
        if subtype == AlterTableType.AT_AddColumn:
            name = truncate_identifier(str(cmd.def_.colname))
            target = _key("column", key[0], name, key[1])
            exists = (*key, name) in self.created or self._column(key, name) is not None
            if cmd.missing_ok and exists and (*key, name) not in self.dropped:
                # still takes the table's ACCESS EXCLUSIVE lock before skipping
                return self._no_op("add_column", target, key)
            self._create((*key, name))
            self.types[(*key, name)] = column_type_of(cmd.def_.typeName)
            not_null, has_default = self._column_def(cmd.def_)
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
        target = _key("column", key[0], column_name, key[1])
        if subtype == AlterTableType.AT_DropColumn:
            known = self._column(key, column_name)
            self._drop((*key, column_name))
            return Change(
                "drop_column",
                target,
                not_null=known.not_null if known else False,
                has_default=known.has_default if known else False,
                rerunnable=bool(cmd.missing_ok),
                **context,
            )
        if subtype == AlterTableType.AT_AlterColumnType:
            known = self._column(key, column_name)
            new_type = column_type_of(cmd.def_.typeName)
            old_type = self.types.get((*key, column_name), known.type if known else None)
            self.types[(*key, column_name)] = new_type
            using = cmd.def_.raw_default is not None
            # the shadow's word: did the migration replace the table's storage?
            rewrites = None if self.facts is None else f"{key[0]}.{key[1]}" in self.facts.rewrites
            return Change(
                "alter_column_type",
                target,
                detail=f"{old_type or '?'} -> {new_type}" + (" USING ..." if using else ""),
                old_type=old_type,
                new_type=new_type,
                using=using,
                rewrites=rewrites,
                **context,
            )
        if subtype == AlterTableType.AT_SetNotNull:
            return Change("set_not_null", target, rerunnable=True, **context)
        if subtype == AlterTableType.AT_DropNotNull:
            return Change("drop_not_null", target, rerunnable=True, **context)
        if subtype == AlterTableType.AT_ColumnDefault:
            kind: ChangeKind = "set_default" if cmd.def_ is not None else "drop_default"
            return Change(kind, target, rerunnable=True, **context)
        if subtype == AlterTableType.AT_AddConstraint:
            return self._add_constraint(key, cmd.def_, context)
        if subtype == AlterTableType.AT_DropConstraint:
            name = _key("constraint", key[0], column_name, key[1])
            return Change("drop_constraint", name, rerunnable=bool(cmd.missing_ok), **context)
        if subtype == AlterTableType.AT_ValidateConstraint:
            name = _key("constraint", key[0], column_name, key[1])
            return Change("validate_constraint", name, rerunnable=True, **context)
        label = subtype.name.removeprefix("AT_")
        return Change("other", f"table {key[0]}.{key[1]}", detail=f"ALTER TABLE {label}", **context)

    def _add_constraint(self, key: tuple[str, str], node: Any, context: dict[str, Any]) -> Change:
        name = truncate_identifier(str(node.conname)) if node.conname else "(unnamed)"
        return Change(
            "add_constraint",
            _key("constraint", key[0], name, key[1]),
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
            label = "table" if kind == ObjectType.OBJECT_TABLE else "view"
            context = self._table_context(key)
            self._drop(key)
            if context["table_is_new"]:
                self._create((key[0], new))
            return [
                Change("rename_table", f"{label} {key[0]}.{key[1]}", detail=f"to {new}", **context)
            ]
        if kind == ObjectType.OBJECT_COLUMN:
            key = self._rv(node.relation)
            old = truncate_identifier(str(node.subname))
            target = _key("column", key[0], old, key[1])
            return [Change("rename_column", target, detail=f"to {new}", **self._table_context(key))]
        if kind == ObjectType.OBJECT_TABCONSTRAINT:
            key = self._rv(node.relation)
            target = _key("constraint", key[0], str(node.subname), key[1])
            return [Change("rename_constraint", target, detail=f"to {new}")]
        if kind == ObjectType.OBJECT_INDEX:
            schema, name = self._rv(node.relation)
            return [Change("rename_index", _key("index", schema, name), detail=f"to {new}")]
        if kind == ObjectType.OBJECT_TYPE:
            schema, name = self._any_name(node.object)
            return [Change("rename_type", f"type {schema}.{name}", detail=f"to {new}")]
        return [Change("other", f"RENAME {kind.name[7:]}", detail="not analysed")]

    def _AlterObjectSchemaStmt(self, node: Any) -> list[Change]:
        if node.objectType in (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_VIEW):
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
            if kind == ObjectType.OBJECT_SCHEMA:
                name = truncate_identifier(str(target.sval))
                changes.append(Change("drop_schema", f"schema {name}", rerunnable=missing_ok))
                continue
            key = self._any_name(target.names if isinstance(target, ast.TypeName) else target)
            if kind == ObjectType.OBJECT_TABLE:
                changes.append(
                    Change(
                        "drop_table",
                        _key("table", *key),
                        rerunnable=missing_ok,
                        **self._table_context(key),
                    )
                )
                self._drop(key)
            elif kind in (ObjectType.OBJECT_VIEW, ObjectType.OBJECT_MATVIEW):
                changes.append(Change("drop_view", _key("view", *key), rerunnable=missing_ok))
            elif kind == ObjectType.OBJECT_INDEX:
                index = self._index(key)
                on = index.table if index else None
                self._drop(key)
                changes.append(
                    Change(
                        "drop_index",
                        _key("index", *key),
                        unique=index.unique if index else False,
                        concurrently=bool(node.concurrent),
                        rerunnable=missing_ok,
                        **(self._table_context(on) if on else {}),
                    )
                )
            elif kind == ObjectType.OBJECT_TYPE:
                changes.append(
                    Change("drop_type", f"type {key[0]}.{key[1]}", rerunnable=missing_ok)
                )
            else:
                changes.append(Change("other", f"DROP {kind.name[7:]}", detail="not analysed"))
        return changes

    # -- data, settings, metadata ----------------------------------------------------------

    def _data(self, node: Any, verb: str, idempotent: bool) -> list[Change]:
        key = self._rv(node.relation)
        return [
            Change(
                "data_change",
                _key("table", *key),
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
        # "off": 0 in any unit, which turns a timeout off, or back to the default (DEFAULT,
        # RESET [ALL]: no value), which for a timeout is no limit unless configured
        value = str(RawStream()(node.args[0])).strip("'") if node.args else "0"
        detail = "off" if re.fullmatch(r"0+(\.0*)?\s*[a-z]*", value) else ""
        return [Change("set_setting", str(node.name or "ALL"), rerunnable=True, detail=detail)]

    def _CommentStmt(self, node: Any) -> list[Change]:
        return [Change("metadata", "COMMENT", rerunnable=True)]

    def _GrantStmt(self, node: Any) -> list[Change]:
        return [Change("metadata", "GRANT" if node.is_grant else "REVOKE", rerunnable=True)]

    def _DoStmt(self, node: Any) -> list[Change]:
        return [Change("other", "DO block", detail="not analysed (procedural code)")]
