"""The database objects each Drizzle migration leaves behind, derived from its SQL with pglast.

``orchestrator validate`` needs, for every migration, a set of objects whose presence in the
database proves the migration ran. Nothing here is a hand-written list: the folder's SQL is
parsed with pglast and replayed, in journal order, against a small in-memory model of the
PostgreSQL catalog (schemas, tables, columns, constraints, indexes, views, enums). The model
follows PostgreSQL's own rules closely enough that later drops and renames are accounted for:

* a CREATE adds objects owned by the creating migration;
* a DROP removes the object and what depends on it (the table's columns, constraints and
  indexes; an enum's values; a schema's contents; cross-object dependents only with CASCADE,
  as PostgreSQL does);
* a RENAME / SET SCHEMA moves the objects whose identity changed to the renaming migration,
  because only their presence under the new name proves the rename ran. Objects whose
  identity does not change (an index of a renamed table keeps its name and schema) keep their
  creator.

The result is pure data: ``expected[tag]`` is what is still alive at the end of the folder and
was last created or renamed by ``tag``. Bad SQL never raises; it is reported in ``unparsed``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, TypeVar

import pglast
from pglast import ast
from pglast.enums import AlterTableType, ConstrType, DropBehavior, ObjectType

from orchestrator.allocation import cyclic_gc_paused
from orchestrator.drizzle.facts import (
    NEXTVAL,
    SERIAL_TYPES,
    UNKNOWN,
    Fact,
    format_type,
    normalize_default_json,
)
from orchestrator.drizzle.journal import Journal
from orchestrator.drizzle.pgjson import Node, parse_sql, raw_fields, walk, wrap

__all__ = [
    "NAMEDATALEN",
    "DbObject",
    "Effect",
    "ObjectKind",
    "ObjectModel",
    "build_object_model",
    "truncate_identifier",
]

ObjectKind = Literal[
    "schema",
    "table",
    "view",
    "column",
    "index",
    "constraint",
    "enum",
    "enum_value",
    "function",
    "trigger",
]

NAMEDATALEN = 64  # PostgreSQL's compile-time default; identifiers keep NAMEDATALEN-1 bytes
DEFAULT_SCHEMA = "public"
_T = TypeVar("_T")


class DbObject(NamedTuple):
    """One database object as PostgreSQL names it.

    ``schema`` is the namespace (the schema's own name for kind ``schema``); ``parent`` is the
    owning table for columns and constraints, the enum type for enum values, else ``None``.
    A named tuple rather than a dataclass: tens of thousands are hashed, compared and sorted
    per validation, and tuples do that in C.
    """

    kind: ObjectKind
    schema: str
    name: str
    parent: str | None = None

    def __str__(self) -> str:
        if self.kind == "schema":
            return f"schema {self.name}"
        if self.parent is None:
            return f"{self.kind} {self.schema}.{self.name}"
        return f"{self.kind} {self.schema}.{self.parent}.{self.name}"


#: What one migration did to one object: its fact just before and just after (None: absent).
Effect = Mapping[DbObject, tuple[Fact | None, Fact | None]]


@dataclass(frozen=True)
class ObjectModel:
    """The replayed history of a folder.

    ``effects[tag]`` is what migration ``tag`` changed, relative to the state just before it
    (the state after every earlier migration of the journal): each object it created, dropped
    or altered, with its fact before and after. Folding the effects of the first k migrations
    gives the modelled schema after them. ``expected[tag]`` is what is still alive at the end
    of the folder and was last created or renamed by ``tag`` (the "creating migration" shown
    by ``inspect``). ``unparsed`` names migrations the model could not read in full.
    """

    expected: Mapping[str, frozenset[DbObject]]
    unparsed: Mapping[str, str]
    effects: Mapping[str, Effect] = field(default_factory=lambda: MappingProxyType({}))
    order: tuple[str, ...] = ()  # the tags, in the order they were replayed
    final: Mapping[DbObject, Fact] = field(default_factory=lambda: MappingProxyType({}))
    touched: frozenset[DbObject] = frozenset()  # every object some effect names

    def state_after(self, tags: Sequence[str]) -> dict[DbObject, Fact]:
        """The modelled schema after the migrations ``tags`` (journal order), as facts."""
        state: dict[DbObject, Fact] = {}
        for tag in tags:
            for key, (_, after) in self.effects.get(tag, {}).items():
                if after is None:
                    state.pop(key, None)
                else:
                    state[key] = after
        return state

    def state_after_prefix(self, count: int) -> dict[DbObject, Fact]:
        """The modelled schema after the first ``count`` migrations replayed.

        The end state with the last migrations' effects undone: a release is usually a few
        migrations at the end of a long history, so this touches only those.
        """
        state = dict(self.final)
        for tag in reversed(self.order[count:]):
            for key, (before, _) in self.effects[tag].items():
                if before is None:
                    state.pop(key, None)
                else:
                    state[key] = before
        return state


def truncate_identifier(name: str) -> str:
    """Cut ``name`` to NAMEDATALEN-1 bytes of UTF-8 without splitting a character, like PG."""
    if len(name) < NAMEDATALEN and name.isascii():  # fast path: one byte per character
        return name
    return _clip_bytes(name, NAMEDATALEN - 1)


def _clip_bytes(text: str, limit: int) -> str:
    if len(text) * 4 <= limit:  # fast path: a character is at most 4 bytes of UTF-8
        return text
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    # errors="ignore" drops a trailing partial character, as pg_mbcliplen does.
    return encoded[:limit].decode("utf-8", errors="ignore")


def _make_object_name(name1: str, label: str) -> str:
    """PostgreSQL's makeObjectName(name1, NULL, label): shorten name1 so the result fits."""
    available = NAMEDATALEN - 1 - (len(label.encode("utf-8")) + 1)
    return f"{_clip_bytes(name1, available)}_{label}"


# --------------------------------------------------------------------------------------------
# The catalog model. Entities compare by identity (eq=False), like rows with OIDs: a rename
# changes an attribute, not the entity, so dependencies survive renames.
# --------------------------------------------------------------------------------------------


# Every entity also carries ``alive`` (False once removed) and ``phantom`` (it stands for an
# object created outside the folder: it has no fact of its own, since the model cannot say
# when it appeared).


@dataclass(eq=False)
class _Table:
    schema: str
    name: str
    creator: str | None
    alive: bool = True
    phantom: bool = False


@dataclass(eq=False)
class _Enum:
    schema: str
    name: str
    creator: str | None
    alive: bool = True
    phantom: bool = False


@dataclass(eq=False)
class _EnumValue:
    enum: _Enum
    label: str
    creator: str | None
    alive: bool = True
    phantom: bool = False


@dataclass(eq=False)
class _Column:
    table: _Table
    name: str
    creator: str | None
    enum: _Enum | None = None  # set when the column's type is a modelled enum
    type: Any = UNKNOWN  # format_type() text when not an enum
    array: bool = False
    not_null: Any = False
    default: Any = None  # canonical text (facts.normalize_default_json); None: no default
    alive: bool = True
    phantom: bool = False


@dataclass(eq=False)
class _View:
    schema: str
    name: str
    creator: str | None
    reads: tuple[_Table | _View, ...] = ()
    column_names: frozenset[str] = frozenset()  # every name a ColumnRef mentions
    star: bool = False  # SELECT * (all columns at creation time)
    alive: bool = True
    phantom: bool = False


@dataclass(eq=False)
class _Index:
    schema: str
    name: str
    creator: str | None
    on: _Table | _View | None
    columns: frozenset[_Column] = frozenset()
    unique: Any = False
    known_columns: bool = True  # False when expressions are indexed
    alive: bool = True
    phantom: bool = False


@dataclass(eq=False)
class _Function:
    """A function or procedure, by name: overloads are one object to the model."""

    schema: str
    name: str
    creator: str | None
    alive: bool = True
    phantom: bool = False


@dataclass(eq=False)
class _Trigger:
    table: _Table
    name: str
    creator: str | None
    alive: bool = True
    phantom: bool = False


ConstraintType = Literal["p", "u", "x", "f", "c"]
_INDEX_BACKED: frozenset[str] = frozenset({"p", "u", "x"})


@dataclass(eq=False)
class _Constraint:
    table: _Table
    name: str
    creator: str | None
    type: ConstraintType
    columns: frozenset[_Column] = frozenset()
    ref_table: _Table | None = None
    ref_columns: frozenset[_Column] = frozenset()
    on_delete: str = "a"  # pg_constraint.confdeltype
    on_update: str = "a"
    known_columns: bool = True  # every named column resolved
    ref_known: bool = True  # every referenced column resolved
    opaque: bool = False  # renamed from outside the folder: nothing known but its name
    alive: bool = True
    phantom: bool = False


class _Rows(list[_T]):
    """A list of catalog entities that tells its catalog when it changes.

    Appends update the catalog's lookup indexes in place; any other change drops them, to be
    rebuilt on the next lookup. Replaying a folder is mostly appends, so lookups stay O(1)
    and a 5,000-table folder replays in linear time.
    """

    def __init__(self, items: Iterable[_T], catalog: _Catalog) -> None:
        super().__init__(items)
        self._catalog = catalog

    def append(self, item: _T) -> None:
        super().append(item)
        catalog = self._catalog
        catalog.before.setdefault(item, None)  # new in this migration: absent before
        lookup = catalog._lookup
        if lookup is not None:  # keep the indexes current (this runs for every entity)
            _ADDERS[type(item)](lookup, item)

    def remove(self, item: _T) -> None:
        self._catalog.touch(item)
        super().remove(item)
        item.alive = False  # type: ignore[attr-defined]
        self._catalog.names_changed()


@dataclass
class _Lookup:
    """Indexes over the catalog's lists; the first entity in list order wins, like a scan."""

    tables: dict[tuple[str, str], _Table] = field(default_factory=dict)
    views: dict[tuple[str, str], _View] = field(default_factory=dict)
    indexes: dict[tuple[str, str], _Index] = field(default_factory=dict)
    enums: dict[tuple[str, str], _Enum] = field(default_factory=dict)
    enum_names: set[str] = field(default_factory=set)  # in any schema
    columns: dict[_Table, list[_Column]] = field(default_factory=dict)
    column_names: dict[tuple[_Table, str], _Column] = field(default_factory=dict)
    constraints: dict[_Table, list[_Constraint]] = field(default_factory=dict)
    constraint_names: dict[tuple[_Table, str], _Constraint] = field(default_factory=dict)
    enum_values: dict[_Enum, list[_EnumValue]] = field(default_factory=dict)
    relation_names: dict[str, set[str]] = field(default_factory=dict)
    schema_constraint_names: dict[str, set[str]] = field(default_factory=dict)

    def add(self, item: object) -> None:
        # One adder per entity type: a dict lookup instead of an isinstance chain, as this
        # runs for every entity a folder creates.
        _ADDERS[type(item)](self, item)

    def _add_column(self, item: _Column) -> None:
        self.columns.setdefault(item.table, []).append(item)
        self.column_names.setdefault((item.table, item.name), item)

    def _add_constraint(self, item: _Constraint) -> None:
        self.constraints.setdefault(item.table, []).append(item)
        self.constraint_names.setdefault((item.table, item.name), item)
        self.schema_constraint_names.setdefault(item.table.schema, set()).add(item.name)
        if item.type in _INDEX_BACKED:
            self.relation_names.setdefault(item.table.schema, set()).add(item.name)

    def _add_table(self, item: _Table) -> None:
        self.tables.setdefault((item.schema, item.name), item)
        self.relation_names.setdefault(item.schema, set()).add(item.name)

    def _add_view(self, item: _View) -> None:
        self.views.setdefault((item.schema, item.name), item)
        self.relation_names.setdefault(item.schema, set()).add(item.name)

    def _add_index(self, item: _Index) -> None:
        self.indexes.setdefault((item.schema, item.name), item)
        self.relation_names.setdefault(item.schema, set()).add(item.name)

    def _add_enum(self, item: _Enum) -> None:
        self.enums.setdefault((item.schema, item.name), item)
        self.enum_names.add(item.name)

    def _add_enum_value(self, item: _EnumValue) -> None:
        self.enum_values.setdefault(item.enum, []).append(item)

    def _add_unindexed(self, item: object) -> None:
        """Functions and triggers: few, and looked up by scanning."""


_ADDERS: dict[type, Callable[[_Lookup, Any], None]] = {
    _Table: _Lookup._add_table,
    _Column: _Lookup._add_column,
    _Constraint: _Lookup._add_constraint,
    _Index: _Lookup._add_index,
    _View: _Lookup._add_view,
    _Enum: _Lookup._add_enum,
    _EnumValue: _Lookup._add_enum_value,
    _Function: _Lookup._add_unindexed,
    _Trigger: _Lookup._add_unindexed,
}

_LISTS = (
    "tables",
    "columns",
    "constraints",
    "indexes",
    "views",
    "enums",
    "enum_values",
    "functions",
    "triggers",
)


@dataclass
class _Catalog:
    """Live objects of the simulated database, with PostgreSQL's drop and rename rules."""

    schemas: dict[str, str | None] = field(default_factory=lambda: {DEFAULT_SCHEMA: None})
    tables: list[_Table] = field(default_factory=list)
    columns: list[_Column] = field(default_factory=list)
    constraints: list[_Constraint] = field(default_factory=list)
    indexes: list[_Index] = field(default_factory=list)
    views: list[_View] = field(default_factory=list)
    enums: list[_Enum] = field(default_factory=list)
    enum_values: list[_EnumValue] = field(default_factory=list)
    functions: list[_Function] = field(default_factory=list)
    triggers: list[_Trigger] = field(default_factory=list)
    _lookup: _Lookup | None = field(default=None, repr=False)
    # The fact each entity had before the current migration first touched it (None: it did
    # not exist). The migration's effect is read from it at the migration's end.
    before: dict[object, tuple[DbObject, Fact] | None] = field(default_factory=dict)

    def __setattr__(self, name: str, value: Any) -> None:
        # Replacing a list (``self.columns = [c for c in ...]``) invalidates the indexes.
        if name in _LISTS:
            old = self.__dict__.get(name)
            if old:
                kept = set(value)
                for item in old:
                    if item not in kept:  # removed by the replacement
                        self.touch(item)
                        item.alive = False
            value = _Rows(value, self)
            object.__setattr__(self, "_lookup", None)
        object.__setattr__(self, name, value)

    def touch(self, entity: Any) -> None:
        """Remember ``entity``'s fact before this migration changes it (first touch wins)."""
        if entity not in self.before:
            self.before[entity] = _fact_of(entity) if entity.alive else None

    # -- lookup indexes ---------------------------------------------------------------------

    def names_changed(self) -> None:
        """Drop the lookup indexes: an entity was removed, renamed or moved."""
        self._lookup = None

    @property
    def _indexed(self) -> _Lookup:
        if self._lookup is None:
            lookup = _Lookup()
            for name in _LISTS:
                for item in getattr(self, name):
                    lookup.add(item)
            self._lookup = lookup
        return self._lookup

    # -- lookups ---------------------------------------------------------------------------

    def table(self, schema: str, name: str) -> _Table | None:
        return self._indexed.tables.get((schema, name))

    def view(self, schema: str, name: str) -> _View | None:
        return self._indexed.views.get((schema, name))

    def index(self, schema: str, name: str) -> _Index | None:
        return self._indexed.indexes.get((schema, name))

    def enum(self, schema: str, name: str) -> _Enum | None:
        return self._indexed.enums.get((schema, name))

    def enum_named(self, name: str) -> bool:
        """Whether an enum called ``name`` exists in any schema (a cheap first check)."""
        return name in self._indexed.enum_names

    def columns_of(self, table: _Table) -> list[_Column]:
        return list(self._indexed.columns.get(table, ()))

    def column(self, table: _Table, name: str) -> _Column | None:
        return self._indexed.column_names.get((table, name))

    def constraints_of(self, table: _Table) -> list[_Constraint]:
        return list(self._indexed.constraints.get(table, ()))

    def constraint(self, table: _Table, name: str) -> _Constraint | None:
        return self._indexed.constraint_names.get((table, name))

    def enum_value(self, enum: _Enum, label: str) -> _EnumValue | None:
        found = self._indexed.enum_values.get(enum, ())
        return next((v for v in found if v.label == label), None)

    def relation_names(self, schema: str) -> set[str]:
        """Names taken in the schema's relation namespace (index-backed constraints included)."""
        return set(self._indexed.relation_names.get(schema, ()))

    def relation_name_taken(self, schema: str, name: str) -> bool:
        """Whether ``name`` is taken in the schema's relation namespace (no copy made)."""
        return name in self._indexed.relation_names.get(schema, ())

    def pkey_name(self, table: _Table) -> str:
        """The name PostgreSQL gives an unnamed primary key (ChooseRelationName, "pkey")."""
        lookup = self._indexed
        relations = lookup.relation_names.get(table.schema, set())
        constraints = lookup.schema_constraint_names.get(table.schema, set())
        label, attempt = "pkey", 0
        while True:
            candidate = _make_object_name(
                table.name, label if attempt == 0 else f"{label}{attempt}"
            )
            if candidate not in relations and candidate not in constraints:
                return candidate
            attempt += 1

    # -- drops -----------------------------------------------------------------------------

    def drop_table(self, table: _Table, cascade: bool) -> None:
        self.tables.remove(table)
        if any(t.table is table for t in self.triggers):
            self.triggers = [t for t in self.triggers if t.table is not table]
        for index in [i for i in self.indexes if i.on is table]:
            self.indexes.remove(index)
        self.constraints = [k for k in self.constraints if k.table is not table]
        self.columns = [c for c in self.columns if c.table is not table]
        if cascade:  # without CASCADE, PostgreSQL refuses when these exist
            self.constraints = [k for k in self.constraints if k.ref_table is not table]
            for view in [v for v in self.views if table in v.reads]:
                self.drop_view(view, cascade=True)

    def drop_view(self, view: _View, cascade: bool) -> None:
        if view not in self.views:  # already gone through another dependency path
            return
        self.views.remove(view)
        self.indexes = [i for i in self.indexes if i.on is not view]
        if cascade:
            for reader in [v for v in self.views if view in v.reads]:
                self.drop_view(reader, cascade=True)

    def drop_column(self, column: _Column, cascade: bool) -> None:
        if column not in self.columns:
            return
        self.columns.remove(column)
        # Indexes and constraints of the same table that use the column go with it.
        self.indexes = [i for i in self.indexes if column not in i.columns]
        self.constraints = [k for k in self.constraints if column not in k.columns]
        if cascade:
            self.constraints = [k for k in self.constraints if column not in k.ref_columns]
            for view in [v for v in self.views if column.table in v.reads]:
                if view.star or column.name in view.column_names:
                    self.drop_view(view, cascade=True)

    def drop_constraint(self, constraint: _Constraint, cascade: bool) -> None:
        self.constraints.remove(constraint)
        if cascade and constraint.type in ("p", "u"):
            # Foreign keys that relied on this key's unique index.
            self.constraints = [
                k
                for k in self.constraints
                if not (k.ref_table is constraint.table and k.ref_columns == constraint.columns)
            ]

    def drop_enum(self, enum: _Enum, cascade: bool) -> None:
        self.enums.remove(enum)
        self.enum_values = [v for v in self.enum_values if v.enum is not enum]
        if cascade:
            for column in [c for c in self.columns if c.enum is enum]:
                self.drop_column(column, cascade=True)
        for column in self.columns:
            if column.enum is enum:
                self.touch(column)
                column.enum, column.type = None, UNKNOWN

    def drop_schema(self, name: str, cascade: bool) -> None:
        self.schemas.pop(name, None)
        for table in [t for t in self.tables if t.schema == name]:
            if table in self.tables:
                self.drop_table(table, cascade)
        for view in [v for v in self.views if v.schema == name]:
            self.drop_view(view, cascade)
        self.indexes = [i for i in self.indexes if i.schema != name]
        for enum in [e for e in self.enums if e.schema == name]:
            self.drop_enum(enum, cascade)
        self.functions = [f for f in self.functions if f.schema != name]

    # -- renames: whatever changes identity becomes evidence of the renaming migration ------

    def rename_table(self, table: _Table, new_name: str, tag: str) -> None:
        self.touch_table(table)
        table.name = new_name
        self.names_changed()
        self._reown_table_members(table, tag, indexes=False)

    def move_table(self, table: _Table, new_schema: str, tag: str) -> None:
        self.touch_table(table)
        table.schema = new_schema
        self.names_changed()
        self._reown_table_members(table, tag, indexes=True)

    def touch_table(self, table: _Table) -> None:
        """Touch a table and everything whose fact names it (before a rename or move)."""
        self.touch(table)
        for column in self.columns_of(table):
            self.touch(column)
        for constraint in self.constraints:
            if constraint.table is table or constraint.ref_table is table:
                self.touch(constraint)
        for index in self.indexes:
            if index.on is table:
                self.touch(index)
        for trigger in self.triggers:
            if trigger.table is table:
                self.touch(trigger)

    def touch_column(self, column: _Column) -> None:
        """Touch a column and the keys and indexes that list it (before a rename)."""
        self.touch(column)
        for constraint in self.constraints:
            if column in constraint.columns or column in constraint.ref_columns:
                self.touch(constraint)
        for index in self.indexes:
            if column in index.columns:
                self.touch(index)

    def _reown_table_members(self, table: _Table, tag: str, *, indexes: bool) -> None:
        table.creator = tag
        for column in self.columns_of(table):
            column.creator = tag
        for constraint in self.constraints_of(table):
            constraint.creator = tag
        if indexes:  # an index's identity holds its schema, not its table's name
            for index in self.indexes:
                if index.on is table:
                    index.schema, index.creator = table.schema, tag

    def rename_enum(
        self, enum: _Enum, tag: str, *, name: str | None = None, schema: str | None = None
    ) -> None:
        self.touch(enum)
        for value in self.enum_values:
            if value.enum is enum:
                self.touch(value)
        for column in self.columns:
            if column.enum is enum:  # its type prints the enum's name
                self.touch(column)
        enum.name = enum.name if name is None else name
        enum.schema = enum.schema if schema is None else schema
        self.names_changed()
        enum.creator = tag
        for value in self.enum_values:
            if value.enum is enum:
                value.creator = tag

    def rename_schema(self, old: str, new: str, tag: str) -> None:
        self.schemas.pop(old, None)
        self.schemas[new] = tag
        self.names_changed()
        for table in [t for t in self.tables if t.schema == old]:
            self.move_table(table, new, tag)
        for view in self.views:
            if view.schema == old:
                self.touch(view)
                view.schema, view.creator = new, tag
        for index in self.indexes:
            if index.schema == old:
                self.touch(index)
                index.schema, index.creator = new, tag
        for enum in [e for e in self.enums if e.schema == old]:
            self.rename_enum(enum, tag, schema=new)

    # -- result ----------------------------------------------------------------------------

    def evidence(self) -> dict[str, set[DbObject]]:
        """Live objects grouped by the migration that last created or renamed them."""
        found: dict[str, set[DbObject]] = {}

        def add(creator: str | None, obj: DbObject) -> None:
            if creator is not None:
                found.setdefault(creator, set()).add(obj)

        for schema, creator in self.schemas.items():
            add(creator, DbObject("schema", schema, schema))
        for t in self.tables:
            add(t.creator, DbObject("table", t.schema, t.name))
        for c in self.columns:
            add(c.creator, DbObject("column", c.table.schema, c.name, c.table.name))
        for k in self.constraints:
            add(k.creator, DbObject("constraint", k.table.schema, k.name, k.table.name))
        for i in self.indexes:
            add(i.creator, DbObject("index", i.schema, i.name))
        for v in self.views:
            add(v.creator, DbObject("view", v.schema, v.name))
        for e in self.enums:
            add(e.creator, DbObject("enum", e.schema, e.name))
        for ev in self.enum_values:
            add(ev.creator, DbObject("enum_value", ev.enum.schema, ev.label, ev.enum.name))
        return found


# --------------------------------------------------------------------------------------------
# Replaying parsed statements against the catalog.
# --------------------------------------------------------------------------------------------


class _Unanalysable(Exception):
    """A part of a migration (a DO body) that pglast could not parse."""


def _is(node: Any, kind: type[ast.Node]) -> bool:
    """Whether ``node`` is a parse-tree node of pglast's type ``kind``."""
    return isinstance(node, Node) and node.tag == kind.__name__


def _column_ref_fields(node: Any) -> Iterator[tuple[Any, ...]]:
    """The fields (String or A_Star nodes) of every ColumnRef below ``node``."""
    for sub in walk(node):
        if _is(sub, ast.ColumnRef) and sub.fields:
            yield tuple(sub.fields)


def _column_refs(node: Any) -> set[str]:
    """Column names referenced by an expression (last field of each ColumnRef)."""
    return {
        truncate_identifier(str(fields[-1].sval))
        for fields in _column_ref_fields(node)
        if _is(fields[-1], ast.String)
    }


def _raw_strings(items: Any) -> list[str] | None:
    """The untruncated strings of a raw JSON list of String nodes; None if it is not one."""
    if items is None:
        return []
    if type(items) is not list:
        return None  # already converted to Nodes by an earlier read
    try:
        # str(): an omitted sval reads as None through a Node, and str(None) there too.
        return [str(item["String"].get("sval")) for item in items]
    except (KeyError, AttributeError):
        return None


def _raw_nodes(items: Any, tag: str) -> list[dict[str, Any]] | None:
    """The fields of each node of a raw JSON list of ``tag`` nodes (absent: empty).

    None when ``items`` is anything else: a tuple of Nodes an earlier read converted (a list
    is converted as a whole, so a raw list holds raw items), or a list of other node types.
    """
    if items is None:
        return []
    if type(items) is not list:
        return None
    try:
        return [item[tag] for item in items]
    except KeyError:
        return None


def _strings(items: Any) -> list[str]:
    """The identifiers of a pglast list of String nodes, truncated like PostgreSQL."""
    return [truncate_identifier(str(item.sval)) for item in (items or ())]


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# The parse tree (pgjson) gives enum fields as member names: compare with pglast's names.
_CONSTRAINT_TYPES: dict[str, ConstraintType] = {
    ConstrType.CONSTR_PRIMARY.name: "p",
    ConstrType.CONSTR_UNIQUE.name: "u",
    ConstrType.CONSTR_EXCLUSION.name: "x",
    ConstrType.CONSTR_FOREIGN.name: "f",
    ConstrType.CONSTR_CHECK.name: "c",
}

_TABLE = ObjectType.OBJECT_TABLE.name
_VIEW = ObjectType.OBJECT_VIEW.name
_MATVIEW = ObjectType.OBJECT_MATVIEW.name
_INDEX = ObjectType.OBJECT_INDEX.name
_COLUMN = ObjectType.OBJECT_COLUMN.name
_TABCONSTRAINT = ObjectType.OBJECT_TABCONSTRAINT.name
_TYPE = ObjectType.OBJECT_TYPE.name
_SCHEMA = ObjectType.OBJECT_SCHEMA.name
_TRIGGER = ObjectType.OBJECT_TRIGGER.name
_ROUTINE_KINDS = {
    ObjectType.OBJECT_FUNCTION.name,
    ObjectType.OBJECT_PROCEDURE.name,
    ObjectType.OBJECT_ROUTINE.name,
}
_RELATION_KINDS = {_TABLE, _VIEW, _MATVIEW}
_CASCADE = DropBehavior.DROP_CASCADE.name
_AT_ADD_COLUMN = AlterTableType.AT_AddColumn.name
_AT_DROP_COLUMN = AlterTableType.AT_DropColumn.name
_AT_ADD_CONSTRAINT = AlterTableType.AT_AddConstraint.name
_AT_DROP_CONSTRAINT = AlterTableType.AT_DropConstraint.name
_AT_ALTER_COLUMN_TYPE = AlterTableType.AT_AlterColumnType.name
_AT_SET_NOT_NULL = AlterTableType.AT_SetNotNull.name
_AT_DROP_NOT_NULL = AlterTableType.AT_DropNotNull.name
_AT_COLUMN_DEFAULT = AlterTableType.AT_ColumnDefault.name
_AT_ADD_IDENTITY = AlterTableType.AT_AddIdentity.name
_AT_DROP_IDENTITY = AlterTableType.AT_DropIdentity.name
_AT_DROP_EXPRESSION = AlterTableType.AT_DropExpression.name
_COLUMN_ALTERATIONS = frozenset(
    {
        _AT_ALTER_COLUMN_TYPE,
        _AT_SET_NOT_NULL,
        _AT_DROP_NOT_NULL,
        _AT_COLUMN_DEFAULT,
        _AT_ADD_IDENTITY,
        _AT_DROP_IDENTITY,
        _AT_DROP_EXPRESSION,
    }
)
_MAKES_NOT_NULL = frozenset({ConstrType.CONSTR_NOTNULL.name, ConstrType.CONSTR_PRIMARY.name})
_CONSTR_NULL = ConstrType.CONSTR_NULL.name
_CONSTR_DEFAULT = ConstrType.CONSTR_DEFAULT.name
_CONSTR_IDENTITY = ConstrType.CONSTR_IDENTITY.name
_CONSTR_GENERATED = ConstrType.CONSTR_GENERATED.name


class _ColumnSpec(NamedTuple):
    """A column's definition as the model keeps it."""

    enum: _Enum | None
    type: Any  # format_type() text, or UNKNOWN (always UNKNOWN for an enum: printed late)
    array: bool
    not_null: Any
    default: Any


@functools.lru_cache(maxsize=1024)
def _printed_type(names: tuple[str, ...], typmods: tuple[object, ...], array: bool) -> Any:
    """format_type() text of a built-in type (a folder uses a handful: cached)."""
    return format_type(names, typmods, array)


def _action(code: Any) -> str:
    """A foreign key action as pg_constraint stores it ('a' when the statement names none)."""
    return str(code) if code and code != "\x00" else "a"


def _plain(value: Any) -> Any:
    """A parse-tree value as raw libpg_query JSON again, whether or not a Node converted it."""
    if isinstance(value, Node):
        return {value.tag: _plain_fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _plain_fields(node: Any) -> dict[str, Any]:
    """The raw JSON fields of a Node (or of an already raw dict)."""
    if isinstance(node, Node):
        return {key: _plain(value) for key, value in raw_fields(node).items()}
    return node if isinstance(node, dict) else {}


# Statements that rename or move entities in place (the catalog's name indexes go stale).
_RENAMING: frozenset[str] = frozenset({ast.RenameStmt.__name__, ast.AlterObjectSchemaStmt.__name__})


class _Replay:
    """Applies one parsed statement at a time to the catalog, on behalf of migration ``tag``."""

    def __init__(self, catalog: _Catalog) -> None:
        self.catalog = catalog
        self.tag = ""
        self.default_schema = DEFAULT_SCHEMA  # CREATE SCHEMA ... <elements> changes it
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
        # Keyed by node type name: statements come from pgjson, not pglast's classes.
        self._handlers = {kind.__name__: handler for kind, handler in handlers.items()}

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
        type_text = (
            UNKNOWN
            if enum is not None or not names
            else _printed_type(tuple(names), tuple(typmods), array)
        )
        serial = len(names) == 1 and names[0] in SERIAL_TYPES
        not_null: Any = serial
        default: Any = NEXTVAL if serial else None
        for constraint in constraints:
            kind = constraint.get("contype")
            if kind in _MAKES_NOT_NULL:
                not_null = True
            elif kind == _CONSTR_NULL:
                not_null = False
            elif kind == _CONSTR_DEFAULT:
                default = normalize_default_json(constraint.get("raw_expr"))
            elif kind == _CONSTR_IDENTITY:
                not_null, default = True, None
            elif kind == _CONSTR_GENERATED:
                default = UNKNOWN
        return _ColumnSpec(enum, type_text, array, not_null, default)

    def _add_column(self, table: _Table, coldef: Any, *, if_not_exists: bool) -> _Column | None:
        fields = _plain_fields(coldef)
        type_name = fields.get("typeName")
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
            type_name = _plain_fields(cmd.def_).get("typeName")
            spec = self._column_spec(type_name if type(type_name) is dict else None, ())
            if spec is not None:
                column.enum, column.type, column.array = spec.enum, spec.type, spec.array
            else:
                column.enum, column.type = None, UNKNOWN
        elif subtype == _AT_SET_NOT_NULL:
            column.not_null = True
        elif subtype == _AT_DROP_NOT_NULL:
            column.not_null = False
        elif subtype == _AT_COLUMN_DEFAULT:
            expr = cmd.def_
            column.default = None if expr is None else normalize_default_json(_plain(expr))
        elif subtype == _AT_ADD_IDENTITY:
            column.not_null, column.default = True, None
        elif subtype in (_AT_DROP_IDENTITY, _AT_DROP_EXPRESSION):
            column.default = None

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


def _do_block_queries(body: str) -> list[str]:
    """SQL statements a DO body runs outside its exception handlers, in order."""
    quote = "$orchestrator$"
    suffix = 0
    while quote in body:  # a dollar-quote tag that cannot clash with the body
        suffix += 1
        quote = f"$orchestrator{suffix}$"
    try:
        tree = pglast.parse_plpgsql(f"DO {quote}{body}{quote}")
    except Exception as exc:
        raise _Unanalysable(f"DO block: {_one_line(exc)}") from exc
    queries: list[str] = []

    def visit(item: Any) -> None:
        if isinstance(item, list):
            for element in item:
                visit(element)
        elif isinstance(item, dict):
            for key, value in item.items():
                if key == "exceptions":
                    continue  # handlers run only when the guarded statement failed
                if key == "PLpgSQL_stmt_execsql":
                    queries.append(str(value["sqlstmt"]["PLpgSQL_expr"]["query"]))
                elif key == "PLpgSQL_stmt_dynexecute":
                    queries.extend(_literal_sql(value.get("query")))
                else:
                    visit(value)

    visit(tree)
    return queries


def _literal_sql(expr: Any) -> list[str]:
    """The SQL of ``EXECUTE '<constant>'``; dynamic strings are beyond static analysis."""
    try:
        text = str(expr["PLpgSQL_expr"]["query"])
        # Rare (EXECUTE in a DO block): pglast's own tree, as the check was written for it.
        select: Any = pglast.parse_sql(f"SELECT {text}")[0].stmt
        value = select.targetList[0].val
        single = len(select.targetList) == 1 and isinstance(value, ast.A_Const)
        if single and isinstance(value.val, ast.String):
            return [str(value.val.sval)]
    except Exception:
        pass  # not a single string constant
    return []


# --------------------------------------------------------------------------------------------
# Facts and effects.
# --------------------------------------------------------------------------------------------


def _fact_of(entity: Any) -> tuple[DbObject, Fact] | None:
    """The object ``entity`` is in the database and its fact (None for phantoms)."""
    if entity.phantom:
        return None
    kind = type(entity)
    if kind is _Column:
        table = entity.table
        key = DbObject("column", table.schema, entity.name, table.name)
        if entity.enum is not None:
            enum = entity.enum
            type_text = format_type([enum.name], [], entity.array, enum_schema=enum.schema)
        else:
            type_text = entity.type
        return key, (type_text, entity.not_null, entity.default)
    if kind is _Constraint:
        table = entity.table
        key = DbObject("constraint", table.schema, entity.name, table.name)
        if entity.opaque:
            return key, (UNKNOWN,) * 6
        columns = _column_names(entity.columns) if entity.known_columns else UNKNOWN
        if entity.type != "f":
            return key, (entity.type, columns, "", (), "", "")
        ref = entity.ref_table
        ref_name = UNKNOWN if ref is None else f"{ref.schema}.{ref.name}"
        ref_columns = _column_names(entity.ref_columns) if entity.ref_known else UNKNOWN
        return key, ("f", columns, ref_name, ref_columns, entity.on_delete, entity.on_update)
    if kind is _Index:
        columns = _column_names(entity.columns) if entity.known_columns else UNKNOWN
        return DbObject("index", entity.schema, entity.name), (entity.unique, columns)
    if kind is _Table:
        return DbObject("table", entity.schema, entity.name), ()
    if kind is _View:
        return DbObject("view", entity.schema, entity.name), ()
    if kind is _Enum:
        return DbObject("enum", entity.schema, entity.name), ()
    if kind is _EnumValue:
        enum = entity.enum
        return DbObject("enum_value", enum.schema, entity.label, enum.name), ()
    if kind is _Function:
        return DbObject("function", entity.schema, entity.name), ()
    if kind is _Trigger:
        table = entity.table
        return DbObject("trigger", table.schema, entity.name, table.name), ()
    return None


def _column_names(columns: Iterable[_Column]) -> tuple[str, ...]:
    return tuple(sorted(column.name for column in columns))


def _end_migration(
    catalog: _Catalog, state: dict[DbObject, Fact], schemas_before: set[str]
) -> dict[DbObject, tuple[Fact | None, Fact | None]]:
    """The effect of the migration just replayed; ``state`` moves on to the state after it."""
    keys: set[DbObject] = set()
    after: dict[DbObject, Fact] = {}
    for entity, before in catalog.before.items():
        if before is not None:
            keys.add(before[0])
        if entity.alive and (now := _fact_of(entity)) is not None:  # type: ignore[attr-defined]
            after[now[0]] = now[1]
    catalog.before.clear()
    schemas_after = set(catalog.schemas) - {DEFAULT_SCHEMA}
    for name in schemas_before ^ schemas_after:
        key = DbObject("schema", name, name)
        keys.add(key)
        if name in schemas_after:
            after[key] = ()
    effect: dict[DbObject, tuple[Fact | None, Fact | None]] = {}
    for key in keys | after.keys():
        old, new = state.get(key), after.get(key)
        if old != new:
            effect[key] = (old, new)
            if new is None:
                del state[key]
            else:
                state[key] = new
    return effect


def journal_model(journal: Journal) -> ObjectModel:
    """:func:`build_object_model` of every migration of ``journal``."""
    return build_object_model([(m.tag, m.statements) for m in journal.migrations])


def build_object_model(migrations: Sequence[tuple[str, Sequence[str]]]) -> ObjectModel:
    """Replay the folder's SQL in journal order and say what proves each migration applied.

    ``migrations`` is ``(tag, statements)`` in journal order, ``statements`` being the file
    split on ``--> statement-breakpoint``. Every tag gets an entry in ``expected`` (maybe
    empty). A migration pglast cannot parse (or analyse) gets an empty set and a one-line
    reason in ``unparsed``; its parseable statements are still replayed so that later
    migrations' drops and renames are modelled as well as possible.
    """
    catalog = _Catalog()
    replay = _Replay(catalog)
    unparsed: dict[str, str] = {}
    effects: dict[str, Effect] = {}
    state: dict[DbObject, Fact] = {}
    with cyclic_gc_paused():
        for tag, statements in migrations:
            replay.tag = tag
            schemas_before = set(catalog.schemas) - {DEFAULT_SCHEMA}
            _replay_migration(replay, tag, statements, unparsed)
            effects[tag] = MappingProxyType(_end_migration(catalog, state, schemas_before))
        evidence = catalog.evidence()
    expected = {
        tag: frozenset() if tag in unparsed else frozenset(evidence.get(tag, ()))
        for tag, _ in migrations
    }
    touched: set[DbObject] = set()
    for effect in effects.values():
        touched.update(effect)
    return ObjectModel(
        expected=MappingProxyType(expected),
        unparsed=MappingProxyType(unparsed),
        effects=MappingProxyType(effects),
        order=tuple(effects),
        final=MappingProxyType(state),
        touched=frozenset(touched),
    )


def _replay_migration(
    replay: _Replay, tag: str, statements: Sequence[str], unparsed: dict[str, str]
) -> None:
    """Replay one migration's statements; the first failure's reason goes to ``unparsed``."""
    for number, text in enumerate(statements, start=1):
        try:
            parsed = parse_sql(text)
        except Exception as exc:  # pglast.parser.ParseError, and anything else it raises
            unparsed.setdefault(tag, f"statement {number}: {_one_line(exc)}")
            continue
        for statement in parsed:
            try:
                replay.statement(statement)
            except _Unanalysable as exc:
                unparsed.setdefault(tag, f"statement {number}: {exc}")
            except Exception as exc:  # an exotic statement must not crash `validate`
                reason = f"could not analyse ({type(exc).__name__}: {_one_line(exc)})"
                unparsed.setdefault(tag, f"statement {number}: {reason}")
