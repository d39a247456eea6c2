"""One query, one snapshot: the catalog objects and tracking rows validation decides on.

Round trips to a remote serverless database cost tens of milliseconds each, so the whole
snapshot (schemas, relations, columns, constraints, enum types and labels, and the rows of
the tracking table) is read by a single statement inside one READ ONLY transaction.

The tracking table may not exist, and a static query cannot name a table that may be
missing, so its rows are read through ``query_to_xml`` behind a ``CASE`` that only runs it
when the table exists with the columns drizzle gives it.
"""

from __future__ import annotations

import functools
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg

from orchestrator.db.connect import describe
from orchestrator.db.retry import is_transient
from orchestrator.drizzle.facts import UNKNOWN, Fact, normalize_default_sql
from orchestrator.drizzle.objects import DbObject
from orchestrator.errors import DatabaseError

_SYSTEM_SCHEMAS = "('pg_catalog', 'information_schema', 'pg_toast')"

SNAPSHOT_QUERY = f"""
WITH ns AS (
    SELECT oid, nspname FROM pg_namespace
    WHERE nspname NOT IN {_SYSTEM_SCHEMAS}
      AND nspname NOT LIKE 'pg\\_temp\\_%%' AND nspname NOT LIKE 'pg\\_toast\\_temp\\_%%'
), rel AS (
    SELECT c.oid, ns.nspname, c.relname, c.relkind
    FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'i', 'I', 'f')
), tracking AS (
    SELECT to_regclass(format('%%I.%%I', %(schema)s::text, %(table)s::text)) AS oid
)
SELECT json_build_object(
    'server_version', current_setting('server_version'),
    'database', current_database(),
    'schemas', (SELECT coalesce(json_agg(nspname), '[]') FROM ns),
    'relations', (SELECT coalesce(json_agg(json_build_array(nspname, relname, relkind, oid)),
                           '[]')
                  FROM rel),
    'columns', (SELECT coalesce(json_agg(json_build_array(
                        rel.nspname, rel.relname, a.attname,
                        format_type(a.atttypid, a.atttypmod), a.attnotnull,
                        pg_get_expr(d.adbin, d.adrelid), a.attrelid, a.attnum)), '[]')
                FROM pg_attribute a JOIN rel ON rel.oid = a.attrelid
                LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                WHERE a.attnum > 0 AND NOT a.attisdropped AND rel.relkind NOT IN ('i', 'I')),
    -- Column numbers and table oids, not names: resolved from 'columns' and 'relations'
    -- client-side, which costs the server no lookup per constraint or index.
    'constraints', (SELECT coalesce(json_agg(json_build_array(
                        rel.nspname, rel.relname, con.conname, con.contype, con.conrelid,
                        con.conkey, con.confrelid, con.confkey, con.confdeltype,
                        con.confupdtype)), '[]')
                    FROM pg_constraint con JOIN rel ON rel.oid = con.conrelid),
    'indexes', (SELECT coalesce(json_agg(json_build_array(
                    rel.nspname, rel.relname, i.indisunique, i.indrelid,
                    i.indkey::int2[])), '[]')
                FROM pg_index i JOIN rel ON rel.oid = i.indexrelid),
    'functions', (SELECT coalesce(json_agg(DISTINCT jsonb_build_array(ns.nspname, p.proname)),
                                  '[]')
                  FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
                  WHERE NOT EXISTS (SELECT FROM pg_depend d  -- an extension's own functions
                                    WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                                      AND d.deptype = 'e')),
    'triggers', (SELECT coalesce(json_agg(json_build_array(rel.nspname, rel.relname, t.tgname)),
                                 '[]')
                 FROM pg_trigger t JOIN rel ON rel.oid = t.tgrelid WHERE NOT t.tgisinternal),
    'enums', (SELECT coalesce(json_agg(json_build_array(ns.nspname, t.typname, e.enumlabel)),
                              '[]')
              FROM pg_type t JOIN ns ON ns.oid = t.typnamespace
              LEFT JOIN pg_enum e ON e.enumtypid = t.oid
              WHERE t.typtype = 'e'),
    'tracking_present', (SELECT oid IS NOT NULL FROM tracking),
    'tracking_elsewhere', (SELECT coalesce(json_agg(nspname ORDER BY nspname), '[]')
                           FROM rel
                           WHERE relname = %(table)s AND relkind IN ('r', 'p')
                             AND nspname <> %(schema)s),
    'tracking_rows', (
        SELECT CASE WHEN (SELECT count(*) FROM pg_attribute
                          WHERE attrelid = tracking.oid AND NOT attisdropped
                            AND ((attname IN ('id', 'created_at')
                                  AND atttypid IN ('int2'::regtype, 'int4'::regtype,
                                                   'int8'::regtype))
                                 OR (attname = 'hash'
                                     AND atttypid IN ('text'::regtype, 'varchar'::regtype)))
                         ) = 3
        THEN query_to_xml(
            format('SELECT id, hash, created_at FROM %%I.%%I ORDER BY id',
                   %(schema)s::text, %(table)s::text),
            true, false, '')::text
        END
        FROM tracking WHERE tracking.oid IS NOT NULL
    )
)
"""


