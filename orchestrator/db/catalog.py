"""One query, one snapshot: the catalog objects and tracking rows validation decides on.

Round trips to a remote serverless database cost tens of milliseconds each, so the whole
snapshot (schemas, relations, columns, constraints, enum types and labels, and the rows of
the tracking table) is read by a single statement inside one READ ONLY transaction.

The tracking table may not exist, and a static query cannot name a table that may be
missing, so its rows are read through ``query_to_xml`` behind a ``CASE`` that only runs it
when the table exists with the columns drizzle gives it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import psycopg

from orchestrator.db.connect import describe
from orchestrator.db.retry import is_transient
from orchestrator.drizzle.facts import UNKNOWN, Fact, normalize_server_default
from orchestrator.errors import DatabaseError

if TYPE_CHECKING:
    from orchestrator.drizzle.model import DbObject

_SYSTEM_SCHEMAS = "('pg_catalog', 'information_schema', 'pg_toast')"

# A column default as pg_get_expr prints it, except a serial's: deparsing costs the server
# a lookup per default, and every ``nextval('<sequence>'::regclass)`` reads alike (NEXTVAL,
# see normalize_default_sql). The stored tree is recognised exactly: nextval() of a regclass
# constant, bare or under an implicit cast, and no other node (counting braces); anything
# else, any other server version's tree included, is deparsed. A plain default is deparsed
# without its table (relid 0): a default cannot name a column, so the text is the same, and
# a fresh backend then looks up no table per default (0.25 s -> 0.06 s for 10,000 of them).
# A generated column's expression names columns, so it is deparsed with its table.
_NEXTVAL_CALL = (  # a LIKE pattern ("%%": psycopg's escape for "%")
    "{FUNCEXPR :funcid 1574 :funcresulttype 20 :funcretset false :funcvariadic false "
    ":funcformat 0 :funccollid 0 :inputcollid 0 :args ({CONST :consttype 2205 %%"
)
_IMPLICIT_CAST_OF = "{FUNCEXPR :funcid %% :funcformat 2 :funccollid 0 :inputcollid 0 :args ("
_DEFAULT_TEXT = (
    "CASE WHEN (d.adbin::text LIKE '" + _NEXTVAL_CALL + "'"
    " AND d.adbin::text NOT LIKE '%%{%%{%%{%%')"
    " OR (d.adbin::text LIKE '" + _IMPLICIT_CAST_OF + _NEXTVAL_CALL + "'"
    " AND d.adbin::text NOT LIKE '%%{%%{%%{%%{%%')"
    " THEN 'nextval(::regclass)'"
    " WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, 0)"
    " ELSE pg_get_expr(d.adbin, d.adrelid) END"
)

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
    -- Each list comes as one JSON array per attribute: a JSON array per catalog row cost
    -- the server (and the client's decoding) a third more. Tables travel as oids, named
    -- client-side from 'relations' (repeating each row's schema and table name cost the
    -- server as much as the rest of the row); indexes, named in 'indexes', are not in it.
    'relations', (SELECT json_build_array(
                          coalesce(json_agg(nspname), '[]'), coalesce(json_agg(relname), '[]'),
                          coalesce(json_agg(relkind), '[]'), coalesce(json_agg(oid), '[]'))
                  FROM rel WHERE relkind NOT IN ('i', 'I')),
    'columns', (SELECT json_build_array(
                        coalesce(json_agg(a.attrelid), '[]'), coalesce(json_agg(a.attnum), '[]'),
                        coalesce(json_agg(a.attname), '[]'),
                        coalesce(json_agg(format_type(a.atttypid, a.atttypmod)), '[]'),
                        coalesce(json_agg(a.attnotnull), '[]'),
                        coalesce(json_agg({_DEFAULT_TEXT}), '[]'))
                FROM pg_attribute a JOIN rel ON rel.oid = a.attrelid
                LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                WHERE a.attnum > 0 AND NOT a.attisdropped AND rel.relkind NOT IN ('i', 'I')),
    -- Column numbers, not names: resolved from 'columns', which costs the server no lookup
    -- per constraint or index.
    'constraints', (SELECT json_build_array(
                            coalesce(json_agg(con.conrelid), '[]'),
                            coalesce(json_agg(con.conname), '[]'),
                            coalesce(json_agg(con.contype), '[]'),
                            coalesce(json_agg(con.conkey), '[]'),
                            coalesce(json_agg(con.confrelid), '[]'),
                            coalesce(json_agg(con.confkey), '[]'),
                            coalesce(json_agg(con.confdeltype), '[]'),
                            coalesce(json_agg(con.confupdtype), '[]'))
                    FROM pg_constraint con JOIN rel ON rel.oid = con.conrelid),
    'indexes', (SELECT json_build_array(
                        coalesce(json_agg(rel.nspname), '[]'),
                        coalesce(json_agg(rel.relname), '[]'),
                        coalesce(json_agg(i.indisunique), '[]'),
                        coalesce(json_agg(i.indrelid), '[]'),
                        coalesce(json_agg(i.indkey::int2[]), '[]'))
                FROM pg_index i JOIN rel ON rel.oid = i.indexrelid),
    'functions', (SELECT coalesce(json_agg(DISTINCT jsonb_build_array(ns.nspname, p.proname)),
                                  '[]')
                  FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
                  WHERE NOT EXISTS (SELECT FROM pg_depend d  -- an extension's own functions
                                    WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                                      AND d.deptype = 'e')),
    'triggers', (SELECT coalesce(json_agg(json_build_array(t.tgrelid, t.tgname)), '[]')
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
    document = read_snapshot_document(conn, schema=schema, table=table)
    return snapshot_from_json(document, schema=schema, table=table)


def read_snapshot_document(
    conn: psycopg.Connection[Any], *, schema: str, table: str
) -> dict[str, Any]:
    """The snapshot query's JSON document, not yet decoded (see :func:`read_snapshot`).

    On an idle connection the transaction travels as ONE simple-protocol message,
    ``BEGIN READ ONLY; <query>; COMMIT``: one network exchange instead of three (BEGIN, the
    statement, COMMIT each wait for their answer otherwise), which is most of validate's
    time on a distant database. The schema and table then travel as quoted literals
    (quoted by psycopg, as the server's settings require). Inside a transaction already
    begun, the old way: a READ ONLY block of its own (which psycopg refuses there).
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        with read_only_transaction(conn):
            row = conn.execute(SNAPSHOT_QUERY, {"schema": schema, "table": table}).fetchone()
    else:
        row = _one_message_read(conn, schema=schema, table=table)
    assert row is not None
    document: dict[str, Any] = row[0] if isinstance(row[0], dict) else json.loads(row[0])
    return document


def _one_message_read(conn: psycopg.Connection[Any], *, schema: str, table: str) -> Any:
    """The snapshot query's row, read by ``BEGIN READ ONLY; <query>; COMMIT`` in one message.

    The connection is put in autocommit for the message (free: a client-side flag), so
    psycopg sends no BEGIN of its own; it is restored afterwards. On an error the server
    leaves the explicit transaction open (aborted): it is rolled back, when the connection
    still stands, before the error is reported as :class:`DatabaseError`.
    """
    idle = psycopg.pq.TransactionStatus.IDLE
    previous = conn.autocommit
    try:
        query = psycopg.ClientCursor(conn).mogrify(
            SNAPSHOT_QUERY, {"schema": schema, "table": table}
        )
        conn.autocommit = True
        try:
            cursor = conn.execute(f"BEGIN READ ONLY;\n{query};\nCOMMIT")
            cursor.nextset()  # past BEGIN's result: the query's
            row = cursor.fetchone()
        finally:
            if not conn.closed and conn.info.transaction_status != idle:
                # When that fails the connection is lost, and the server ends the transaction.
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
            if not conn.closed and conn.info.transaction_status == idle:
                conn.autocommit = previous
    except psycopg.Error as exc:
        raise DatabaseError(
            f"cannot read the catalog: {describe(exc)}", transient=is_transient(exc)
        ) from exc
    return row


def snapshot_from_json(data: dict[str, Any], *, schema: str, table: str) -> CatalogSnapshot:
    """Build a snapshot from the query's JSON document (pure)."""
    # Imported here: validate starts the catalog read before it imports the history model.
    from orchestrator.drizzle.model import DbObject

    # Built per catalog with zip and map (loops in C) where possible, and each key made a
    # DbObject in C (tuple.__new__ over a plain tuple, not the named tuple's Python
    # constructor): this runs for every object of a large schema, 55,000 at bench scale.
    nspnames, relnames, relkinds, oids = data["relations"]
    relations: dict[int, tuple[str, str]] = dict(  # oid -> (schema, name)
        zip(oids, zip(nspnames, relnames, strict=True), strict=True)
    )
    relids, attnums, attnames, types, not_nulls, defaults = data["columns"]
    names = dict(zip(zip(relids, attnums, strict=True), attnames, strict=True))
    columns = _Names(relations, names).columns
    normalize = normalize_server_default
    keys: list[tuple[str, str, str, str | None]] = [
        ("schema", name, name, None) for name in data["schemas"]
    ]
    kind = _RELATION_KINDS.get
    keys += zip([kind(relkind, "table") for relkind in relkinds], nspnames, relnames, repeat(None))
    values: list[Fact] = [()] * len(keys)
    owners = list(map(relations.__getitem__, relids))  # (schema, table) of each column
    keys += zip(repeat("column"), map(itemgetter(0), owners), attnames, map(itemgetter(1), owners))
    values += zip(
        types, not_nulls, [None if d is None else normalize(d) for d in defaults], strict=True
    )
    for relid, conname, contype, conkey, ref_oid, ref_keys, on_delete, on_update in zip(
        *data["constraints"], strict=True
    ):
        nspname, relname = relations[relid]
        keys.append(("constraint", nspname, conname, relname))
        if contype != "f":
            values.append((contype, columns(relid, conkey), "", (), "", ""))
            continue
        ref = relations.get(ref_oid)
        values.append(
            (
                "f",
                columns(relid, conkey),
                UNKNOWN if ref is None else f"{ref[0]}.{ref[1]}",
                columns(ref_oid, ref_keys),
                on_delete,
                on_update,
            )
        )
    index_schemas, index_names, uniques, indexed, indkeys = data["indexes"]
    keys += zip(repeat("index"), index_schemas, index_names, repeat(None))
    values += zip(uniques, map(columns, indexed, indkeys), strict=True)
    for nspname, proname in data["functions"]:
        keys.append(("function", nspname, proname, None))
        values.append(())
    for relid, tgname in data["triggers"]:
        nspname, relname = relations[relid]
        keys.append(("trigger", nspname, tgname, relname))
        values.append(())
    for nspname, typname, label in data["enums"]:
        keys.append(("enum", nspname, typname, None))
        values.append(())
        if label is not None:
            keys.append(("enum_value", nspname, label, typname))
            values.append(())
    facts: dict[DbObject, Fact] = dict(
        zip(map(functools.partial(tuple.__new__, DbObject), keys), values, strict=True)
    )
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


_RELATION_KINDS = {"v": "view", "m": "view"}  # else "table" (indexes are listed apart)


@dataclass(frozen=True)
class _Names:
    """Column names of the snapshot's tables, by table oid and column number."""

    relations: Mapping[int, tuple[str, str]]  # oid -> (schema, table)
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
