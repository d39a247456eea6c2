"""The catalog model's entities, and the fact each one is in the database.

Entities compare by identity (eq=False), like rows with OIDs: a rename changes an attribute,
not the entity, so dependencies survive renames."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from orchestrator.drizzle.facts import (
    UNKNOWN,
    Fact,
    format_type,
)
from orchestrator.drizzle.model.names import DbObject

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


class _Written(NamedTuple):
    """A column type as the SQL spells it: its dotted names (untruncated) and modifiers."""

    names: tuple[str, ...]
    typmods: tuple[object, ...]  # ints, or raw JSON nodes for anything else


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
    written: _Written | None = None  # the type as the SQL spells it (None: unknown)
    identity: bool = False  # GENERATED ... AS IDENTITY (no default, yet INSERTs may omit it)


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
