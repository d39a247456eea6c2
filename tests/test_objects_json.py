"""pgjson reads libpg_query's JSON tree exactly as pglast.ast reads its own (pure: no database)."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

import pglast
import pytest
from pglast import ast

from orchestrator.drizzle import pgjson
from orchestrator.drizzle.model import build_object_model

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "playbooks" / "examples" / "migrations"
BREAKPOINT = "--> statement-breakpoint"

# Statement kinds the object model replays, and the awkward corners of the JSON encoding:
# omitted defaults (false, 0, zero enums, NULL), nested List nodes, NULL list elements,
# renamed fields (def_), A_Const's value union, empty strings.
CORPUS = [
    'CREATE TABLE "s"."t" ("id" serial PRIMARY KEY NOT NULL, "n" text DEFAULT \'\' NOT NULL)',
    "CREATE TEMP TABLE tmp (a int)",
    "CREATE TABLE IF NOT EXISTS c (LIKE p INCLUDING ALL, x int CHECK (x > 0)) INHERITS (p)",
    "CREATE TABLE part PARTITION OF p FOR VALUES FROM (1) TO (10)",
    "CREATE TABLE e (r tsrange, EXCLUDE USING gist (r WITH &&) WHERE (r IS NOT NULL))",
    "CREATE UNLOGGED TABLE u AS SELECT a, b AS bee, 1 FROM t WITH NO DATA",
    "CREATE MATERIALIZED VIEW mv AS SELECT t.* FROM t JOIN u USING (id)",
    "CREATE OR REPLACE VIEW v (x) AS WITH q AS (SELECT 1 AS k) SELECT k, '' AS e FROM q",
    "CREATE VIEW w AS SELECT NULL, 1.5, true, B'101', -1, (ARRAY[1, 2])[1] FROM ONLY t",
    "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON t USING btree (lower(a) DESC, b)"
    " INCLUDE (c) WHERE d",
    'CREATE INDEX "i2" ON "t" USING btree ("c_00","extra") NULLS NOT DISTINCT',
    "CREATE TYPE \"public\".\"mood\" AS ENUM('sad', 'ok', '')",
    "ALTER TYPE mood ADD VALUE IF NOT EXISTS 'happy' BEFORE 'ok'",
    "ALTER TYPE mood ADD VALUE ''",
    "ALTER TYPE mood RENAME VALUE '' TO 'blank'",
    "ALTER TYPE mood ADD VALUE 'x' AFTER ''",
    "ALTER TYPE mood RENAME TO feeling",
    "ALTER TYPE mood SET SCHEMA other",
    'ALTER TABLE "t" ADD COLUMN IF NOT EXISTS "f" boolean DEFAULT false',
    'ALTER TABLE ONLY "t" ADD CONSTRAINT "fk" FOREIGN KEY ("a") REFERENCES "public"."u"("id")'
    " ON DELETE cascade ON UPDATE no action",
    "ALTER TABLE t DROP COLUMN IF EXISTS a CASCADE, DROP CONSTRAINT k",
    "ALTER TABLE t ALTER COLUMN a SET DATA TYPE mood USING a::mood",
    "ALTER TABLE t ADD CONSTRAINT pk PRIMARY KEY USING INDEX i",
    "ALTER TABLE IF EXISTS t RENAME COLUMN a TO b",
    "ALTER TABLE t RENAME CONSTRAINT k TO k2",
    "ALTER INDEX i RENAME TO j",
    "ALTER SCHEMA s RENAME TO s2",
    "ALTER TABLE t SET SCHEMA s",
    "ALTER VIEW IF EXISTS v SET SCHEMA s",
    "DROP TABLE IF EXISTS a, s.b CASCADE",
    "DROP TYPE mood",
    "DROP SCHEMA s RESTRICT",
    "DROP INDEX CONCURRENTLY i",
    "DROP MATERIALIZED VIEW mv",
    "CREATE SCHEMA IF NOT EXISTS AUTHORIZATION joe",
    "CREATE SCHEMA s CREATE TABLE t (a int) CREATE VIEW v AS SELECT a FROM t",
    "DO $$ BEGIN ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES u(id);"
    " EXCEPTION WHEN duplicate_object THEN null; END $$",
    "DO LANGUAGE plpgsql $$ BEGIN EXECUTE 'CREATE TABLE d (x int)'; END $$",
    "COMMENT ON TABLE t IS 'x'",
    "INSERT INTO t (a) VALUES (1), (DEFAULT) ON CONFLICT (a) DO UPDATE SET a = EXCLUDED.a",
    "SELECT * FROM t WHERE a IN (1, 2) AND b BETWEEN 1 AND 2 ORDER BY 1 NULLS FIRST",
    "",
    "-- only a comment",
]


def example_statements() -> list[str]:
    texts = [p.read_text(encoding="utf-8") for p in sorted(EXAMPLES.glob("*.sql"))]
    return [s for text in texts for s in text.split(BREAKPOINT)]


def assert_same(pglast_value: Any, json_value: Any, path: str = "") -> None:
    """Every attribute pglast has, read through pgjson, holds the same value."""
    if isinstance(pglast_value, ast.Node):
        assert isinstance(json_value, pgjson.Node), path
        assert json_value.tag == type(pglast_value).__name__, path
        for name in pglast_value.__slots__:
            assert_same(getattr(pglast_value, name), getattr(json_value, name), f"{path}.{name}")
    elif isinstance(pglast_value, tuple):
        assert isinstance(json_value, tuple), path
        assert len(json_value) == len(pglast_value), path
        for number, (a, b) in enumerate(zip(pglast_value, json_value, strict=True)):
            assert_same(a, b, f"{path}[{number}]")
    elif isinstance(pglast_value, enum.Enum):
        assert json_value == pglast_value.name, path
    else:
        assert (json_value, type(json_value)) == (pglast_value, type(pglast_value)), path


@pytest.mark.parametrize("sql", CORPUS + example_statements())
def test_reads_like_pglast(sql: str) -> None:
    expected = tuple(raw.stmt for raw in pglast.parse_sql(sql))
    assert_same(expected, pgjson.parse_sql(sql))


def test_walk_visits_every_node_pglast_has() -> None:
    sql = CORPUS[7] + ";" + CORPUS[4]
    expected = [
        type(n).__name__ for n in _pglast_walk(tuple(r.stmt for r in pglast.parse_sql(sql)))
    ]
    assert [n.tag for n in pgjson.walk(pgjson.parse_sql(sql))] == expected
    assert "RangeVar" in expected and "ColumnRef" in expected


def _pglast_walk(node: Any) -> list[ast.Node]:
    if isinstance(node, ast.Node):
        found = [node]
        for name in node.__slots__:
            found += _pglast_walk(getattr(node, name))
        return found
    if isinstance(node, tuple):
        return [n for item in node for n in _pglast_walk(item)]
    return []


def test_unknown_attribute_and_bad_sql_fail_like_pglast() -> None:
    (statement,) = pgjson.parse_sql("DROP TABLE t")
    with pytest.raises(AttributeError):
        _ = statement.no_such_field
    with pytest.raises(pglast.parser.ParseError) as json_error:
        pgjson.parse_sql("CREATE TABLE (")
    with pytest.raises(pglast.parser.ParseError) as pglast_error:
        pglast.parse_sql("CREATE TABLE (")
    assert str(json_error.value) == str(pglast_error.value)


def test_empty_enum_labels_are_not_mistaken_for_absent_ones() -> None:
    # The JSON drops "" like NULL: ADD VALUE '' must not read as "None", nor RENAME VALUE ''
    # as ADD VALUE.
    create = ("m0", ["CREATE TYPE mood AS ENUM ('sad')"])
    add_empty = ("m1", ["ALTER TYPE mood ADD VALUE ''"])
    rename_empty = ("m2", ["ALTER TYPE mood RENAME VALUE '' TO 'blank'"])
    added = build_object_model([create, add_empty])
    assert {str(o) for o in added.expected["m1"]} == {"enum_value public.mood."}
    renamed = build_object_model([create, add_empty, rename_empty])
    assert renamed.expected["m1"] == frozenset()
    assert {str(o) for o in renamed.expected["m2"]} == {"enum_value public.mood.blank"}
