"""``inspect``: every table with its columns, types, row estimate and creating migration, and
the drift between the database and the schema its *tracked* migrations build, both ways and in
the properties (a column retyped by hand, a foreign key whose action was changed).

Drift is judged against the catalog PostgreSQL builds from the tracked migrations (journal
order, replayed on the shadow), not against the end of the folder: a pending migration's
tables are not "missing", and a column a later migration drops is not "extra" while that
migration is still pending. I/O is the one catalog read validation uses; the rest is a pure
function (:func:`build_inventory`) over the snapshot and the folder's history.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.catalog import CatalogSnapshot, History, Properties, differences, properties
from orchestrator.drizzle.journal import Journal
from orchestrator.validation import summarize_missing

_RELATION_KINDS = {"table": "table", "view": "view", "materialized": "view"}


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
        return {
            "database": {"name": self.database, "server_version": self.server_version},
            "tables": [asdict(t) for t in self.tables],
            "drift": list(self.drift),
            "gone": [asdict(g) for g in self.gone],
            "changed": list(self.changed),
        }


def tracked_state(
    journal: Journal, history: History, row_hashes: tuple[str, ...]
) -> tuple[dict[str, Properties], dict[str, str]]:
    """The catalog the tracked migrations build, and which of them created each object."""
    state = dict(history.initial)
    creator: dict[str, str] = {}
    untracked = {m.tag for m in journal.untracked(row_hashes)}
    replayed = journal.migrations[: len(history.deltas)]  # up to a migration the shadow refused
    for migration, change in zip(replayed, history.deltas, strict=True):
        if migration.tag in untracked:
            continue
        for key, (_, after) in change.items():
            if after is None:
                state.pop(key, None)
                creator.pop(key, None)
            else:
                state[key] = after
                creator.setdefault(key, migration.tag)  # altering it later does not re-create
    return state, creator


def build_inventory(journal: Journal, history: History, snapshot: CatalogSnapshot) -> Inventory:
    """Attribute every table and column to its migration and find drift both ways (pure)."""
    expected, creator = tracked_state(journal, history, snapshot.row_hashes)
    found = snapshot.objects
    tables = []
    for key in sorted(found):
        kind, _, name = key.partition(" ")
        if kind not in _RELATION_KINDS:
            continue
        if kind == "materialized":
            name = name.removeprefix("view ")
        schema, _, table = name.partition(".")
        prefix = f"column {name}."
        decoded = {c: properties(text) for c, text in found.items() if c.startswith(prefix)}
        columns = [
            InventoryColumn(
                column.removeprefix(prefix),
                str(props.get("type")),
                bool(props.get("not_null")),
                props.get("default") is not None,
                creator.get(column),
            )
            for column, props in decoded.items()
        ]
        estimate = snapshot.row_estimates.get(name)
        tables.append(
            InventoryTable(
                schema=schema,
                name=table,
                kind=_RELATION_KINDS[kind],
                row_estimate=estimate if estimate is not None and estimate >= 0 else None,
                created_by=creator.get(key),
                columns=tuple(sorted(columns, key=lambda c: c.name)),
            )
        )
    drift = sorted(found.keys() - expected.keys())
    missing_by_tag: dict[str, list[str]] = {}
    for key in sorted(expected.keys() - found.keys()):
        missing_by_tag.setdefault(creator.get(key, "(the empty database)"), []).append(key)
    gone = [
        GoneObject(tag, line)
        for tag, keys in missing_by_tag.items()
        for line in summarize_missing(keys)
    ]
    changed = [str(d) for d in differences(expected, found, expected.keys() & found.keys())]
    return Inventory(
        database=snapshot.database,
        server_version=snapshot.server_version,
        tables=tuple(tables),
        drift=tuple(summarize_missing(drift)),
        gone=tuple(gone),
        changed=tuple(changed),
    )
