"""One transaction, one snapshot: the catalog objects and tracking rows validation decides on.

Round trips to a remote serverless database cost tens of milliseconds, so the whole
snapshot (schemas, relations, columns, constraints, indexes, functions, triggers, enum
types and labels, and the rows of the tracking table) is read inside one READ ONLY
transaction sent as one network exchange: streamed in parts as the server computes them
(:func:`pipeline_statements`), or whole as one statement (:data:`SNAPSHOT_QUERY`).
:class:`SnapshotDecoder` decodes either, part by part.

This module is the SQL and its decoding, and needs no driver: the reads are in
:mod:`orchestrator.db.catalog_read` (over psycopg) and :mod:`orchestrator.db.reading`
(in a background thread, through libpq itself when it can).

The tracking table may not exist, and a static query cannot name a table that may be
missing, so its rows are read through ``query_to_xml`` behind a ``CASE`` that only runs it
when the table exists with the columns drizzle gives it.
"""

from __future__ import annotations

import functools
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any

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

_SNAPSHOT_CTES = f"""
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
"""

# The snapshot's values by key, each a SQL expression over the CTEs above.
#
# Each list comes as one JSON array per attribute: a JSON array per catalog row cost the
# server (and the client's decoding) a third more. Tables travel as oids, named client-side
# from 'relations' (repeating each row's schema and table name cost the server as much as
# the rest of the row); indexes, named in 'indexes', are not in it. Constraints and indexes
# give column numbers, not names: resolved from 'columns', which costs the server no lookup
# per constraint or index.
_SNAPSHOT_VALUES: dict[str, str] = {
    "server_version": "current_setting('server_version')",
    "database": "current_database()",
    "schemas": "(SELECT coalesce(json_agg(nspname), '[]') FROM ns)",
    "relations": """(SELECT json_build_array(
                          coalesce(json_agg(nspname), '[]'), coalesce(json_agg(relname), '[]'),
                          coalesce(json_agg(relkind), '[]'), coalesce(json_agg(oid), '[]'))
                  FROM rel WHERE relkind NOT IN ('i', 'I'))""",
    "tracking_present": "(SELECT oid IS NOT NULL FROM tracking)",
    "tracking_elsewhere": """(SELECT coalesce(json_agg(nspname ORDER BY nspname), '[]')
                           FROM rel
                           WHERE relname = %(table)s AND relkind IN ('r', 'p')
                             AND nspname <> %(schema)s)""",
    "tracking_rows": """(
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
    )""",
    "columns": f"""(SELECT json_build_array(
                        coalesce(json_agg(a.attrelid), '[]'), coalesce(json_agg(a.attnum), '[]'),
                        coalesce(json_agg(a.attname), '[]'),
                        coalesce(json_agg(format_type(a.atttypid, a.atttypmod)), '[]'),
                        coalesce(json_agg(a.attnotnull), '[]'),
                        coalesce(json_agg({_DEFAULT_TEXT}), '[]'))
                FROM pg_attribute a JOIN rel ON rel.oid = a.attrelid
                LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                WHERE a.attnum > 0 AND NOT a.attisdropped AND rel.relkind NOT IN ('i', 'I'))""",
    "constraints": """(SELECT json_build_array(
                            coalesce(json_agg(con.conrelid), '[]'),
                            coalesce(json_agg(con.conname), '[]'),
                            coalesce(json_agg(con.contype), '[]'),
                            coalesce(json_agg(con.conkey), '[]'),
                            coalesce(json_agg(con.confrelid), '[]'),
                            coalesce(json_agg(con.confkey), '[]'),
                            coalesce(json_agg(con.confdeltype), '[]'),
                            coalesce(json_agg(con.confupdtype), '[]'))
                    FROM pg_constraint con JOIN rel ON rel.oid = con.conrelid)""",
    "indexes": """(SELECT json_build_array(
                        coalesce(json_agg(rel.nspname), '[]'),
                        coalesce(json_agg(rel.relname), '[]'),
                        coalesce(json_agg(i.indisunique), '[]'),
                        coalesce(json_agg(i.indrelid), '[]'),
                        coalesce(json_agg(i.indkey::int2[]), '[]'))
                FROM pg_index i JOIN rel ON rel.oid = i.indexrelid)""",
    # Functions, except an extension's own (pg_depend, deptype 'e').
    "functions": """(SELECT coalesce(json_agg(DISTINCT jsonb_build_array(ns.nspname, p.proname)),
                                  '[]')
                  FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
                  WHERE NOT EXISTS (SELECT FROM pg_depend d
                                    WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                                      AND d.deptype = 'e'))""",
    "triggers": """(SELECT coalesce(json_agg(json_build_array(t.tgrelid, t.tgname)), '[]')
                 FROM pg_trigger t JOIN rel ON rel.oid = t.tgrelid WHERE NOT t.tgisinternal)""",
    "enums": """(SELECT coalesce(json_agg(json_build_array(ns.nspname, t.typname, e.enumlabel)),
                              '[]')
              FROM pg_type t JOIN ns ON ns.oid = t.typnamespace
              LEFT JOIN pg_enum e ON e.enumtypid = t.oid
              WHERE t.typtype = 'e')""",
}


