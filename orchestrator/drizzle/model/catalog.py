"""The simulated catalog: live entities, lookups, and PostgreSQL's drop and rename rules."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from orchestrator.drizzle.facts import (
    UNKNOWN,
    Fact,
)
from orchestrator.drizzle.model.entities import (
    _INDEX_BACKED,
    _Column,
    _Constraint,
    _Enum,
    _EnumValue,
    _fact_of,
    _Function,
    _Index,
    _Table,
    _Trigger,
    _View,
)
from orchestrator.drizzle.model.names import DEFAULT_SCHEMA, DbObject, _make_object_name

_T = TypeVar("_T")


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
    # In sorted order: the report lists each effect's objects sorted, and sorting what is
    # already sorted costs one comparison per object (this runs once, when the model is built).
    for key in sorted(keys | after.keys()):
        old, new = state.get(key), after.get(key)
        if old != new:
            effect[key] = (old, new)
            if new is None:
                del state[key]
            else:
                state[key] = new
    return effect
