"""The objects each migration leaves behind, derived from its SQL (pure: no database)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from orchestrator.drizzle.model import (
    DbObject,
    ObjectModel,
    build_object_model,
    truncate_identifier,
)
from tests.conftest import DRIZZLE_FIXTURE

FIXTURE = DRIZZLE_FIXTURE / "migrations"
BREAKPOINT = "--> statement-breakpoint"


def table(name: str, schema: str = "public") -> DbObject:
    return DbObject("table", schema, name)


def column(parent: str, name: str, schema: str = "public") -> DbObject:
    return DbObject("column", schema, name, parent)


def index(name: str, schema: str = "public") -> DbObject:
    return DbObject("index", schema, name)


def constraint(parent: str, name: str, schema: str = "public") -> DbObject:
    return DbObject("constraint", schema, name, parent)


def enum(name: str, schema: str = "public") -> DbObject:
    return DbObject("enum", schema, name)


def enum_value(parent: str, label: str, schema: str = "public") -> DbObject:
    return DbObject("enum_value", schema, label, parent)


def model(*files: str) -> ObjectModel:
    """Migrations m0, m1, ... from SQL texts, split the way drizzle-kit writes them."""
    return build_object_model([(f"m{i}", text.split(BREAKPOINT)) for i, text in enumerate(files)])


@pytest.fixture(scope="module")
def fixture_model() -> ObjectModel:
    journal = json.loads((FIXTURE / "meta" / "_journal.json").read_text())
    migrations: list[tuple[str, Sequence[str]]] = [
        (entry["tag"], (FIXTURE / f"{entry['tag']}.sql").read_text().split(BREAKPOINT))
        for entry in journal["entries"]
    ]
    return build_object_model(migrations)


# -- the real fixture folder ----------------------------------------------------------------


def test_fixture_parses_completely_and_every_tag_has_evidence(fixture_model: ObjectModel) -> None:
    assert dict(fixture_model.unparsed) == {}
    assert len(fixture_model.expected) == 12
    assert all(fixture_model.expected.values())


def test_fixture_0009_tables_columns_and_indexes(fixture_model: ObjectModel) -> None:
    objects = fixture_model.expected["0009_fat_kulan_gath"]
    columns = {
        "app_settings": ["key", "value", "updated_at"],
        "case_queue_snapshots": [
            "id",
            "snapshot_at",
            "assignment_group",
            "open_cases",
            "unassigned_cases",
            "oldest_case_age_minutes",
        ],
        "catalog_redirect_log": [
            "id",
            "case_number",
            "client_id",
            "catalog_item",
            "redirected_at",
            "confidence",
        ],
        "client_settings": [
            "id",
            "client_id",
            "client_name",
            "catalog_redirect_enabled",
            "settings",
            "updated_at",
        ],
    }
    assert {o for o in objects if o.kind == "table"} == {table(t) for t in columns}
    assert {o for o in objects if o.kind == "column"} == {
        column(t, c) for t, names in columns.items() for c in names
    }
    assert {o for o in objects if o.kind == "index"} == {
        index("idx_cqs_group_time"),
        index("idx_crl_case"),
        index("uq_client_settings_client"),
    }
    # Inline PRIMARY KEY gets PostgreSQL's generated name.
    assert {o for o in objects if o.kind == "constraint"} == {
        constraint(t, f"{t}_pkey") for t in columns
    }


def test_fixture_0010_has_the_twenty_columns(fixture_model: ObjectModel) -> None:
    objects = fixture_model.expected["0010_new_colleen_wing"]
    cmdb_columns = {o.name for o in objects if o.kind == "column"}
    assert len(cmdb_columns) == 20
    assert {o.parent for o in objects if o.kind == "column"} == {"cmdb_reconciliation_results"}
    assert {"id", "case_number", "reconciliation_status", "metadata", "updated_at"} <= cmdb_columns
    assert table("cmdb_reconciliation_results") in objects
    assert {index("idx_cmdb_case_number"), index("idx_cmdb_status")} <= objects


def test_fixture_0011_add_column_if_not_exists(fixture_model: ObjectModel) -> None:
    assert fixture_model.expected["0011_cute_skin"] == {
        column(t, c)
        for t in ("case_classification_results", "case_classifications")
        for c in ("service_offering", "application_service")
    }


def test_fixture_0004_foreign_key(fixture_model: ObjectModel) -> None:
    fk = constraint(
        "case_escalations", "case_escalations_classification_id_case_classifications_id_fk"
    )
    assert fk in fixture_model.expected["0004_case_escalations"]


def test_fixture_0005_enum_values_and_column(fixture_model: ObjectModel) -> None:
    assert fixture_model.expected["0005_case_priority"] == {
        enum("case_priority"),
        *(enum_value("case_priority", p) for p in ("P1", "P2", "P3", "P4")),
        column("case_classifications", "priority"),
    }


def test_str_is_readable() -> None:
    assert str(column("case_classifications", "service_offering")) == (
        "column public.case_classifications.service_offering"
    )
    assert str(table("app_settings")) == "table public.app_settings"
    assert str(index("idx_crl_case")) == "index public.idx_crl_case"
    assert str(DbObject("schema", "audit", "audit")) == "schema audit"


# -- drops ----------------------------------------------------------------------------------


def test_drop_table_in_later_migration_removes_its_evidence() -> None:
    result = model(
        'CREATE TABLE "a" ("id" serial PRIMARY KEY, "x" text);'
        + BREAKPOINT
        + 'CREATE INDEX "a_x" ON "a" ("x");',
        'CREATE TABLE "b" ("id" int);' + BREAKPOINT + 'ALTER TABLE "a" ADD COLUMN "y" int;',
        'DROP TABLE IF EXISTS "a" CASCADE;',
    )
    assert result.expected["m0"] == frozenset()
    assert result.expected["m1"] == {table("b"), column("b", "id")}
    assert result.expected["m2"] == frozenset()


def test_drop_column_takes_its_indexes_and_constraints_along() -> None:
    result = model(
        'CREATE TABLE "t" ("a" int, "b" int, "c" int, CONSTRAINT "t_ab" UNIQUE ("a", "b"));'
        + BREAKPOINT
        + 'CREATE INDEX "t_b" ON "t" ("b");'
        + BREAKPOINT
        + 'CREATE INDEX "t_c" ON "t" ("c");',
        'ALTER TABLE "t" DROP COLUMN "b";',
    )
    assert result.expected["m0"] == {
        table("t"),
        column("t", "a"),
        column("t", "c"),
        index("t_c"),
    }


def test_drop_constraint_index_type_view_and_schema() -> None:
    result = model(
        'CREATE SCHEMA "audit";'
        + BREAKPOINT
        + 'CREATE TABLE "audit"."log" ("id" int);'
        + BREAKPOINT
        + "CREATE TYPE \"mood\" AS ENUM ('a', 'b');"
        + BREAKPOINT
        + 'CREATE TABLE "t" ("id" int CONSTRAINT "t_id_check" CHECK ("id" > 0), "m" "mood");'
        + BREAKPOINT
        + 'CREATE INDEX "t_id" ON "t" ("id");'
        + BREAKPOINT
        + 'CREATE VIEW "v" AS SELECT "id" FROM "t";',
        'ALTER TABLE "t" DROP CONSTRAINT "t_id_check";'
        + BREAKPOINT
        + 'DROP INDEX IF EXISTS "t_id";'
        + BREAKPOINT
        + 'DROP VIEW "v";'
        + BREAKPOINT
        + 'DROP TYPE "public"."mood" CASCADE;'
        + BREAKPOINT
        + 'DROP SCHEMA IF EXISTS "audit" CASCADE;',
    )
    # DROP TYPE ... CASCADE drops the column of that type too, as PostgreSQL does.
    assert result.expected["m0"] == {table("t"), column("t", "id")}
    assert result.expected["m1"] == frozenset()


def test_drop_type_without_cascade_after_column_retyped_keeps_the_column() -> None:
    # drizzle-kit's way of changing an enum: retype to text, drop, recreate, retype back.
    result = model(
        "CREATE TYPE \"public\".\"s\" AS ENUM('a', 'b');"
        + BREAKPOINT
        + 'CREATE TABLE "t" ("st" "s");',
        'ALTER TABLE "t" ALTER COLUMN "st" SET DATA TYPE text;'
        + BREAKPOINT
        + 'DROP TYPE "public"."s";'
        + BREAKPOINT
        + "CREATE TYPE \"public\".\"s\" AS ENUM('a', 'c');"
        + BREAKPOINT
        + 'ALTER TABLE "t" ALTER COLUMN "st" SET DATA TYPE "public"."s" USING "st"::"public"."s";',
    )
    assert result.expected["m0"] == {table("t"), column("t", "st")}
    assert result.expected["m1"] == {enum("s"), enum_value("s", "a"), enum_value("s", "c")}


def test_drop_then_recreate_moves_evidence_to_the_recreating_migration() -> None:
    result = model(
        'CREATE TABLE "t" ("a" int);',
        'DROP TABLE "t";' + BREAKPOINT + 'CREATE TABLE "t" ("b" int);',
    )
    assert result.expected["m0"] == frozenset()
    assert result.expected["m1"] == {table("t"), column("t", "b")}


def test_drop_table_cascade_removes_foreign_keys_pointing_at_it() -> None:
    result = model(
        'CREATE TABLE "p" ("id" int PRIMARY KEY);'
        + BREAKPOINT
        + 'CREATE TABLE "c" ("pid" int);'
        + BREAKPOINT
        + 'ALTER TABLE "c" ADD CONSTRAINT "c_p_fk" FOREIGN KEY ("pid") REFERENCES "p"("id");',
        'DROP TABLE "p" CASCADE;',
    )
    assert result.expected["m0"] == {table("c"), column("c", "pid")}


# -- renames --------------------------------------------------------------------------------


def test_table_rename_moves_evidence_to_the_renaming_migration() -> None:
    result = model(
        'CREATE TABLE "old" ("id" serial PRIMARY KEY, "v" text);'
        + BREAKPOINT
        + 'CREATE INDEX "old_v" ON "old" ("v");',
        'ALTER TABLE "old" ADD COLUMN "w" int;',
        'ALTER TABLE "old" RENAME TO "new";',
    )
    # The index keeps its name and schema, so it still proves m0; the pkey keeps its name
    # (PostgreSQL does not rename it) but now lives on "new".
    assert result.expected["m0"] == {index("old_v")}
    assert result.expected["m1"] == frozenset()
    assert result.expected["m2"] == {
        table("new"),
        column("new", "id"),
        column("new", "v"),
        column("new", "w"),
        constraint("new", "old_pkey"),
    }


def test_column_rename_moves_the_column_only() -> None:
    result = model(
        'CREATE TABLE "t" ("a" int, "b" int);',
        'ALTER TABLE "t" RENAME COLUMN "b" TO "c";',
    )
    assert result.expected["m0"] == {table("t"), column("t", "a")}
    assert result.expected["m1"] == {column("t", "c")}


def test_renames_of_index_constraint_enum_and_value() -> None:
    result = model(
        'CREATE TABLE "t" ("id" int, CONSTRAINT "t_u" UNIQUE ("id"));'
        + BREAKPOINT
        + 'CREATE INDEX "t_i" ON "t" ("id");'
        + BREAKPOINT
        + "CREATE TYPE \"e\" AS ENUM ('x', 'y');",
        'ALTER INDEX "t_i" RENAME TO "t_j";'
        + BREAKPOINT
        + 'ALTER TABLE "t" RENAME CONSTRAINT "t_u" TO "t_unique";'
        + BREAKPOINT
        + "ALTER TYPE \"e\" RENAME VALUE 'x' TO 'z';",
        'ALTER TYPE "public"."e" RENAME TO "f";' + BREAKPOINT + "ALTER TYPE f ADD VALUE 'w';",
    )
    assert result.expected["m0"] == {table("t"), column("t", "id")}
    assert result.expected["m1"] == {index("t_j"), constraint("t", "t_unique")}
    assert result.expected["m2"] == {
        enum("f"),
        enum_value("f", "z"),
        enum_value("f", "y"),
        enum_value("f", "w"),
    }


def test_set_schema_moves_table_members_and_indexes() -> None:
    result = model(
        'CREATE SCHEMA IF NOT EXISTS "archive";'
        + BREAKPOINT
        + 'CREATE TABLE "t" ("id" int PRIMARY KEY);'
        + BREAKPOINT
        + 'CREATE INDEX "t_id" ON "t" ("id");',
        'ALTER TABLE "t" SET SCHEMA "archive";',
    )
    assert result.expected["m0"] == {DbObject("schema", "archive", "archive")}
    assert result.expected["m1"] == {
        table("t", "archive"),
        column("t", "id", "archive"),
        constraint("t", "t_pkey", "archive"),
        index("t_id", "archive"),
    }


def test_rename_of_an_object_from_outside_the_folder_is_still_evidence() -> None:
    result = model('ALTER TABLE "legacy" RENAME COLUMN "a" TO "b";')
    assert result.expected["m0"] == {column("legacy", "b")}


# -- DO blocks, parse failures, identifiers --------------------------------------------------


def test_do_block_foreign_key_is_analysed() -> None:
    result = model(
        'CREATE TABLE "a" ("id" serial PRIMARY KEY NOT NULL, "b" integer);'
        + BREAKPOINT
        + 'CREATE TABLE "b" ("id" serial PRIMARY KEY NOT NULL);'
        + BREAKPOINT
        + """
