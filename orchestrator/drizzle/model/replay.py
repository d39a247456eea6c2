"""Replaying the other statements (views, enums, ALTER, RENAME, DROP, DO blocks) on the catalog."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pglast import ast

from orchestrator.drizzle.facts import (
    UNKNOWN,
    normalize_default_json,
)
from orchestrator.drizzle.model.catalog import _Catalog
from orchestrator.drizzle.model.creating import _CreatingReplay
from orchestrator.drizzle.model.entities import (
    _INDEX_BACKED,
    _Column,
    _Constraint,
    _Enum,
    _EnumValue,
    _Function,
    _Index,
    _Table,
    _Trigger,
    _View,
)
from orchestrator.drizzle.model.names import truncate_identifier
from orchestrator.drizzle.model.sqltree import (
    _AT_ADD_COLUMN,
    _AT_ADD_CONSTRAINT,
    _AT_ADD_IDENTITY,
    _AT_ALTER_COLUMN_TYPE,
    _AT_COLUMN_DEFAULT,
    _AT_DROP_COLUMN,
    _AT_DROP_CONSTRAINT,
    _AT_DROP_EXPRESSION,
    _AT_DROP_IDENTITY,
    _AT_DROP_NOT_NULL,
    _AT_SET_NOT_NULL,
    _CASCADE,
    _COLUMN,
    _COLUMN_ALTERATIONS,
    _INDEX,
    _MATVIEW,
    _RELATION_KINDS,
    _ROUTINE_KINDS,
    _SCHEMA,
    _TABCONSTRAINT,
    _TABLE,
    _TRIGGER,
    _TYPE,
    _VIEW,
    _column_ref_fields,
    _do_block_queries,
    _is,
    _plain,
    _plain_fields,
    _raw_nodes,
    _strings,
    _type_name_fields,
)
from orchestrator.drizzle.pgjson import parse_sql, raw_fields, walk, wrap


class _Replay(_CreatingReplay):
    """Applies one parsed statement at a time to the catalog, on behalf of migration ``tag``."""

    def __init__(self, catalog: _Catalog) -> None:
        super().__init__(catalog)
        handlers: dict[type[ast.Node], Callable[[Any], None]] = {
            ast.CreateSchemaStmt: self._create_schema,
            ast.CreateStmt: self._create_table,
            ast.CreateTableAsStmt: self._create_table_as,
            ast.ViewStmt: self._create_view,
            ast.IndexStmt: self._create_index,
            ast.CreateEnumStmt: self._create_enum,
            ast.AlterEnumStmt: self._alter_enum,
            ast.AlterTableStmt: self._alter_table,
            ast.RenameStmt: self._rename,
            ast.AlterObjectSchemaStmt: self._set_schema,
            ast.DropStmt: self._drop,
            ast.DoStmt: self._do,
            ast.CreateFunctionStmt: self._create_function,
            ast.CreateTrigStmt: self._create_trigger,
        }
        self._handlers.update({kind.__name__: h for kind, h in handlers.items()})

    def _create_view(self, node: Any) -> None:
        if node.view.relpersistence == "t":
            return
        schema, name = self._range_var(node.view)
        existing = self.catalog.view(schema, name)
        if existing is not None and node.replace:  # same view, same evidence, same creator
            self.catalog.views.remove(existing)
            creator = existing.creator
        else:
            self._new_relation_allowed(schema, name, if_not_exists=False)
            creator = self.tag
        self.catalog.views.append(self._view(schema, name, creator, node.query))

    def _view(self, schema: str, name: str, creator: str | None, query: Any) -> _View:
        reads: list[_Table | _View] = []
        for sub in walk(query):
            if _is(sub, ast.RangeVar):
                relation = self.catalog.table(*self._range_var(sub)) or self.catalog.view(
                    *self._range_var(sub)
                )
                if relation is not None:
                    reads.append(relation)
        references = list(_column_ref_fields(query))
        star = any(_is(fields[-1], ast.A_Star) for fields in references)
        names = {
            truncate_identifier(str(f.sval))
            for fields in references
            for f in fields
            if _is(f, ast.String)
        }
        return _View(schema, name, creator, tuple(reads), frozenset(names), star)

    def _create_table_as(self, node: Any) -> None:
        rv = node.into.rel
        if rv.relpersistence == "t":
            return
        schema, name = self._range_var(rv)
        if not self._new_relation_allowed(schema, name, bool(node.if_not_exists)):
            return
        if node.objtype == _MATVIEW:
            self.catalog.views.append(self._view(schema, name, self.tag, node.query))
            return
        table = _Table(schema, name, self.tag)
        self.catalog.tables.append(table)
        # Column names only where they are explicit: a column list, AS alias, or a bare column.
        names = _strings(node.into.colNames)
        if not names and _is(node.query, ast.SelectStmt):
            for target in node.query.targetList or ():
                bare = [f[-1] for f in _column_ref_fields(target.val)]
                if target.name:
                    names.append(truncate_identifier(str(target.name)))
                elif _is(target.val, ast.ColumnRef) and _is(bare[0], ast.String):
                    names.append(truncate_identifier(str(bare[0].sval)))
        for column_name in dict.fromkeys(names):
            self.catalog.columns.append(_Column(table, column_name, self.tag, default=UNKNOWN))

    # -- enums -----------------------------------------------------------------------------

    def _create_enum(self, node: Any) -> None:
        schema, name = self._any_name(node.typeName)
        if (existing := self.catalog.enum(schema, name)) is not None:
            self.catalog.drop_enum(existing, cascade=False)
        enum = _Enum(schema, name, self.tag)
        self.catalog.enums.append(enum)
        for label in dict.fromkeys(str(v.sval) for v in node.vals or ()):
            self.catalog.enum_values.append(_EnumValue(enum, label, self.tag))

    def _enum_or_phantom(self, schema: str, name: str) -> _Enum:
        enum = self.catalog.enum(schema, name)
        if enum is None:  # ALTER TYPE ... VALUE only works on enums: a placeholder is sound
            enum = _Enum(schema, name, None, phantom=True)
            self.catalog.enums.append(enum)
        return enum

    def _alter_enum(self, node: Any) -> None:
        enum = self._enum_or_phantom(*self._any_name(node.typeName))
        new_label = str(node.newVal)
        if node.oldVal is not None:  # RENAME VALUE
            old = self.catalog.enum_value(enum, str(node.oldVal))
            if old is not None:
                self.catalog.enum_values.remove(old)
        elif self.catalog.enum_value(enum, new_label) is not None:  # ADD VALUE [IF NOT EXISTS]
            return
        self.catalog.enum_values.append(_EnumValue(enum, new_label, self.tag))

    # -- ALTER TABLE -----------------------------------------------------------------------

    def _alter_table(self, node: Any) -> None:
        if not self._alter_table_raw(raw_fields(node)):
            self._alter_table_nodes(node)

    def _alter_table_raw(self, fields: dict[str, Any]) -> bool:
        """ALTER TABLE read from the raw JSON: ADD CONSTRAINT directly, other commands as Nodes.

        Returns False, having changed nothing, when the tree was already read through Nodes.
        """
        rv = fields.get("relation")
        cmds = _raw_nodes(fields.get("cmds"), "AlterTableCmd")
        if type(rv) is not dict or cmds is None:
            return False
        if fields.get("objtype") != _TABLE:
            return True
        schema, name = self._qualify(rv.get("schemaname"), str(rv.get("relname")))
        table = self.catalog.table(schema, name)
        if table is None:
            if fields.get("missing_ok") or self.catalog.relation_name_taken(schema, name):
                return True  # IF EXISTS on an unknown table, or ALTER TABLE on a view/index
            table = self._table_or_phantom(schema, name)
        for cmd in cmds:
            definition = cmd.get("def")
            constraint = definition.get("Constraint") if type(definition) is dict else None
            if cmd.get("subtype") == _AT_ADD_CONSTRAINT and type(constraint) is dict:
                self._add_raw_constraint(table, constraint, None)
            else:  # each command's JSON is read by one path only
                self._alter_table_cmd(table, wrap("AlterTableCmd", cmd))
        return True

    def _alter_table_nodes(self, node: Any) -> None:
        if node.objtype != _TABLE:
            return
        schema, name = self._range_var(node.relation)
        table = self.catalog.table(schema, name)
        if table is None:
            if node.missing_ok or self.catalog.relation_name_taken(schema, name):
                return  # IF EXISTS on an unknown table, or ALTER TABLE on a view/index
            table = self._table_or_phantom(schema, name)
        for cmd in node.cmds or ():
            self._alter_table_cmd(table, cmd)

    def _alter_table_cmd(self, table: _Table, cmd: Any) -> None:
        cascade = cmd.behavior == _CASCADE
        subtype = cmd.subtype
        if subtype == _AT_ADD_COLUMN:
            column = self._add_column(table, cmd.def_, if_not_exists=bool(cmd.missing_ok))
            if column is not None:
                for constraint in cmd.def_.constraints or ():
                    self._add_constraint(table, constraint, column.name)
        elif subtype == _AT_DROP_COLUMN:
            column = self.catalog.column(table, truncate_identifier(cmd.name))
            if column is not None:
                self.catalog.drop_column(column, cascade)
        elif subtype == _AT_ADD_CONSTRAINT:
            self._add_constraint(table, cmd.def_, None)
        elif subtype == _AT_DROP_CONSTRAINT:
            constraint = self.catalog.constraint(table, truncate_identifier(cmd.name))
            if constraint is not None:
                self.catalog.drop_constraint(constraint, cascade)
        elif subtype in _COLUMN_ALTERATIONS:
            column = self.catalog.column(table, truncate_identifier(cmd.name))
            if column is not None:
                self.catalog.touch(column)
                self._alter_column(column, subtype, cmd)

    def _alter_column(self, column: _Column, subtype: str, cmd: Any) -> None:
        """ALTER COLUMN: its type, nullability, default or identity."""
        if subtype == _AT_ALTER_COLUMN_TYPE:
            type_name = _type_name_fields(_plain_fields(cmd.def_))
            spec = self._column_spec(type_name if type(type_name) is dict else None, ())
            if spec is not None:
                column.enum, column.type, column.array = spec.enum, spec.type, spec.array
                column.written = spec.written
            else:
                column.enum, column.type, column.written = None, UNKNOWN, None
        elif subtype == _AT_SET_NOT_NULL:
            column.not_null = True
        elif subtype == _AT_DROP_NOT_NULL:
            column.not_null = False
        elif subtype == _AT_COLUMN_DEFAULT:
            expr = cmd.def_
            column.default = None if expr is None else normalize_default_json(_plain(expr))
        elif subtype == _AT_ADD_IDENTITY:
            column.not_null, column.default, column.identity = True, None, True
        elif subtype in (_AT_DROP_IDENTITY, _AT_DROP_EXPRESSION):
            column.default, column.identity = None, False

    # -- RENAME / SET SCHEMA ---------------------------------------------------------------

    def _rename(self, node: Any) -> None:
        kind = node.renameType
        new_name = truncate_identifier(str(node.newname))
        missing_ok = bool(node.missing_ok)
        if kind in (*_RELATION_KINDS, _INDEX):
            self._rename_relation(node.relation, kind, new_name, missing_ok)
        elif kind in (_COLUMN, _TABCONSTRAINT):
            schema, name = self._range_var(node.relation)
            table = self.catalog.table(schema, name)
            if table is None:
                if missing_ok or self.catalog.relation_name_taken(schema, name):
                    return  # unknown under IF EXISTS, or a view's column
                table = self._table_or_phantom(schema, name)
            old_name = truncate_identifier(str(node.subname))
            if kind == _COLUMN:
                column = self.catalog.column(table, old_name)
                if column is None:  # created outside the folder: only its new name is known
                    column = _Column(table, new_name, None, not_null=UNKNOWN, default=UNKNOWN)
                    self.catalog.columns.append(column)
                self.catalog.touch_column(column)
                column.name, column.creator = new_name, self.tag
            else:
                constraint = self.catalog.constraint(table, old_name)
                if constraint is None:
                    constraint = _Constraint(table, new_name, None, "c", opaque=True)
                    self.catalog.constraints.append(constraint)
                self.catalog.touch(constraint)
                constraint.name, constraint.creator = new_name, self.tag
                if constraint.type in _INDEX_BACKED:
                    index = self.catalog.index(table.schema, old_name)
                    if index is not None:  # an index adopted with ADD CONSTRAINT USING INDEX
                        self.catalog.touch(index)
                        index.name, index.creator = new_name, self.tag
        elif kind == _TYPE:
            enum = self.catalog.enum(*self._any_name(node.object))
            if enum is not None:  # other kinds of type are not modelled
                self.catalog.rename_enum(enum, self.tag, name=new_name)
        elif kind == _SCHEMA:
            old = truncate_identifier(str(node.subname))
            if old in self.catalog.schemas or not missing_ok:
                self.catalog.rename_schema(old, new_name, self.tag)

    def _rename_relation(self, rv: Any, kind: Any, new_name: str, missing_ok: bool) -> None:
        # ALTER TABLE/VIEW/INDEX ... RENAME all share one namespace; PostgreSQL accepts
        # ALTER TABLE on a view or an index, so look the name up whatever its kind.
        schema, name = self._range_var(rv)
        if (table := self.catalog.table(schema, name)) is not None:
            self.catalog.rename_table(table, new_name, self.tag)
        elif (view := self.catalog.view(schema, name)) is not None:
            self.catalog.touch(view)
            view.name, view.creator = new_name, self.tag
        elif (index := self.catalog.index(schema, name)) is not None:
            self.catalog.touch(index)
            index.name, index.creator = new_name, self.tag
            self._rename_backed_constraints(schema, name, new_name)
        elif self._rename_backed_constraints(schema, name, new_name):
            pass
        elif not missing_ok:  # it existed outside the folder; its new name is still evidence
            if kind == _INDEX:
                index = _Index(schema, new_name, self.tag, None, unique=UNKNOWN)
                index.known_columns = False
                self.catalog.indexes.append(index)
            elif kind == _TABLE:
                self.catalog.tables.append(_Table(schema, new_name, self.tag))
            else:
                self.catalog.views.append(_View(schema, new_name, self.tag))

    def _rename_backed_constraints(self, schema: str, old: str, new: str) -> bool:
        """Renaming an index renames the constraint it backs (and vice versa), as in PG."""
        renamed = False
        for constraint in self.catalog.constraints:
            if (constraint.table.schema, constraint.name) == (schema, old) and (
                constraint.type in _INDEX_BACKED
            ):
                self.catalog.touch(constraint)
                constraint.name, constraint.creator, renamed = new, self.tag, True
        return renamed

    def _set_schema(self, node: Any) -> None:
        new_schema = truncate_identifier(str(node.newschema))
        if node.objectType in _RELATION_KINDS:
            schema, name = self._range_var(node.relation)
            if (table := self.catalog.table(schema, name)) is not None:
                self.catalog.move_table(table, new_schema, self.tag)
            elif (view := self.catalog.view(schema, name)) is not None:
                self.catalog.touch(view)
                view.schema, view.creator = new_schema, self.tag
                for index in self.catalog.indexes:
                    if index.on is view:
                        self.catalog.touch(index)
                        index.schema, index.creator = new_schema, self.tag
            elif not node.missing_ok and node.objectType == _TABLE:
                self.catalog.tables.append(_Table(new_schema, name, self.tag))
        elif node.objectType == _TYPE:
            enum = self.catalog.enum(*self._any_name(node.object))
            if enum is not None:
                self.catalog.rename_enum(enum, self.tag, schema=new_schema)

    # -- DROP ------------------------------------------------------------------------------

    def _drop(self, node: Any) -> None:
        cascade = node.behavior == _CASCADE
        kind = node.removeType
        for target in node.objects or ():
            if kind == _SCHEMA:
                self.catalog.drop_schema(truncate_identifier(str(target.sval)), cascade)
            elif kind == _TYPE:
                enum = self._enum_of_type(target)
                if enum is not None:
                    self.catalog.drop_enum(enum, cascade)
            elif kind == _TABLE:
                table = self.catalog.table(*self._any_name(target))
                if table is not None:
                    self.catalog.drop_table(table, cascade)
            elif kind in (_VIEW, _MATVIEW):
                view = self.catalog.view(*self._any_name(target))
                if view is not None:
                    self.catalog.drop_view(view, cascade)
            elif kind == _INDEX:
                index = self.catalog.index(*self._any_name(target))
                if index is not None:
                    self.catalog.indexes.remove(index)
            elif kind in _ROUTINE_KINDS:
                function = self._function(*self._any_name(target.objname))
                if function is not None:
                    self.catalog.functions.remove(function)
            elif kind == _TRIGGER:
                *table_names, trigger_name = _strings(target)
                schema = table_names[-2] if len(table_names) > 1 else self.default_schema
                trigger = self._trigger(schema, table_names[-1], trigger_name)
                if trigger is not None:
                    self.catalog.triggers.remove(trigger)

    # -- functions and triggers ------------------------------------------------------------

    def _function(self, schema: str, name: str) -> _Function | None:
        return next(
            (f for f in self.catalog.functions if (f.schema, f.name) == (schema, name)), None
        )

    def _trigger(self, schema: str, table_name: str, name: str) -> _Trigger | None:
        table = self.catalog.table(schema, table_name)
        return next((t for t in self.catalog.triggers if t.table is table and t.name == name), None)

    def _create_function(self, node: Any) -> None:
        schema, name = self._any_name(node.funcname)
        if self._function(schema, name) is None:  # OR REPLACE, or another overload
            self.catalog.functions.append(_Function(schema, name, self.tag))

    def _create_trigger(self, node: Any) -> None:
        schema, table_name = self._range_var(node.relation)
        name = truncate_identifier(str(node.trigname))
        if self._trigger(schema, table_name, name) is None:
            table = self._table_or_phantom(schema, table_name)
            self.catalog.triggers.append(_Trigger(table, name, self.tag))

    # -- DO blocks -------------------------------------------------------------------------

    def _do(self, node: Any) -> None:
        """Replay the SQL inside a PL/pgSQL DO block (drizzle-kit's old FK wrapper)."""
        options = {arg.defname: arg.arg.sval for arg in node.args or ()}
        if options.get("language", "plpgsql").lower() != "plpgsql" or "as" not in options:
            return
        for query in _do_block_queries(str(options["as"])):
            for statement in parse_sql(query):
                self.statement(statement)