@dataclass(frozen=True)
class TrackingRow:
    """One row of ``__drizzle_migrations``."""

    id: int | None
    hash: str | None
    created_at: int | None


@dataclass(frozen=True)
class CatalogSnapshot:
    """What the database holds, as plain values."""

    server_version: str
    database: str
    objects: frozenset[DbObject]
    tracking_schema: str
    tracking_table: str
    tracking_present: bool  # the table exists at schema.table
    tracking_readable: bool  # ... and has drizzle's columns, so its rows were read
    tracking_rows: tuple[TrackingRow, ...]
    tracking_elsewhere: tuple[str, ...]  # other schemas holding a table of that name
    # Each object's attributes (see orchestrator.drizzle.facts), keyed like ``objects``.
    facts: Mapping[DbObject, Fact] = field(default_factory=dict)

    @functools.cached_property
    def tracked_hashes(self) -> frozenset[str]:
        """Every hash recorded in the tracking table (computed once: it is asked often)."""
        return frozenset(row.hash for row in self.tracking_rows if row.hash is not None)

    @property
    def newest_created_at(self) -> int | None:
        """What drizzle's migrator compares journal ``when`` values against."""
        values = [row.created_at for row in self.tracking_rows if row.created_at is not None]
        return max(values) if values else None


@contextmanager
def read_only_transaction(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """A READ ONLY transaction for the ``with`` block: a bug in a reader cannot write.

    Any database error becomes :class:`DatabaseError` (exit 30): the catalog is unreadable.
    """
    try:
        previous = conn.read_only
        conn.read_only = True
        try:
            with conn.transaction():
                yield
        finally:
            conn.read_only = previous
    except psycopg.Error as exc:
        raise DatabaseError(
            f"cannot read the catalog: {describe(exc)}", transient=is_transient(exc)
        ) from exc


def read_snapshot(conn: psycopg.Connection[Any], *, schema: str, table: str) -> CatalogSnapshot:
    """Read the snapshot in one READ ONLY transaction and one query (DatabaseError if not)."""
    with read_only_transaction(conn):
        row = conn.execute(SNAPSHOT_QUERY, {"schema": schema, "table": table}).fetchone()
    assert row is not None
    data = row[0] if isinstance(row[0], dict) else json.loads(row[0])
    return snapshot_from_json(data, schema=schema, table=table)


def snapshot_from_json(data: dict[str, Any], *, schema: str, table: str) -> CatalogSnapshot:
    """Build a snapshot from the query's JSON document (pure)."""
    facts: dict[DbObject, Fact] = {DbObject("schema", name, name): () for name in data["schemas"]}
    relations: dict[int, str] = {}
    for nspname, relname, relkind, oid in data["relations"]:
        kind = {"v": "view", "m": "view", "i": "index", "I": "index"}.get(relkind, "table")
        facts[DbObject(kind, nspname, relname)] = ()  # type: ignore[arg-type]
        relations[oid] = f"{nspname}.{relname}"
    names: dict[tuple[int, int], str] = {}
    for nspname, relname, attname, type_text, not_null, default, relid, attnum in data["columns"]:
        default_fact = None if default is None else normalize_default_sql(default)
        facts[DbObject("column", nspname, attname, relname)] = (
            type_text,
            bool(not_null),
            default_fact,
        )
        names[(relid, attnum)] = attname
    catalog = _Names(relations, names)
    for nspname, relname, conname, *attributes in data["constraints"]:
        key = DbObject("constraint", nspname, conname, relname)
        facts[key] = catalog.constraint_fact(attributes)
    for nspname, relname, unique, indexed, keys in data["indexes"]:
        facts[DbObject("index", nspname, relname)] = (bool(unique), catalog.columns(indexed, keys))
    for nspname, proname in data["functions"]:
        facts[DbObject("function", nspname, proname)] = ()
    for nspname, relname, tgname in data["triggers"]:
        facts[DbObject("trigger", nspname, tgname, relname)] = ()
    for nspname, typname, label in data["enums"]:
        facts[DbObject("enum", nspname, typname)] = ()
        if label is not None:
            facts[DbObject("enum_value", nspname, label, typname)] = ()
    objects = facts.keys()
    xml_rows = data.get("tracking_rows")
    present = bool(data["tracking_present"])
    return CatalogSnapshot(
        server_version=data["server_version"],
        database=data["database"],
        objects=frozenset(objects),
        facts=facts,
        tracking_schema=schema,
        tracking_table=table,
        tracking_present=present,
        tracking_readable=present and xml_rows is not None,
        tracking_rows=parse_tracking_xml(xml_rows) if xml_rows else (),
        tracking_elsewhere=tuple(data["tracking_elsewhere"]),
    )


@dataclass(frozen=True)
class _Names:
    """Table oids and column numbers of the snapshot, by name."""

    relations: Mapping[int, str]  # oid -> "schema.table"
    columns_by_number: Mapping[tuple[int, int], str]  # (table oid, attnum) -> column name

    def columns(self, table: int, numbers: list[int] | None) -> Any:
        """Column names, sorted as the model sorts them (no collation); UNKNOWN for an
        expression (number 0)."""
        if not numbers:
            return ()
        get = self.columns_by_number.get
        if len(numbers) == 1:  # most keys: no list, no sort
            name = get((table, numbers[0]))
            return UNKNOWN if name is None else (name,)
        found = [get((table, n)) for n in numbers]
        if None in found:
            return UNKNOWN
        return tuple(sorted(found))

    def constraint_fact(self, attributes: list[Any]) -> Fact:
        """(contype, columns, ref_table, ref_columns, on_delete, on_update), as the model."""
        contype, table, keys, ref_table, ref_keys, on_delete, on_update = attributes
        columns = self.columns(table, keys)
        if contype != "f":
            return (contype, columns, "", (), "", "")
        ref = self.relations.get(ref_table, UNKNOWN)
        return ("f", columns, ref, self.columns(ref_table, ref_keys), on_delete, on_update)


def parse_tracking_xml(document: str) -> tuple[TrackingRow, ...]:
    """Rows from ``query_to_xml(..., nulls => true)`` output."""
    root = ET.fromstring(document)
    rows = []
    for element in root.findall("row"):
        rows.append(
            TrackingRow(
                id=_int(element.findtext("id")),
                hash=element.findtext("hash") or None,
                created_at=_int(element.findtext("created_at")),
            )
        )
    return tuple(rows)


def _int(text: str | None) -> int | None:
    return int(text) if text not in (None, "") else None
