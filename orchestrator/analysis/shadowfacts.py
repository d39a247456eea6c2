"""What the shadow knows about each migration of a folder, from its replayed
:class:`~orchestrator.catalog.History`: the catalog just before the migration (does a table,
column or index exist, a column's type, nullability and default), the objects it changes
(the catalog difference between the snapshots before and after it) and the tables it
rewrote (their storage is new after it). Pure: a history in, plain values out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pglast

from orchestrator.analysis.typechange import ColumnType, column_type_of
from orchestrator.catalog import History, Objects, fold, properties

_RELATION_KINDS = ("table", "view", "materialized view", "index", "sequence")


@dataclass(frozen=True)
class ColumnFacts:
    """A column as the shadow holds it just before a migration."""

    type: ColumnType | None  # None: a type the analysis cannot spell (format_type's text)
    not_null: bool
    has_default: bool  # a default, an identity or a generated expression


@dataclass(frozen=True)
class IndexFacts:
    """An index as the shadow holds it just before a migration."""

    table: tuple[str, str] | None  # (schema, name) of the relation it is on
    unique: bool


@dataclass(frozen=True)
class MigrationFacts:
    """The shadow's facts about one migration."""

    before: Objects  # the catalog just before it
    changed: tuple[tuple[str, str], ...]  # (create | alter | drop, object key), by key
    rewrites: frozenset[str]  # tables (``schema.name``) whose storage it replaced

    def relation_exists(self, schema: str, name: str) -> bool:
        """Whether a table, view, index or sequence of that name exists before it."""
        return any(f"{kind} {schema}.{name}" in self.before for kind in _RELATION_KINDS)

    def column(self, schema: str, table: str, name: str) -> ColumnFacts | None:
        """The column before the migration (None: absent)."""
        if (text := self.before.get(f"column {schema}.{table}.{name}")) is None:
            return None
        props = properties(text)
        has_default = any(props.get(p) is not None for p in ("default", "identity", "generated"))
        return ColumnFacts(
            _column_type(str(props.get("type"))), bool(props.get("not_null")), has_default
        )

    def index(self, schema: str, name: str) -> IndexFacts | None:
        """The index before the migration (None: absent)."""
        if (text := self.before.get(f"index {schema}.{name}")) is None:
            return None
        props = properties(text)
        on_schema, _, on_table = str(props.get("table") or "").partition(".")
        return IndexFacts((on_schema, on_table) if on_table else None, bool(props.get("unique")))


def migration_facts(history: History) -> tuple[MigrationFacts, ...]:
    """The facts of each migration of ``history``, in journal order."""
    state = dict(history.initial)
    rewrites = history.rewrites or tuple(() for _ in history.deltas)
    facts = []
    for change, rewritten in zip(history.deltas, rewrites, strict=True):
        changed = tuple(
            ("create" if old is None else "drop" if new is None else "alter", key)
            for key, (old, new) in sorted(change.items())
        )
        facts.append(MigrationFacts(state, changed, frozenset(rewritten)))
        state = fold(state, [change])
    return tuple(facts)


def _column_type(text: str) -> ColumnType | None:
    """``format_type``'s text (``character varying(40)``) as the analysis spells types."""
    try:
        (raw,) = pglast.parse_sql(f"SELECT NULL::{text}")
        select: Any = raw.stmt
        cast = select.targetList[0].val
        return column_type_of(cast.typeName)
    except Exception:  # a type the parser does not read back: unknown
        return None
