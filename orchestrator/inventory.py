"""``inspect``: every table with its columns, types, row estimate and creating migration, and
the drift between the database and the schema its *tracked* migrations build, both ways and in
the attributes (a column retyped by hand, a foreign key whose action was changed).

Drift is judged against the modelled state after the tracked migrations (journal order), not
against the end of the folder: a pending migration's tables are not "missing", and a column a
later migration drops is not "extra" while that migration is still pending.

I/O is one statement in one READ ONLY transaction (:func:`read_catalog_inventory`): the
catalog snapshot validation uses, plus every relation's columns and ``reltuples``. The rest
is a pure function (:func:`build_inventory`) over the journal's object model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from orchestrator.db.catalog import SNAPSHOT_QUERY, CatalogSnapshot, snapshot_from_json
from orchestrator.db.catalog_read import read_only_transaction
from orchestrator.db.connect import connect
from orchestrator.drizzle.facts import Fact, matches
from orchestrator.drizzle.journal import Journal
from orchestrator.drizzle.model import (
    DbObject,
    ObjectKind,
    ObjectModel,
    journal_model,
)
from orchestrator.validation import summarize_missing
from orchestrator.validation.matching import Difference

_RELATIONS_QUERY = r"""
SELECT coalesce(json_agg(json_build_array(
    n.nspname, c.relname, c.relkind, c.reltuples::bigint,
    (SELECT coalesce(json_agg(json_build_array(
                a.attname, format_type(a.atttypid, a.atttypmod), t.typname,
                a.attnotnull, a.atthasdef) ORDER BY a.attnum), '[]')
     FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
) ORDER BY n.nspname, c.relname), '[]')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND n.nspname NOT LIKE 'pg\_temp\_%%' AND n.nspname NOT LIKE 'pg\_toast\_temp\_%%'
"""

#: One statement: the validation snapshot and the relations with their columns.
INVENTORY_QUERY = f"SELECT ({SNAPSHOT_QUERY}) AS snapshot, ({_RELATIONS_QUERY}) AS relations"


@dataclass(frozen=True)
class CatalogColumn:
    """A column as the catalog has it."""

    name: str
    type: str  # format_type(): "timestamp with time zone", "character varying(20)"
    type_name: str  # pg_type.typname: "timestamptz", "varchar", "_text"
    not_null: bool
    has_default: bool


@dataclass(frozen=True)
class CatalogRelation:
    """A table or view as the catalog has it."""

    schema: str
    name: str
    kind: str  # "table" or "view"
    row_estimate: int | None  # reltuples; None when never analysed (or a view)
    columns: tuple[CatalogColumn, ...]


@dataclass(frozen=True)
class CatalogInventory:
    """What one inventory read returns."""

    snapshot: CatalogSnapshot
    relations: tuple[CatalogRelation, ...]


@dataclass(frozen=True)
class InventoryColumn:
    """A column with the migration that created it (None: no migration did)."""

    name: str
    type: str
    not_null: bool
    has_default: bool
    created_by: str | None


@dataclass(frozen=True)
class InventoryTable:
    """A table or view with its columns, row estimate and creating migration."""

    schema: str
    name: str
    kind: str
    row_estimate: int | None
    created_by: str | None
    columns: tuple[InventoryColumn, ...]


@dataclass(frozen=True)
class GoneObject:
    """An object a tracked migration created that the database no longer has."""

    migration: str
    object: str


@dataclass(frozen=True)
class Inventory:
    """The ``inspect`` report."""

    database: str
    server_version: str
    tables: tuple[InventoryTable, ...]
    drift: tuple[str, ...]  # objects in the database that no tracked migration created
    gone: tuple[GoneObject, ...]  # objects tracked migrations created that are missing
    changed: tuple[str, ...] = ()  # objects present on both sides, not as the migrations say

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready document."""
        return {
            "database": {"name": self.database, "server_version": self.server_version},
            "tables": [
                {
                    "schema": t.schema,
                    "name": t.name,
                    "kind": t.kind,
                    "row_estimate": t.row_estimate,
                    "created_by": t.created_by,
                    "columns": [c.__dict__ for c in t.columns],
                }
                for t in self.tables
            ],
            "drift": list(self.drift),
            "gone": [g.__dict__ for g in self.gone],
            "changed": list(self.changed),
        }


def inventory_from_json(
    snapshot: Mapping[str, Any], relations: list[Any], *, schema: str, table: str
) -> CatalogInventory:
    """Build a :class:`CatalogInventory` from the query's two JSON documents (pure)."""
    rels = tuple(
        CatalogRelation(
            schema=nspname,
            name=relname,
            kind="view" if relkind in ("v", "m") else "table",
            row_estimate=None if relkind in ("v", "m") or reltuples < 0 else int(reltuples),
            columns=tuple(CatalogColumn(*column) for column in columns),
        )
        for nspname, relname, relkind, reltuples, columns in relations
    )
    return CatalogInventory(snapshot_from_json(dict(snapshot), schema=schema, table=table), rels)


def query_catalog_inventory(
    conn: psycopg.Connection[Any], *, schema: str, table: str
) -> CatalogInventory:
    """Run the inventory statement in the connection's current transaction.

    For callers that hold a transaction already (repair reads under its lock).
    """
    row = conn.execute(INVENTORY_QUERY, {"schema": schema, "table": table}).fetchone()
    assert row is not None
    snapshot, relations = (json.loads(v) if isinstance(v, str) else v for v in row)
    return inventory_from_json(snapshot, relations, schema=schema, table=table)


def read_catalog_inventory(
    conn: psycopg.Connection[Any], *, schema: str, table: str
) -> CatalogInventory:
    """One statement in one READ ONLY transaction; errors become :class:`DatabaseError`."""
    with read_only_transaction(conn):
        return query_catalog_inventory(conn, schema=schema, table=table)


def _is_tracking(obj: DbObject, schema: str, table: str) -> bool:
    """The tracking table and what belongs to it (its schema, columns, key)."""
    if obj.schema != schema:
        return False
    if obj.kind == "schema":
        return True
    return obj.name == table or obj.parent == table or obj.name.startswith(f"{table}_")


def tracked_state(
    journal: Journal, model: ObjectModel, tracked: frozenset[str]
) -> tuple[dict[DbObject, Fact], dict[DbObject, str]]:
    """The modelled schema after the tracked migrations, and which of them made each object."""
    state: dict[DbObject, Fact] = {}
    creator: dict[DbObject, str] = {}
    for migration in journal.migrations:
        if migration.hash not in tracked or migration.tag in model.unparsed:
            continue
        for key, (_, after) in model.effects.get(migration.tag, {}).items():
            if after is None:
                state.pop(key, None)
                creator.pop(key, None)
            else:
                state[key] = after
                creator.setdefault(key, migration.tag)  # altering it later does not re-create
    return state, creator


def build_inventory(journal: Journal, model: ObjectModel, catalog: CatalogInventory) -> Inventory:
    """Attribute every table and column to its migration and find drift both ways (pure)."""
    snapshot = catalog.snapshot
    schema, table = snapshot.tracking_schema, snapshot.tracking_table
    expected, creator = tracked_state(journal, model, snapshot.tracked_hashes)
    tables = []
    for rel in catalog.relations:
        if rel.schema == schema and rel.name == table:
            continue
        kind: ObjectKind = "view" if rel.kind == "view" else "table"
        tables.append(
            InventoryTable(
                schema=rel.schema,
                name=rel.name,
                kind=rel.kind,
                row_estimate=rel.row_estimate,
                created_by=creator.get(DbObject(kind, rel.schema, rel.name)),
                columns=tuple(
                    InventoryColumn(
                        c.name,
                        c.type,
                        c.not_null,
                        c.has_default,
                        creator.get(DbObject("column", rel.schema, c.name, rel.name)),
                    )
                    for c in rel.columns
                ),
            )
        )
    # An index backing a primary key or unique constraint shares its name: the constraint
    # stands for it (the object model records the constraint only).
    constraint_names = {(o.schema, o.name) for o in snapshot.objects if o.kind == "constraint"}
    drift = sorted(
        obj
        for obj in snapshot.objects
        if obj not in creator
        and not _is_tracking(obj, schema, table)
        and obj != DbObject("schema", "public", "public")
        and not (obj.kind == "index" and (obj.schema, obj.name) in constraint_names)
    )
    missing_by_tag: dict[str, list[DbObject]] = {}
    for obj in sorted(expected):
        if obj not in snapshot.facts:
            missing_by_tag.setdefault(creator[obj], []).append(obj)
    gone = [
        GoneObject(m.tag, line)
        for m in journal.migrations
        for line in summarize_missing(missing_by_tag.get(m.tag, []))
    ]
    changed = [
        str(Difference(obj, fact, snapshot.facts[obj]))
        for obj, fact in sorted(expected.items())
        if obj in snapshot.facts and not matches(fact, snapshot.facts[obj])
    ]
    return Inventory(
        database=snapshot.database,
        server_version=snapshot.server_version,
        tables=tuple(tables),
        drift=tuple(summarize_missing(drift)),
        gone=tuple(gone),
        changed=tuple(changed),
    )


def inspect_database(url: str, journal: Journal, *, schema: str, table: str) -> Inventory:
    """Connect, read the inventory read-only, and attribute it to the journal's migrations."""
    model = journal_model(journal)
    with connect(url) as conn:
        catalog = read_catalog_inventory(conn, schema=schema, table=table)
    return build_inventory(journal, model, catalog)
