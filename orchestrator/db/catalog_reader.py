"""THE catalog reader: one statement, one round trip, one consistent view of a database.

Production and the shadow database are read by the same query, printed with the same
settings (:data:`PRINTED_WITH`), so a difference between their snapshots is a difference
between their schemas and never between two readers or two sessions. The query is a single
``SELECT`` (one snapshot of the database, read-only by construction). Its first row is a
JSON document of the server, the tracking table's rows, the tables' storage and the
extensions' schemas; then one row per object: its key, its properties as one JSON text (see
:mod:`orchestrator.catalog.snapshot`), who owns it and its own catalog entry (when asked),
its comment (added to the properties where there is one). The properties stay text:
snapshots compare by string equality, and only the objects that differ are ever decoded.

Left out on purpose: PostgreSQL's own schemas, objects that belong to an extension (they
come with ``CREATE EXTENSION``), owners and privileges (they differ between a shadow server
and production), and drizzle's tracking table itself (its rows are read as data).

The tracking table may not exist, and a static query cannot name a table that may be
missing, so its rows are read through ``query_to_xml`` behind a ``CASE`` that only runs it
when the table exists with the columns drizzle gives it.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Collection, Mapping
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from orchestrator.catalog import CatalogSnapshot, TrackingRow, properties
from orchestrator.db.blockers import describe_all, find_blockers
from orchestrator.db.connect import database_error, milliseconds
from orchestrator.errors import DatabaseError

__all__ = ["CATALOG_QUERY", "PRINTED_WITH", "read_catalog"]

# What PostgreSQL prints a catalog by, set for each read alone, so that every session prints
# alike whatever its own settings, its database's or a migration's. With pg_catalog alone on
# the search_path, every other name prints qualified.
PRINTED_WITH = (
    "SELECT set_config('TimeZone', 'UTC', true), set_config('DateStyle', 'ISO, MDY', true), "
    "set_config('IntervalStyle', 'postgres', true), set_config('search_path', 'pg_catalog', true)"
)

_OBJECTS = r"""
    -- schemas
    SELECT 'schema ' || n.nspname,
           json_build_object(),
           'n' || n.oid, 'n' || n.oid, obj_description(n.oid, 'pg_namespace')
    FROM ns n
    -- the tracking table's own schema, when it holds nothing else
    WHERE NOT (n.nspname = %(schema)s
               AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.relnamespace = n.oid
                                 AND left(c.relname, length(%(table)s)) <> %(table)s))
  UNION ALL
    -- tables, partitioned and foreign tables
    SELECT 'table ' || r.name,
           json_build_object(
             'kind', CASE r.relkind WHEN 'p' THEN 'partitioned table'
                                    WHEN 'f' THEN 'foreign table' ELSE 'table' END,
             'unlogged', r.relpersistence = 'u',
             'row_level_security', r.relrowsecurity,
             'force_row_level_security', r.relforcerowsecurity,
             'partition_key', CASE WHEN r.relkind = 'p' THEN pg_get_partkeydef(r.oid) END,
             'partition_of', CASE WHEN r.relispartition THEN inh.parents ->> 0 END,
             'partition_bound', pg_get_expr(r.relpartbound, r.oid),
             'inherits', CASE WHEN NOT r.relispartition THEN inh.parents END),
           'c' || r.oid, 'c' || r.oid, r.description
    FROM rel r
    LEFT JOIN (SELECT i.inhrelid,
                      json_agg(pn.nspname || '.' || pc.relname ORDER BY i.inhseqno) AS parents
               FROM pg_inherits i JOIN pg_class pc ON pc.oid = i.inhparent
               JOIN pg_namespace pn ON pn.oid = pc.relnamespace
               GROUP BY i.inhrelid) inh ON inh.inhrelid = r.oid
    WHERE r.relkind IN ('r', 'p', 'f')
  UNION ALL
    -- views and materialized views
    SELECT CASE r.relkind WHEN 'v' THEN 'view ' ELSE 'materialized view ' END || r.name,
           json_build_object('definition', pg_get_viewdef(r.oid)),
           'c' || r.oid, 'c' || r.oid, r.description
    FROM rel r
    WHERE r.relkind IN ('v', 'm')
  UNION ALL
    -- sequences
    SELECT 'sequence ' || r.name,
           json_build_object(
             'type', format_type(s.seqtypid, NULL), 'start', s.seqstart,
             'increment', s.seqincrement, 'min', s.seqmin, 'max', s.seqmax,
             'cache', s.seqcache, 'cycle', s.seqcycle,
             'owned_by', owner.name),
           'c' || r.oid, 'c' || r.oid, r.description
    FROM rel r JOIN pg_sequence s ON s.seqrelid = r.oid
    -- the column a serial or identity sequence belongs to (a sequence has one at most)
    LEFT JOIN (SELECT d.objid, tn.nspname || '.' || tc.relname || '.' || a.attname AS name
               FROM pg_depend d JOIN pg_class tc ON tc.oid = d.refobjid
               JOIN pg_namespace tn ON tn.oid = tc.relnamespace
               JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
               WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                 AND d.deptype IN ('a', 'i')) owner ON owner.objid = r.oid
    WHERE r.relkind = 'S'  -- said, or the owner is looked up for every relation
  UNION ALL
    -- columns of tables (a view's columns follow from its definition)
    SELECT 'column ' || r.name || '.' || a.attname,
           json_build_object(
             'type', format_type(a.atttypid, a.atttypmod),
             'not_null', a.attnotnull,
             -- a default names no column: printed without opening its table
             'default', CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, 0) END,
             'generated', CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END,
             'identity', CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END,
             'collation', CASE WHEN a.attcollation <> t.typcollation
                               THEN (SELECT collname FROM pg_collation
                                     WHERE oid = a.attcollation) END),
           'c' || r.oid, 'c' || r.oid, dsc.description
    FROM rel r
    JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
    JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    LEFT JOIN pg_description dsc ON dsc.objoid = r.oid AND dsc.classoid = 'pg_class'::regclass
                                AND dsc.objsubid = a.attnum
    WHERE r.relkind IN ('r', 'p', 'f')
  UNION ALL
    -- constraints of tables (NOT NULL is the column's not_null)
    SELECT 'constraint ' || r.name || '.' || c.conname,
           json_build_object('definition', pg_get_constraintdef(c.oid)),
           'c' || r.oid, 'o' || c.oid, dsc.description
    FROM pg_constraint c JOIN rel r ON r.oid = c.conrelid
    LEFT JOIN pg_description dsc ON dsc.objoid = c.oid
                                AND dsc.classoid = 'pg_constraint'::regclass AND dsc.objsubid = 0
    WHERE c.contype <> 'n'
  UNION ALL
    -- indexes; the index of a key is printed by its constraint (PostgreSQL allows it no
    -- other definition) but for its storage options: printing it twice would double the
    -- cost of the read
    SELECT 'index ' || r.name,
           json_build_object('table', t.name, 'unique', i.indisunique,
                              'definition', CASE WHEN k.conname IS NULL
                                                 THEN pg_get_indexdef(r.oid) END,
                              'constraint', k.conname,
                              'options', CASE WHEN k.conname IS NOT NULL THEN r.reloptions END,
                              'valid', i.indisvalid),
           'c' || i.indrelid, 'c' || r.oid, r.description
    FROM rel r JOIN pg_index i ON i.indexrelid = r.oid
    LEFT JOIN rel t ON t.oid = i.indrelid
    LEFT JOIN pg_constraint k ON k.conindid = r.oid AND k.conrelid = i.indrelid
                             AND k.contype IN ('p', 'u', 'x')
  UNION ALL
    -- enums (their labels in order), domains and composite types
    SELECT CASE ty.typtype WHEN 'e' THEN 'enum ' WHEN 'd' THEN 'domain ' ELSE 'type ' END
             || ty.name,
           CASE ty.typtype
           WHEN 'e' THEN json_build_object(
             'labels', (SELECT json_agg(e.enumlabel ORDER BY e.enumsortorder)
                        FROM pg_enum e WHERE e.enumtypid = ty.oid))
           WHEN 'd' THEN json_build_object(
             'type', format_type(ty.typbasetype, ty.typtypmod),
             'not_null', ty.typnotnull, 'default', ty.typdefault,
             'constraints', (SELECT json_agg(c.conname || ' ' || pg_get_constraintdef(c.oid)
                                              ORDER BY c.conname)
                             FROM pg_constraint c WHERE c.contypid = ty.oid AND c.contype <> 'n'))
           ELSE json_build_object(
             'attributes', (SELECT json_agg(a.attname || ' '
                                             || format_type(a.atttypid, a.atttypmod)
                                             ORDER BY a.attnum)
                            FROM pg_attribute a WHERE a.attrelid = ty.typrelid AND a.attnum > 0
                              AND NOT a.attisdropped)) END,
           't' || ty.oid, 't' || ty.oid, obj_description(ty.oid, 'pg_type')
    FROM ty WHERE ty.typtype IN ('e', 'd')
      OR (ty.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = ty.typrelid) = 'c')
  UNION ALL
    -- functions and procedures (an aggregate's definition is its kind: no source to print)
    SELECT 'function ' || n.nspname || '.' || p.proname
             || '(' || pg_get_function_identity_arguments(p.oid) || ')',
           json_build_object(
             'definition', CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid)
                                ELSE p.prokind::text END),
           'p' || p.oid, 'p' || p.oid, obj_description(p.oid, 'pg_proc')
    FROM pg_proc p JOIN ns n ON n.oid = p.pronamespace
    WHERE p.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_proc'::regclass)
      AND (%(owners)s::text[] IS NULL OR p.oid IN (SELECT oid FROM owned WHERE kind = 'p'))
  UNION ALL
    -- triggers (not the ones PostgreSQL makes for foreign keys)
    SELECT 'trigger ' || r.name || '.' || t.tgname,
           json_build_object('definition', pg_get_triggerdef(t.oid),
                              'enabled', t.tgenabled::text),
           'c' || r.oid, 'g' || t.oid, obj_description(t.oid, 'pg_trigger')
    FROM pg_trigger t JOIN rel r ON r.oid = t.tgrelid
    WHERE NOT t.tgisinternal
  UNION ALL
    -- row-level security policies
    SELECT 'policy ' || r.name || '.' || p.polname,
           json_build_object(
             'command', p.polcmd::text, 'permissive', p.polpermissive,
             'roles', (SELECT json_agg(CASE WHEN role = 0 THEN 'public'
                                             ELSE (SELECT rolname FROM pg_roles
                                                   WHERE oid = role) END
                                        ORDER BY 1)
                       FROM unnest(p.polroles) AS role),
             'using', pg_get_expr(p.polqual, p.polrelid),
             'with_check', pg_get_expr(p.polwithcheck, p.polrelid)),
           'c' || r.oid, 'y' || p.oid, obj_description(p.oid, 'pg_policy')
    FROM pg_policy p JOIN rel r ON r.oid = p.polrelid
  UNION ALL
    -- rules written by hand (a view's own _RETURN rule is its definition)
    SELECT 'rule ' || r.name || '.' || w.rulename,
           json_build_object('definition', pg_get_ruledef(w.oid)),
           'c' || r.oid, 'w' || w.oid, NULL
    FROM pg_rewrite w JOIN rel r ON r.oid = w.ev_class
    WHERE w.rulename <> '_RETURN'
  UNION ALL
    -- extensions: present or not (their version is the server's business)
    SELECT 'extension ' || e.extname, json_build_object(),
           'e' || e.oid, 'e' || e.oid, NULL
    FROM pg_extension e
"""

CATALOG_QUERY = rf"""
WITH ext AS (  -- by the extension's catalog: pg_depend has no index on deptype alone
    SELECT classid, objid FROM pg_depend
    WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
), owned AS (  -- the owners asked for, as (kind, oid): objects are looked up by oid
    SELECT left(o, 1) AS kind, substr(o, 2)::oid AS oid FROM unnest(%(owners)s::text[]) AS o
), tracking AS (
    SELECT to_regclass(format('%%I.%%I', %(schema)s::text, %(table)s::text)) AS oid
), ns AS (
    SELECT oid, nspname FROM pg_namespace
    WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
      AND nspname NOT LIKE 'pg\_temp\_%%' AND nspname NOT LIKE 'pg\_toast\_temp\_%%'
      AND oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_namespace'::regclass)
), rel AS (
    SELECT c.oid, n.nspname || '.' || c.relname AS name, c.relkind,
           c.relpersistence, c.relrowsecurity, c.relforcerowsecurity, c.relispartition,
           c.relpartbound, c.reloptions, c.relfilenode, c.reltuples, dsc.description
    FROM pg_class c JOIN ns n ON n.oid = c.relnamespace
    LEFT JOIN pg_description dsc ON dsc.objoid = c.oid AND dsc.classoid = 'pg_class'::regclass
                                AND dsc.objsubid = 0
    WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S', 'i', 'I')
      AND c.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_class'::regclass)
      -- drizzle's tracking table, its id sequence and its primary key are not the schema
      AND c.oid IS DISTINCT FROM (SELECT oid FROM tracking)
      AND c.oid NOT IN (SELECT d.objid FROM pg_depend d, tracking t
                        WHERE d.classid = 'pg_class'::regclass
                          AND d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid)
      AND c.oid NOT IN (SELECT i.indexrelid FROM pg_index i, tracking t WHERE i.indrelid = t.oid)
      AND (%(owners)s::text[] IS NULL OR c.oid IN (SELECT oid FROM owned WHERE kind = 'c')
           OR c.oid IN (SELECT i.indexrelid FROM pg_index i JOIN owned o ON o.oid = i.indrelid
                        WHERE o.kind = 'c'))
), ty AS (
    SELECT t.oid, n.nspname || '.' || t.typname AS name, t.typtype, t.typbasetype, t.typtypmod,
           t.typnotnull, t.typdefault, t.typrelid
    FROM pg_type t JOIN ns n ON n.oid = t.typnamespace
    WHERE t.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_type'::regclass)
      AND (%(owners)s::text[] IS NULL OR t.oid IN (SELECT oid FROM owned WHERE kind = 't'))
)
-- The first row: the server, the tracking table and the tables' storage, one JSON document.
SELECT NULL, json_build_object(
    'server_version', current_setting('server_version'),
    'server_version_num', current_setting('server_version_num')::int,
    'database', current_database(),
    'storage', (SELECT coalesce(json_object_agg(name, relfilenode::text::int8), '{{}}')
                FROM rel WHERE relkind IN ('r', 'm')),
    'row_estimates', (SELECT coalesce(json_object_agg(name, reltuples::bigint), '{{}}')
                      FROM rel WHERE relkind IN ('r', 'p', 'm', 'f')),
    'extensions', (SELECT coalesce(json_object_agg(e.extname, n.nspname), '{{}}')
                   FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace),
    'tracking_present', (SELECT oid IS NOT NULL FROM tracking),
    'tracking_elsewhere', (
        SELECT coalesce(json_agg(n.nspname ORDER BY n.nspname), '[]')
        FROM pg_class c JOIN ns n ON n.oid = c.relnamespace
        WHERE c.relname = %(table)s AND c.relkind IN ('r', 'p') AND n.nspname <> %(schema)s),
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
        FROM tracking WHERE tracking.oid IS NOT NULL)
)::text, NULL, NULL, NULL
UNION ALL
-- Then one row per object: its key, its properties (JSON text), its owner, itself and its
-- comment: a property most objects lack, added to the others by the reader where there is
-- one, rather than printed as null for every object.
SELECT o.key, o.props::text, CASE WHEN %(refs)s THEN o.owner END,
       CASE WHEN %(refs)s THEN o.self END, o.comment
FROM ({_OBJECTS}) AS o(key, props, owner, self, comment)
WHERE %(owners)s::text[] IS NULL OR o.owner = ANY(%(owners)s::text[])
"""


def read_catalog(
    conn: psycopg.Connection[Any],
    *,
    schema: str,
    table: str,
    owners: Collection[str] | None = None,
    refs: bool = False,
    lock_timeout: float | None = None,
) -> CatalogSnapshot:
    """One snapshot of the database ``conn`` is connected to (a single statement).

    ``owners``: only the objects of these owners (see :attr:`CatalogSnapshot.refs`), for
    the shadow replay's reads after each migration; None reads everything. ``refs``: say
    who owns each object too (the replay needs it; a comparison does not).
    ``lock_timeout``: read in a read-only transaction of its own (autocommit connection)
    that waits at most this many seconds for a table lock; None: in the caller's transaction.
    Errors become :class:`DatabaseError` (exit 30), transient when the connection failed.
    """
    parameters = dict(schema=schema, table=table, owners=None, refs=refs)
    try:
        if owners is not None:
            rows = _read_owned(conn, {**parameters, "owners": sorted(owners)})
        else:
            rows = _printed(conn, CATALOG_QUERY, parameters, lock_timeout)
    except psycopg.Error as exc:
        if isinstance(exc, psycopg.errors.LockNotAvailable) and lock_timeout is not None:
            held = describe_all(find_blockers(conn, None, "ACCESS SHARE"))
            raise DatabaseError(
                f"cannot read the catalog: a table it must open stayed locked for "
                f"{lock_timeout:g}s ({held or 'by a session that has ended since'}); "
                "try again once that session is done"
            ) from exc
        raise database_error("cannot read the catalog", exc) from exc
    document = json.loads(next(props for key, props, *_ in rows if key is None))
    objects = {key: props for key, props, *_ in rows if key is not None}
    owned = {key: (owner, own) for key, _, owner, own, _ in rows if key is not None} if refs else {}
    for key, _, _, _, comment in rows:
        if comment is not None:  # read apart from the other properties: see the query
            objects[key] = json.dumps({**properties(objects[key]), "comment": comment})
    rows_xml = document.get("tracking_rows")
    return CatalogSnapshot(
        server_version=str(document["server_version"]).split()[0],
        server_major=int(document["server_version_num"]) // 10000,
        database=str(document["database"]),
        objects=objects,
        refs=owned,
        tracking_schema=schema,
        tracking_table=table,
        tracking_present=bool(document["tracking_present"]),
        tracking_readable=rows_xml is not None,
        tracking_rows=parse_tracking_xml(rows_xml) if rows_xml is not None else (),
        tracking_elsewhere=tuple(document["tracking_elsewhere"]),
        zone=conn.info.parameter_status("TimeZone") or "UTC",
        extensions=document["extensions"],
        storage=document["storage"],
        row_estimates=document["row_estimates"],
    )


def _printed(
    conn: psycopg.Connection[Any],
    statement: str,
    parameters: Mapping[str, object],
    lock_timeout: float | None = None,
) -> list[tuple[Any, ...]]:
    """The rows of ``statement``, printed with :data:`PRINTED_WITH` set for it alone, in one
    message (a pooler in transaction mode refuses settings given at connection time): a
    transaction of its own on an autocommit connection (with a ``lock_timeout``, read-only
    and its lock waits bounded: printing an index, a view or a trigger opens its table), else
    a savepoint of the caller's transaction, rolled back after it to give back its settings."""
    before, after = [], []
    if not conn.autocommit or conn.info.transaction_status != TransactionStatus.IDLE:
        before, after = ["SAVEPOINT catalog"], ["ROLLBACK TO catalog; RELEASE catalog"]
    elif lock_timeout is not None:
        before = ["SET TRANSACTION READ ONLY", "SET LOCAL lock_timeout = %(lock_timeout)s"]
        parameters = {**parameters, "lock_timeout": milliseconds(lock_timeout)}
    cursor = psycopg.ClientCursor(conn)  # parameters bound here: several statements, one message
    cursor.execute("; ".join([*before, PRINTED_WITH, statement, *after]), parameters)
    for _ in range(len(before) + 1):  # past the results before the statement's
        cursor.nextset()
    return cursor.fetchall()


def _read_owned(
    conn: psycopg.Connection[Any], parameters: Mapping[str, object]
) -> list[tuple[Any, ...]]:
    """A read of some owners' objects (a replay's, after each migration), from a plan made
    once per connection (autocommit) and kept by the server: on a small schema, planning
    the statement costs as much as running it. One generic plan serves any owners; a read
    of everything plans for itself, as its plan differs."""
    execute = "EXECUTE orchestrator_owned_read(%(schema)s, %(table)s, %(owners)s, %(refs)s)"
    try:
        return _printed(conn, execute, parameters)
    except psycopg.errors.InvalidSqlStatementName:  # the first on this connection
        placeholders = {"schema": "$1", "table": "$2", "owners": "$3", "refs": "$4"}
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute(
            "PREPARE orchestrator_owned_read(text, text, text[], boolean) AS "
            + CATALOG_QUERY % placeholders
        )
        return _printed(conn, execute, parameters)


def parse_tracking_xml(document: str) -> tuple[TrackingRow, ...]:
    """The tracking rows ``query_to_xml`` printed (``<row><id>..</id>...</row>`` in a table)."""
    root = ET.fromstring(document)
    return tuple(
        TrackingRow(
            id=_int(row.findtext("id")),
            hash=row.findtext("hash"),
            created_at=_int(row.findtext("created_at")),
        )
        for row in root.iter("row")
    )


def _int(text: str | None) -> int | None:
    return int(text) if text not in (None, "") else None