DO $$ BEGIN
 ALTER TABLE "a" ADD CONSTRAINT "a_b_fk" FOREIGN KEY ("b") REFERENCES "public"."b"("id") \
ON DELETE no action ON UPDATE no action;
EXCEPTION
 WHEN duplicate_object THEN null;
END $$;
""",
        'DO $$ BEGIN\n IF true THEN\n  ALTER TABLE "b" ADD COLUMN "c" int;\n END IF;\nEND $$;',
    )
    assert result.unparsed == {}
    assert constraint("a", "a_b_fk") in result.expected["m0"]
    assert result.expected["m1"] == {column("b", "c")}


def test_unparseable_sql_lands_in_unparsed_without_raising() -> None:
    result = model(
        'CREATE TABLE "ok" ("id" int);',
        'CREATE TABLE "x" ("id" int);' + BREAKPOINT + "CREATE TABEL oops ();",
        "DO $$ BEGIN ALTER TABLE ok ADD COLUMN; END $$;",
    )
    assert result.expected["m0"] == {table("ok"), column("ok", "id")}
    assert result.expected["m1"] == frozenset()
    assert result.expected["m2"] == frozenset()
    assert set(result.unparsed) == {"m1", "m2"}
    assert result.unparsed["m1"].startswith("statement 2:")
    assert "TABEL" in result.unparsed["m1"]
    assert "DO block" in result.unparsed["m2"]
    assert all("\n" not in reason for reason in result.unparsed.values())


def test_quoted_mixed_case_keeps_case_and_unquoted_folds() -> None:
    result = model(
        'CREATE TABLE "UserProfiles" ("DisplayName" text, Email text);'
        + BREAKPOINT
        + 'CREATE INDEX "IdxName" ON "UserProfiles" ("DisplayName");'
        + BREAKPOINT
        + "CREATE TABLE MixedCase (Id int PRIMARY KEY);",
    )
    assert result.expected["m0"] == {
        table("UserProfiles"),
        column("UserProfiles", "DisplayName"),
        column("UserProfiles", "email"),
        index("IdxName"),
        table("mixedcase"),
        column("mixedcase", "id"),
        constraint("mixedcase", "mixedcase_pkey"),
    }


def test_identifiers_are_truncated_to_63_bytes() -> None:
    long_table = "t" * 70
    long_column = "é" * 40  # 80 bytes: PostgreSQL keeps 31 whole characters (62 bytes)
    result = model(f'CREATE TABLE "{long_table}" ("{long_column}" int PRIMARY KEY);')
    objects = result.expected["m0"]
    assert table("t" * 63) in objects
    assert column("t" * 63, "é" * 31) in objects
    # makeObjectName shortens the table part so "<table>_pkey" fits in 63 bytes.
    assert constraint("t" * 63, "t" * 58 + "_pkey") in objects
    assert truncate_identifier("a" * 64) == "a" * 63
    assert truncate_identifier("x" * 62 + "é") == "x" * 62


def test_if_not_exists_variants_are_no_ops_on_existing_objects() -> None:
    result = model(
        'CREATE TABLE "t" ("a" int);'
        + BREAKPOINT
        + 'CREATE INDEX "t_a" ON "t" ("a");'
        + BREAKPOINT
        + "CREATE TYPE \"e\" AS ENUM ('x');"
        + BREAKPOINT
        + 'CREATE SCHEMA "s";',
        'CREATE TABLE IF NOT EXISTS "t" ("a" int, "z" int);'
        + BREAKPOINT
        + 'ALTER TABLE "t" ADD COLUMN IF NOT EXISTS "a" int;'
        + BREAKPOINT
        + 'CREATE INDEX IF NOT EXISTS "t_a" ON "t" ("a");'
        + BREAKPOINT
        + 'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "t_a2" ON "t" ("a");'
        + BREAKPOINT
        + "ALTER TYPE \"e\" ADD VALUE IF NOT EXISTS 'x';"
        + BREAKPOINT
        + "ALTER TYPE \"e\" ADD VALUE IF NOT EXISTS 'y' AFTER 'x';"
        + BREAKPOINT
        + 'CREATE SCHEMA IF NOT EXISTS "s";'
        + BREAKPOINT
        + 'CREATE SCHEMA IF NOT EXISTS "public";',
    )
    assert result.expected["m0"] == {
        table("t"),
        column("t", "a"),
        index("t_a"),
        enum("e"),
        enum_value("e", "x"),
        DbObject("schema", "s", "s"),
    }
    assert result.expected["m1"] == {index("t_a2"), enum_value("e", "y")}


def test_statements_without_evidence_do_not_break_parsing() -> None:
    result = model(
        'CREATE EXTENSION IF NOT EXISTS "pgcrypto";'
        + BREAKPOINT
        + 'CREATE SEQUENCE "s";'
        + BREAKPOINT
        + 'CREATE TABLE "t" ("a" int);'
        + BREAKPOINT
        + 'INSERT INTO "t" VALUES (1);'
        + BREAKPOINT
        + 'UPDATE "t" SET "a" = 2;'
        + BREAKPOINT
        + 'ALTER TABLE "t" ALTER COLUMN "a" SET NOT NULL;'
        + BREAKPOINT
        + 'ALTER TABLE "t" ALTER COLUMN "a" SET DEFAULT 0;'
        + BREAKPOINT
        + "COMMENT ON TABLE \"t\" IS 'x';"
        + BREAKPOINT
        + 'GRANT SELECT ON "t" TO PUBLIC;'
        + BREAKPOINT
        + "",
    )
    assert result.unparsed == {}
    assert result.expected["m0"] == {table("t"), column("t", "a")}


def test_named_constraints_and_unnamed_ones() -> None:
    result = model(
        'CREATE SCHEMA "analytics";'
        + BREAKPOINT
        + 'CREATE TABLE "t" ("a" int, "b" int REFERENCES "t" ("c"), "c" int UNIQUE,'
        ' CONSTRAINT "t_pk" PRIMARY KEY ("a", "b"), CONSTRAINT "t_c_uq" UNIQUE ("c"),'
        ' CHECK ("a" > 0));'
        + BREAKPOINT
        + 'CREATE INDEX ON "t" ("c");'
        + BREAKPOINT
        + 'CREATE MATERIALIZED VIEW "mv" AS SELECT "a" FROM "t";'
        + BREAKPOINT
        + 'CREATE OR REPLACE VIEW "analytics"."v" AS SELECT * FROM "t";',
    )
    assert result.expected["m0"] == {
        DbObject("schema", "analytics", "analytics"),
        table("t"),
        column("t", "a"),
        column("t", "b"),
        column("t", "c"),
        constraint("t", "t_pk"),
        constraint("t", "t_c_uq"),
        DbObject("view", "public", "mv"),
        DbObject("view", "analytics", "v"),
    }


def test_every_tag_appears_even_without_evidence() -> None:
    result = build_object_model([("a", ["SELECT 1;"]), ("b", []), ("c", ["-- only a comment"])])
    assert dict(result.expected) == {"a": frozenset(), "b": frozenset(), "c": frozenset()}
    assert dict(result.unparsed) == {}


def test_do_block_exception_handlers_and_temporary_tables_leave_no_evidence() -> None:
    result = model(
        'CREATE TABLE "t" ("a" int);'
        + BREAKPOINT
        + 'DO $$ BEGIN\n ALTER TABLE "t" ADD COLUMN "b" int;\nEXCEPTION\n'
        ' WHEN duplicate_column THEN ALTER TABLE "t" ADD COLUMN "fallback" int;\nEND $$;'
        + BREAKPOINT
        + 'CREATE TEMPORARY TABLE "scratch" ("x" int);',
    )
    assert result.expected["m0"] == {table("t"), column("t", "a"), column("t", "b")}
