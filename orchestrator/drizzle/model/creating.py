"""Replaying CREATE statements (schemas, tables, columns, constraints, indexes) on the catalog."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pglast import ast

from orchestrator.drizzle.facts import (
    NEXTVAL,
    SERIAL_TYPES,
    UNKNOWN,
    normalize_default_json,
)
from orchestrator.drizzle.model.catalog import _Catalog
from orchestrator.drizzle.model.entities import (
    ConstraintType,
    _Column,
    _Constraint,
    _Enum,
    _Index,
    _Table,
    _View,
    _Written,
)
from orchestrator.drizzle.model.names import DEFAULT_SCHEMA, truncate_identifier
from orchestrator.drizzle.model.sqltree import (
    _CONSTR_DEFAULT,
    _CONSTR_GENERATED,
    _CONSTR_IDENTITY,
    _CONSTR_NULL,
    _CONSTRAINT_TYPES,
    _MAKES_NOT_NULL,
    _RENAMING,
    _action,
    _column_refs,
    _ColumnSpec,
    _is,
    _plain_fields,
    _printed_type,
    _raw_nodes,
    _raw_strings,
    _strings,
    _type_name_fields,
)
from orchestrator.drizzle.pgjson import Node, raw_fields, wrap


class _CreatingReplay:
    """The CREATE half of the replay (see :class:`~orchestrator.drizzle.model.replay._Replay`)."""

    def __init__(self, catalog: _Catalog) -> None:
        self.catalog = catalog
        self.tag = ""
        self.default_schema = DEFAULT_SCHEMA  # CREATE SCHEMA ... <elements> changes it
        # Keyed by node type name: statements come from pgjson, not pglast's classes.
        self._handlers: dict[str, Callable[[Any], None]] = {}

    def statement(self, node: Node) -> None:
        """Apply one statement; statements that create no evidence are ignored."""
        handler = self._handlers.get(node.tag)
        if handler is not None:
            try:
                handler(node)
            finally:
                if node.tag in _RENAMING:  # names changed in place: rebuild the indexes
                    self.catalog.names_changed()

    # -- names -----------------------------------------------------------------------------

    def _qualify(self, schema: str | None, name: str) -> tuple[str, str]:
        return (
            truncate_identifier(schema) if schema else self.default_schema,
            truncate_identifier(name),
        )

    def _range_var(self, rv: Any) -> tuple[str, str]:
        return self._qualify(rv.schemaname, str(rv.relname))

    def _any_name(self, items: Any) -> tuple[str, str]:
        names = _strings(items)
        return (names[-2] if len(names) > 1 else self.default_schema, names[-1])

    def _enum_of_type(self, type_name: Any) -> _Enum | None:
        if type_name is None or not type_name.names:
            return None
        return self._enum_named_by([str(item.sval) for item in type_name.names])

    def _enum_named_by(self, names: Sequence[str] | None) -> _Enum | None:
        """The modelled enum a type name (its dotted parts, untruncated) denotes, if any."""
        if not names:
            return None
        # Most types are built-in (int4, text, ...): skip qualifying the name unless some
        # enum is called that.
        if not self.catalog.enum_named(truncate_identifier(names[-1])):
            return None
        qualified = [truncate_identifier(name) for name in names]
        schema = qualified[-2] if len(qualified) > 1 else self.default_schema
        return self.catalog.enum(schema, qualified[-1])

    def _table_or_phantom(self, schema: str, name: str) -> _Table:
        """The modelled table, or a placeholder for one created outside the folder."""
        table = self.catalog.table(schema, name)
        if table is None:
            table = _Table(schema, name, None, phantom=True)
            self.catalog.tables.append(table)
        return table

    # -- CREATE ----------------------------------------------------------------------------

    def _create_schema(self, node: Any) -> None:
        name = node.schemaname or (node.authrole.rolename if node.authrole else None)
        if not name:
            return
        name = truncate_identifier(str(name))
        if name in self.catalog.schemas and node.if_not_exists:
            return
        self.catalog.schemas[name] = self.tag
        outer, self.default_schema = self.default_schema, name
        try:
            for element in node.schemaElts or ():
                self.statement(element)
        finally:
            self.default_schema = outer

    def _new_relation_allowed(self, schema: str, name: str, if_not_exists: bool) -> bool:
        """False when IF NOT EXISTS makes the statement a no-op; clears a stale model entry."""
        if not self.catalog.relation_name_taken(schema, name):
            return True
        if if_not_exists:
            return False
        # The statement succeeded, so the model's same-named relation was not really there.
        if (table := self.catalog.table(schema, name)) is not None:
            self.catalog.drop_table(table, cascade=False)
        if (view := self.catalog.view(schema, name)) is not None:
            self.catalog.drop_view(view, cascade=False)
        if (index := self.catalog.index(schema, name)) is not None:
            self.catalog.indexes.remove(index)
        return True

    def _create_table(self, node: Any) -> None:
        if not self._create_table_raw(raw_fields(node)):
            self._create_table_nodes(node)

    def _create_table_raw(self, fields: dict[str, Any]) -> bool:
        """CREATE TABLE of columns and constraints only (drizzle's), read from the raw JSON.

        The hottest statement of a folder; reading the JSON directly skips building a Node per
        tree node. Returns False, having changed nothing, for anything else (INHERITS,
        PARTITION OF, LIKE, a tree already read through Nodes): the general path handles it.
        """
        rv, elements = fields.get("relation"), fields.get("tableElts", [])
        if "inhRelations" in fields or type(rv) is not dict or type(elements) is not list:
            return False
        # (column name or None for a table constraint, its type, its catalogued constraints)
        plan: list[tuple[str | None, _ColumnSpec | None, list[dict[str, Any]]]] = []
        for element in elements:
            if type(element) is not dict:
                return False
            if (coldef := element.get("ColumnDef")) is not None:
                type_name = coldef.get("typeName")
                constraints = _raw_nodes(coldef.get("constraints"), "Constraint")
                if type(type_name) is not dict or constraints is None:
                    return False
                spec = self._column_spec(type_name, constraints)
                if spec is None:
                    return False
                # Most column constraints are NOT NULL / DEFAULT: part of the column's spec.
                catalogued = [c for c in constraints if c.get("contype") in _CONSTRAINT_TYPES]
                plan.append((str(coldef.get("colname")), spec, catalogued))
            elif type(constraint := element.get("Constraint")) is dict:
                plan.append((None, None, [constraint]))
            else:
                return False  # LIKE, or an already converted element
        if rv.get("relpersistence") == "t":  # temporary tables leave nothing behind
            return True
        schema, name = self._qualify(rv.get("schemaname"), str(rv.get("relname")))
        if not self._new_relation_allowed(schema, name, bool(fields.get("if_not_exists"))):
            return True
        table = _Table(schema, name, self.tag)
        self.catalog.tables.append(table)
        # As the general path: every column first, then constraints in element order.
        for column_name, spec, _ in plan:
            if column_name is not None and spec is not None:
                column_name = truncate_identifier(column_name)
                self._add_named_column(table, column_name, spec, if_not_exists=True)
        for column_name, _, constraints in plan:
            column_name = None if column_name is None else truncate_identifier(column_name)
            for constraint in constraints:
                self._add_raw_constraint(table, constraint, column_name)
        return True

    def _create_table_nodes(self, node: Any) -> None:
        rv = node.relation
        if rv.relpersistence == "t":  # temporary tables leave nothing behind
            return
        schema, name = self._range_var(rv)
        if not self._new_relation_allowed(schema, name, bool(node.if_not_exists)):
            return
        table = _Table(schema, name, self.tag)
        self.catalog.tables.append(table)
        # INHERITS / PARTITION OF / LIKE: the parent's columns exist in the new table too.
        for parent_rv in node.inhRelations or ():
            self._copy_columns(self.catalog.table(*self._range_var(parent_rv)), table)
        elements = node.tableElts or ()
        for element in elements:
            if _is(element, ast.ColumnDef):
                self._add_column(table, element, if_not_exists=True)
            elif _is(element, ast.TableLikeClause):
                self._copy_columns(self.catalog.table(*self._range_var(element.relation)), table)
        for element in elements:
            if _is(element, ast.ColumnDef):
                if constraints := element.constraints:
                    column_name = truncate_identifier(str(element.colname))
                    for constraint in constraints:
                        self._add_constraint(table, constraint, column_name)
            elif _is(element, ast.Constraint):
                self._add_constraint(table, element, None)

    def _copy_columns(self, source: _Table | None, target: _Table) -> None:
        for column in self.catalog.columns_of(source) if source else ():
            if self.catalog.column(target, column.name) is None:
                copy = _Column(target, column.name, self.tag, column.enum, column.type)
                copy.array, copy.not_null, copy.default = column.array, UNKNOWN, UNKNOWN
                copy.written = column.written
                self.catalog.columns.append(copy)

    def _column_spec(
        self, type_name: dict[str, Any] | None, constraints: Sequence[dict[str, Any]]
    ) -> _ColumnSpec | None:
        """A column's type, nullability and default from its raw definition (None: not raw)."""
        if type_name is None:
            return _ColumnSpec(None, UNKNOWN, False, False, None)
        names = _raw_strings(type_name.get("names"))
        if names is None:
            return None
        typmods: list[object] = []
        for modifier in type_name.get("typmods") or ():
            value = modifier.get("A_Const", {}).get("ival") if type(modifier) is dict else None
            typmods.append(value.get("ival", 0) if type(value) is dict else modifier)
        array = bool(type_name.get("arrayBounds"))
        enum = self._enum_named_by(names)
        written = _Written(tuple(names), tuple(typmods))
        type_text = (
            UNKNOWN
            if enum is not None or not names
            else _printed_type(written.names, written.typmods, array)
        )
        serial = len(names) == 1 and names[0] in SERIAL_TYPES
        not_null: Any = serial
        default: Any = NEXTVAL if serial else None
        identity = False
        for constraint in constraints:
            kind = constraint.get("contype")
            if kind in _MAKES_NOT_NULL:
                not_null = True
            elif kind == _CONSTR_NULL:
                not_null = False
            elif kind == _CONSTR_DEFAULT:
                default = normalize_default_json(constraint.get("raw_expr"))
            elif kind == _CONSTR_IDENTITY:
                not_null, default, identity = True, None, True
            elif kind == _CONSTR_GENERATED:
                default = UNKNOWN
        return _ColumnSpec(enum, type_text, array, not_null, default, written, identity)

    def _add_column(self, table: _Table, coldef: Any, *, if_not_exists: bool) -> _Column | None:
        fields = _plain_fields(coldef)
        type_name = _type_name_fields(fields)
        constraints = [c.get("Constraint", c) for c in fields.get("constraints") or ()]
        spec = self._column_spec(type_name if type(type_name) is dict else None, constraints)
        name = truncate_identifier(str(coldef.colname))
        return self._add_named_column(table, name, spec, if_not_exists=if_not_exists)

    def _add_named_column(
        self, table: _Table, name: str, spec: _ColumnSpec | None, *, if_not_exists: bool
    ) -> _Column | None:
        existing = self.catalog.column(table, name)
        if existing is not None:
            if if_not_exists:
                return None
            self.catalog.drop_column(existing, cascade=False)
        if spec is None:
            spec = _ColumnSpec(None, UNKNOWN, False, UNKNOWN, UNKNOWN)
        column = _Column(
            table, name, self.tag, spec.enum, spec.type, spec.array, spec.not_null, spec.default
        )
        column.written, column.identity = spec.written, spec.identity
        self.catalog.columns.append(column)
        return column

    def _resolve_columns(self, table: _Table | None, names: set[str]) -> frozenset[_Column]:
        if table is None or not names:
            return frozenset()
        found = [self.catalog.column(table, name) for name in names]
        return frozenset([c for c in found if c is not None])

    def _add_constraint(self, table: _Table, node: Any, column: str | None) -> None:
        """A catalogued constraint (PK, UNIQUE, EXCLUDE, FK, CHECK) with a knowable name."""
        ctype = _CONSTRAINT_TYPES.get(node.contype)
        if ctype is None:
            return  # NOT NULL, DEFAULT, ...: not in pg_constraint on every server version
        name = self._constraint_name(table, ctype, node.conname, node.indexname)
        if name is None:
            return
        own = {column} if column else set()
        ref: tuple[str, str] | None = None
        ref_names: set[str] = set()
        if ctype in ("p", "u"):
            names = set(_strings(node.keys)) | set(_strings(node.including)) or own
        elif ctype == "x":
            names = set().union(*(_column_refs(pair[0]) for pair in node.exclusions or ()))
            names |= _column_refs(node.where_clause)
        elif ctype == "f":
            names = set(_strings(node.fk_attrs)) or own
            ref = self._range_var(node.pktable)
            ref_names = set(_strings(node.pk_attrs))
        else:
            names = _column_refs(node.raw_expr)
        actions = (_action(node.fk_del_action), _action(node.fk_upd_action))
        self._store_constraint(table, ctype, name, node.indexname, names, ref, ref_names, actions)

    def _add_raw_constraint(
        self, table: _Table, fields: dict[str, Any], column: str | None
    ) -> None:
        """:meth:`_add_constraint` over the raw JSON, for keys and foreign keys (most of them).

        CHECK and EXCLUDE constraints hold expressions: they go through a Node.
        """
        ctype = _CONSTRAINT_TYPES.get(fields.get("contype", ""))
        if ctype is None:
            return  # NOT NULL, DEFAULT, ...: as _add_constraint
        ref: tuple[str, str] | None = None
        ref_names: list[str] | None = []
        pktable = fields.get("pktable")
        if ctype in ("p", "u"):
            keys = _raw_strings(fields.get("keys"))
            including = _raw_strings(fields.get("including"))
            names = None if keys is None or including is None else keys + including
        elif ctype == "f" and type(pktable) is dict:
            names = _raw_strings(fields.get("fk_attrs"))
            ref_names = _raw_strings(fields.get("pk_attrs"))
            ref = self._qualify(pktable.get("schemaname"), str(pktable.get("relname")))
        else:
            names = None
        if names is None or ref_names is None:
            self._add_constraint(table, wrap("Constraint", fields), column)
            return
        name = self._constraint_name(table, ctype, fields.get("conname"), fields.get("indexname"))
        if name is None:
            return
        own = {column} if column else set()
        self._store_constraint(
            table,
            ctype,
            name,
            fields.get("indexname"),
            {truncate_identifier(n) for n in names} or own,
            ref,
            {truncate_identifier(n) for n in ref_names},
            (_action(fields.get("fk_del_action")), _action(fields.get("fk_upd_action"))),
        )

    def _constraint_name(
        self, table: _Table, ctype: ConstraintType, conname: Any, indexname: Any
    ) -> str | None:
        """The constraint's name; None when PostgreSQL would generate one we do not guess."""
        if conname:
            return truncate_identifier(str(conname))
        if indexname:
            return truncate_identifier(str(indexname))
        if ctype == "p":
            return self.catalog.pkey_name(table)
        return None  # implicitly named UNIQUE/FK/CHECK: the generated name is not worth guessing

    def _store_constraint(
        self,
        table: _Table,
        ctype: ConstraintType,
        name: str,
        indexname: Any,
        names: set[str],
        ref: tuple[str, str] | None,
        ref_names: set[str],
        actions: tuple[str, str] = ("a", "a"),
    ) -> None:
        """Catalogue a named constraint on ``names`` (FKs: referencing ``ref``'s ``ref_names``)."""
        backing_index = None
        if indexname:  # ADD CONSTRAINT ... USING INDEX: the index becomes the constraint's
            backing_index = self.catalog.index(table.schema, truncate_identifier(indexname))
        ref_table = None if ref is None else self._table_or_phantom(*ref)
        columns = self._resolve_columns(table, names)
        known = len(columns) == len(names) and ctype in ("p", "u", "f")
        if backing_index is not None:
            columns, known = backing_index.columns, backing_index.known_columns
            if backing_index.name != name:  # PostgreSQL renames the index to the constraint
                self.catalog.touch(backing_index)
                backing_index.name, backing_index.creator = name, self.tag
                self.catalog.names_changed()
        ref_columns = self._resolve_columns(ref_table, ref_names)
        ref_known = bool(ref_columns) and len(ref_columns) == len(ref_names)
        if ref_table is not None and not ref_names:  # REFERENCES t: t's primary key
            pkey = next(
                (k for k in self.catalog.constraints_of(ref_table) if k.type == "p"),
                None,
            )
            ref_columns = pkey.columns if pkey else frozenset()
            ref_known = bool(ref_columns)
        if ctype == "p":  # a primary key makes its columns NOT NULL
            for column in columns:
                if column.not_null is not True:
                    self.catalog.touch(column)
                    column.not_null = True
        if (existing := self.catalog.constraint(table, name)) is not None:
            self.catalog.constraints.remove(existing)
        self.catalog.constraints.append(
            _Constraint(
                table,
                name,
                self.tag,
                ctype,
                columns,
                ref_table,
                ref_columns,
                *actions,
                known_columns=known,
                ref_known=ref_known,
            )
        )

    def _create_index(self, node: Any) -> None:
        if not self._create_index_raw(raw_fields(node)):
            self._create_index_nodes(node)

    def _create_index_raw(self, fields: dict[str, Any]) -> bool:
        """CREATE INDEX on plain columns (no expressions, no WHERE), read from the raw JSON.

        Returns False, having changed nothing, for anything else: the general path handles it.
        """
        if not fields.get("idxname"):
            return True  # the generated name is not worth guessing
        rv = fields.get("relation")
        params = _raw_nodes(fields.get("indexParams"), "IndexElem")
        including = _raw_nodes(fields.get("indexIncludingParams"), "IndexElem")
        if type(rv) is not dict or params is None or including is None or "whereClause" in fields:
            return False
        names: set[str] = set()
        for element in (*params, *including):
            if "expr" in element:
                return False
            if element.get("name"):
                names.add(truncate_identifier(element["name"]))
        schema, table_name = self._qualify(rv.get("schemaname"), str(rv.get("relname")))
        name = truncate_identifier(str(fields["idxname"]))
        if not self._new_relation_allowed(schema, name, bool(fields.get("if_not_exists"))):
            return True
        self._store_index(schema, table_name, name, names, bool(fields.get("unique")), True)
        return True

    def _store_index(
        self,
        schema: str,
        table_name: str,
        name: str,
        names: set[str],
        unique: bool,
        plain: bool,
    ) -> None:
        """Catalogue index ``name`` of relation ``table_name`` on columns ``names``.

        ``plain``: every key is a bare column (no expression, no predicate), so the column
        list is a fact worth comparing.
        """
        on: _Table | _View | None = self.catalog.view(schema, table_name)
        columns: frozenset[_Column] = frozenset()
        known = False
        if on is None:
            table = self._table_or_phantom(schema, table_name)
            on, columns = table, self._resolve_columns(table, names)
            known = plain and len(columns) == len(names)
        self.catalog.indexes.append(
            _Index(schema, name, self.tag, on, columns, unique, known_columns=known)
        )

    def _create_index_nodes(self, node: Any) -> None:
        if not node.idxname:
            return  # the generated name is not worth guessing
        schema, table_name = self._range_var(node.relation)
        name = truncate_identifier(str(node.idxname))
        if not self._new_relation_allowed(schema, name, bool(node.if_not_exists)):
            return
        names: set[str] = set()
        plain = node.whereClause is None
        for element in (*(node.indexParams or ()), *(node.indexIncludingParams or ())):
            names |= {truncate_identifier(element.name)} if element.name else set()
            names |= _column_refs(element.expr)
            plain = plain and element.expr is None
        names |= _column_refs(node.whereClause)
        self._store_index(schema, table_name, name, names, bool(node.unique), plain)