def _snapshot_query(keys: Iterable[str]) -> str:
    """One statement building a JSON object of the snapshot's values under ``keys``."""
    pairs = ",\n    ".join(f"'{key}', {_SNAPSHOT_VALUES[key]}" for key in keys)
    return f"{_SNAPSHOT_CTES}SELECT json_build_object(\n    {pairs}\n)"


# The whole snapshot, one JSON object, one statement (psycopg parameters: schema, table).
SNAPSHOT_QUERY = _snapshot_query(_SNAPSHOT_VALUES)

# The snapshot in the parts a streamed read sends (see stream_snapshot_parts), in order. Each
# part's decoding needs only the parts before it. The last one is quick to decode, since
# only its decoding is left once the server is done; the tracking rows (XML, the slowest to
# decode per byte) come first.
SNAPSHOT_PARTS: tuple[tuple[str, ...], ...] = (
    ("server_version", "database", "tracking_present", "tracking_elsewhere", "tracking_rows"),
    ("schemas", "relations"),
    ("columns",),
    ("constraints",),
    ("indexes",),
    ("functions", "triggers", "enums"),
)


def _compact(sql: str) -> str:
    """``sql`` with each run of whitespace outside its string literals made one space.

    Libpq sends what it holds as soon as it passes 8 KB, pipeline or not: compacted, the
    part statements leave as one write (a test holds them to it), and the server never
    starts on the first part before the last has arrived. (Our SQL has no comments.)
    """
    pieces = re.split(r"('(?:[^']|'')*')", sql)  # odd pieces: the literals, quotes included
    pieces[::2] = [re.sub(r"\s+", " ", piece) for piece in pieces[::2]]
    return "".join(pieces).strip()


_PART_QUERIES = tuple(_compact(_snapshot_query(keys)) for keys in SNAPSHOT_PARTS)
assert sorted(k for keys in SNAPSHOT_PARTS for k in keys) == sorted(_SNAPSHOT_VALUES)


# What a streamed read sends, in one pipeline: repeatable read gives every part the same
# snapshot of the catalog.
BEGIN_SNAPSHOT = b"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
END_SNAPSHOT = b"COMMIT"


def pipeline_statements(
    quote: Callable[[str], bytes], *, schema: str, table: str, encoding: str = "utf-8"
) -> list[bytes]:
    """What a streamed read sends: BEGIN, a statement per part of :data:`SNAPSHOT_PARTS`,
    COMMIT, in the connection's ``encoding`` (pure). ``quote`` makes a string an SQL
    literal as the connection requires (libpq's ``PQescapeLiteral``, as psycopg's
    client-side binding does), in that encoding.
    """
    params = {"schema": quote(schema).decode(encoding), "table": quote(table).decode(encoding)}
    return [
        BEGIN_SNAPSHOT,
        *((query % params).encode(encoding) for query in _PART_QUERIES),  # "%%" is "%"
        END_SNAPSHOT,
    ]


def unreadable(exc: BaseException) -> DatabaseError:
    """A database error met reading the catalog (psycopg's or libpq's), as
    :class:`DatabaseError` (exit 30); transient when the connection failed (worth a retry)."""
    return DatabaseError(f"cannot read the catalog: {describe(exc)}", transient=is_transient(exc))


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


def snapshot_from_attempts(
    parts: Iterable[tuple[int, str | bytes]], *, schema: str, table: str
) -> CatalogSnapshot:
    """Decode ``(attempt, part)`` pairs, each part decoded as it comes (pure).

    The parts of a read retried after some of them had come are followed by the parts of
    the next attempt, numbered higher: decoding starts over at each new number.
    """
    decoder, decoding = SnapshotDecoder(schema=schema, table=table), None
    for attempt, part in parts:
        if decoding not in (None, attempt):  # a retry's parts: start over
            decoder = SnapshotDecoder(schema=schema, table=table)
        decoding = attempt
        decoder.add(json.loads(part))
    return decoder.snapshot()


def snapshot_from_json(data: Mapping[str, Any], *, schema: str, table: str) -> CatalogSnapshot:
    """Build a snapshot from the whole JSON document of :data:`SNAPSHOT_QUERY` (pure)."""
    decoder = SnapshotDecoder(schema=schema, table=table)
    decoder.add(data)
    return decoder.snapshot()


class SnapshotDecoder:
    """Builds a :class:`CatalogSnapshot` from the snapshot's JSON, whole or part by part.

    :meth:`add` takes the parts in :data:`SNAPSHOT_PARTS` order (a whole document holds
    them all) and decodes each as soon as what it needs has come, so a streamed read is
    decoded while the server computes the next part. :meth:`snapshot` is the result.
    """

    def __init__(self, *, schema: str, table: str) -> None:
        # Imported here: validate starts the catalog read before it imports the history model.
        from orchestrator.drizzle.model import DbObject

        self._schema = schema
        self._table = table
        self._data: dict[str, Any] = {}
        # Each key made a DbObject in C (tuple.__new__ over a plain tuple, not the named
        # tuple's Python constructor): this runs for every object of a large schema, 55,000
        # at bench scale.
        self._object = functools.partial(tuple.__new__, DbObject)
        self._facts: dict[DbObject, Fact] = {}
        self._tracking_rows: tuple[TrackingRow, ...] = ()
        self._relations: dict[int, tuple[str, str]] = {}  # oid -> (schema, name)
        self._column_names: dict[tuple[int, int], str] = {}  # (table oid, attnum) -> name
        self._columns = _Names(self._relations, self._column_names).columns
        # Each step with the keys it reads, in the order they run (and facts are listed).
        self._steps: list[tuple[tuple[str, ...], Callable[[], None]]] = [
            (("tracking_present", "tracking_rows"), self._read_tracking_rows),
            (("schemas", "relations"), self._read_relations),
            (("columns",), self._read_columns),
            (("constraints",), self._read_constraints),
            (("indexes",), self._read_indexes),
            (("functions", "triggers", "enums"), self._read_others),
        ]

    def add(self, part: Mapping[str, Any]) -> None:
        """Take one part (a JSON object holding some of the snapshot's keys) and decode
        every step it completes."""
        self._data.update(part)
        while self._steps and all(key in self._data for key in self._steps[0][0]):
            _, step = self._steps.pop(0)
            step()

    def snapshot(self) -> CatalogSnapshot:
        """The snapshot, once every part has been added (KeyError naming a missing key)."""
        if self._steps:  # the first step still waiting names what is missing
            missing = [key for key in self._steps[0][0] if key not in self._data]
            raise KeyError(f"incomplete catalog snapshot: no {', '.join(missing)}")
        data = self._data
        present = bool(data["tracking_present"])
        return CatalogSnapshot(
            server_version=data["server_version"],
            database=data["database"],
            objects=frozenset(self._facts),
            facts=self._facts,
            tracking_schema=self._schema,
            tracking_table=self._table,
            tracking_present=present,
            tracking_readable=present and data["tracking_rows"] is not None,
            tracking_rows=self._tracking_rows,
            tracking_elsewhere=tuple(data["tracking_elsewhere"]),
        )

    def _add_facts(self, keys: Iterable[tuple[str, str, str, str | None]], values: Any) -> None:
        # Not strict: ``values`` may be an endless repeat(()) for objects without attributes.
        self._facts.update(zip(map(self._object, keys), values, strict=False))

    def _read_tracking_rows(self) -> None:
        xml_rows = self._data["tracking_rows"]
        if xml_rows:
            self._tracking_rows = parse_tracking_xml(xml_rows)

    def _read_relations(self) -> None:
        # Built with zip and map (loops in C) where possible.
        nspnames, relnames, relkinds, oids = self._data["relations"]
        self._relations.update(zip(oids, zip(nspnames, relnames, strict=True), strict=True))
        schemas = self._data["schemas"]
        self._add_facts(zip(repeat("schema"), schemas, schemas, repeat(None)), repeat(()))
        kind = _RELATION_KINDS.get
        kinds = [kind(relkind, "table") for relkind in relkinds]
        self._add_facts(zip(kinds, nspnames, relnames, repeat(None)), repeat(()))

    def _read_columns(self) -> None:
        relids, attnums, attnames, types, not_nulls, defaults = self._data["columns"]
        self._column_names.update(zip(zip(relids, attnums, strict=True), attnames, strict=True))
        owners = list(map(self._relations.__getitem__, relids))  # (schema, table) of each
        normalize = normalize_server_default
        self._add_facts(
            zip(repeat("column"), map(itemgetter(0), owners), attnames, map(itemgetter(1), owners)),
            zip(
                types,
                not_nulls,
                [None if d is None else normalize(d) for d in defaults],
                strict=True,
            ),
        )

    def _read_constraints(self) -> None:
        relations, columns = self._relations, self._columns
        keys: list[tuple[str, str, str, str | None]] = []
        values: list[Fact] = []
        for relid, conname, contype, conkey, ref_oid, ref_keys, on_delete, on_update in zip(
            *self._data["constraints"], strict=True
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
        self._add_facts(keys, values)

    def _read_indexes(self) -> None:
        index_schemas, index_names, uniques, indexed, indkeys = self._data["indexes"]
        self._add_facts(
            zip(repeat("index"), index_schemas, index_names, repeat(None)),
            zip(uniques, map(self._columns, indexed, indkeys), strict=True),
        )

    def _read_others(self) -> None:
        keys: list[tuple[str, str, str, str | None]] = []
        for nspname, proname in self._data["functions"]:
            keys.append(("function", nspname, proname, None))
        for relid, tgname in self._data["triggers"]:
            nspname, relname = self._relations[relid]
            keys.append(("trigger", nspname, tgname, relname))
        for nspname, typname, label in self._data["enums"]:
            keys.append(("enum", nspname, typname, None))
            if label is not None:
                keys.append(("enum_value", nspname, label, typname))
        self._add_facts(keys, repeat(()))


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
