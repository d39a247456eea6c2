"""The history model and the whole-schema judgement, without I/O.

Each migration's effect is what it changed relative to the state just before it; the
database is judged against the state after the tracked prefix. These tests build small
histories with the shapes drizzle-kit really writes and check the verdicts on databases
described as facts (the catalog snapshot's form).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import pytest
from pglast.parser import parse_sql_json

from orchestrator.db.catalog import CatalogSnapshot, TrackingRow
from orchestrator.drizzle.facts import (
    NEXTVAL,
    UNKNOWN,
    Fact,
    format_type,
    matches,
    normalize_default_json,
    normalize_default_sql,
    quote_ident,
)
from orchestrator.drizzle.journal import BREAKPOINT, Journal, Migration, hash_sql
from orchestrator.drizzle.model import DbObject, ObjectModel, build_object_model
from orchestrator.validation import MigrationState, Verdict, validate
from orchestrator.validation.matching import out_of_order_differences

A, P = MigrationState.APPLIED, MigrationState.PENDING
U, H = MigrationState.UNTRACKED_PRESENT, MigrationState.PARTIALLY_PRESENT


def column(table: str, name: str) -> DbObject:
    return DbObject("column", "public", name, table)


def constraint(table: str, name: str) -> DbObject:
    return DbObject("constraint", "public", name, table)


def history(*migrations: str) -> Journal:
    """A journal of migrations given as SQL with drizzle's breakpoints."""
    entries = []
    for idx, text in enumerate(migrations):
        entries.append(
            Migration(
                idx=idx,
                tag=f"{idx:04d}_m",
                when=1_000 + idx,
                breakpoints=True,
                sql=text,
                hash=hash_sql(text),
            )
        )
    return Journal(origin="test", dialect="postgresql", migrations=tuple(entries))


def model_of(journal: Journal) -> ObjectModel:
    return build_object_model([(m.tag, m.statements) for m in journal.migrations])


def snapshot(
    facts: Mapping[DbObject, Fact], journal: Journal, tracked: Sequence[int]
) -> CatalogSnapshot:
    """A database holding ``facts`` whose tracking table lists migrations ``tracked``."""
    rows = tuple(
        TrackingRow(n + 1, journal.migrations[i].hash, journal.migrations[i].when)
        for n, i in enumerate(tracked)
    )
    return CatalogSnapshot(
        server_version="15",
        database="db",
        objects=frozenset(facts),
        tracking_schema="drizzle",
        tracking_table="__drizzle_migrations",
        tracking_present=True,
        tracking_readable=True,
        tracking_rows=rows,
        tracking_elsewhere=(),
        facts=dict(facts),
    )


def after(journal: Journal, count: int) -> dict[DbObject, Fact]:
    """The modelled schema after the journal's first ``count`` migrations."""
    return model_of(journal).state_after([m.tag for m in journal.migrations[:count]])


def judge(journal: Journal, facts: Mapping[DbObject, Fact], tracked: Sequence[int]) -> object:
    return validate(journal, model_of(journal), snapshot(facts, journal, tracked))


# -- facts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "mods", "array", "printed"),
    [
        (["pg_catalog", "varchar"], [255], False, "character varying(255)"),
        (["pg_catalog", "varchar"], [], False, "character varying"),
        (["text"], [], True, "text[]"),
        (["pg_catalog", "timestamptz"], [3], False, "timestamp(3) with time zone"),
        (["pg_catalog", "timestamp"], [], False, "timestamp without time zone"),
        (["pg_catalog", "numeric"], [10, 2], False, "numeric(10,2)"),
        (["pg_catalog", "int4"], [], False, "integer"),
        (["bigserial"], [], False, "bigint"),
        (["pg_catalog", "bpchar"], [1], False, "character(1)"),
        (["vector"], [1536], False, UNKNOWN),  # an extension's type: not modelled
        (["myschema", "thing"], [], False, UNKNOWN),
    ],
)
def test_types_print_as_format_type_does(
    names: list[str], mods: list[object], array: bool, printed: object
) -> None:
    assert format_type(names, mods, array) == printed


def test_enum_types_are_qualified_outside_public_and_quoted_when_needed() -> None:
    assert format_type(["status"], [], False, enum_schema="public") == "status"
    assert format_type(["Status"], [], True, enum_schema="app") == 'app."Status"[]'
    assert quote_ident("user") == '"user"'  # a reserved word
    assert quote_ident("user_role") == "user_role"


@pytest.mark.parametrize(
    ("database", "model_sql"),
    [
        ("'-1'::integer", "-1"),
        ("'active'::character varying", "'active'"),
        ('\'{"b": 1, "a": [1, 2]}\'::jsonb', '\'{"a":[1,2],"b":1}\'::jsonb'),
        ("now()", "now()"),
        ("CURRENT_TIMESTAMP", "CURRENT_TIMESTAMP"),
        ("'{}'::text[]", "'{}'"),
        ("false", "false"),
        ("nextval('t_id_seq'::regclass)", "nextval('other_seq')"),
        ("(now() + '1 day'::interval)", "now() + interval '1 day'"),
    ],
)
def test_defaults_compare_by_meaning_not_spelling(database: str, model_sql: str) -> None:
    assert normalize_default_sql(database) == normalize_default_sql(model_sql)


@pytest.mark.parametrize(
    ("database", "model_sql"),
    [("'active'::text", "'inactive'"), ("now()", "CURRENT_DATE"), ("0", "1")],
)
def test_different_defaults_differ(database: str, model_sql: str) -> None:
    assert normalize_default_sql(database) != normalize_default_sql(model_sql)


def test_unknown_attributes_match_anything_but_absence() -> None:
    assert matches(("text", UNKNOWN, None), ("text", True, None))
    assert not matches(("text", UNKNOWN, None), ("integer", True, None))
    assert not matches(("text", UNKNOWN, None), None)
    assert matches(None, None)


# -- effects ----------------------------------------------------------------------------------

CREATE_USERS = 'CREATE TABLE "users" ("id" serial PRIMARY KEY NOT NULL, "email" varchar(255));'
CREATE_POSTS = (
    'CREATE TABLE "posts" ("id" serial PRIMARY KEY, "author_id" integer NOT NULL);'
    f"\n{BREAKPOINT}\n"
    'ALTER TABLE "posts" ADD CONSTRAINT "posts_author_id_users_id_fk" FOREIGN KEY ("author_id") '
    'REFERENCES "public"."users"("id") ON DELETE no action ON UPDATE no action;'
)
CASCADE_FK = (
    'ALTER TABLE "posts" DROP CONSTRAINT "posts_author_id_users_id_fk";'
    f"\n{BREAKPOINT}\n"
    'ALTER TABLE "posts" ADD CONSTRAINT "posts_author_id_users_id_fk" FOREIGN KEY ("author_id") '
    'REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;'
)
FK = constraint("posts", "posts_author_id_users_id_fk")


def test_a_column_is_modelled_with_type_nullability_and_default() -> None:
    journal = history(CREATE_USERS)
    effect = model_of(journal).effects["0000_m"]
    assert effect[column("users", "id")] == (None, ("integer", True, NEXTVAL))
    assert effect[column("users", "email")] == (None, ("character varying(255)", False, None))
    assert effect[constraint("users", "users_pkey")] == (None, ("p", ("id",), "", (), "", ""))


def test_a_foreign_key_recreated_under_its_name_changes_its_action() -> None:
    journal = history(CREATE_USERS, CREATE_POSTS, CASCADE_FK)
    before, after_ = model_of(journal).effects["0002_m"][FK]
    assert before is not None and after_ is not None
    assert (before[4], after_[4]) == ("a", "c")


def test_restating_an_existing_object_with_if_not_exists_has_no_effect() -> None:
    restate = 'CREATE TABLE IF NOT EXISTS "users" ("id" integer, "other" text);'
    journal = history(CREATE_USERS, restate)
    assert model_of(journal).effects["0001_m"] == {}


def test_column_alterations_are_effects() -> None:
    alter = (
        'ALTER TABLE "users" ALTER COLUMN "email" SET DATA TYPE text;'
        f"\n{BREAKPOINT}\n"
        'ALTER TABLE "users" ALTER COLUMN "email" SET NOT NULL;'
        f"\n{BREAKPOINT}\n"
        'ALTER TABLE "users" ALTER COLUMN "email" SET DEFAULT \'none\';'
    )
    journal = history(CREATE_USERS, alter)
    effect = model_of(journal).effects["0001_m"]
    assert effect[column("users", "email")] == (
        ("character varying(255)", False, None),
        ("text", True, "none"),
    )


def test_a_dropped_then_re_added_column_is_two_effects() -> None:
    drop = 'ALTER TABLE "users" DROP COLUMN "email";'
    add = 'ALTER TABLE "users" ADD COLUMN "email" text NOT NULL;'
    model = model_of(history(CREATE_USERS, drop, add))
    assert model.effects["0001_m"][column("users", "email")][1] is None
    assert model.effects["0002_m"][column("users", "email")] == (None, ("text", True, None))


def test_enum_values_added_and_enums_created_in_do_blocks() -> None:
    create = (
        "DO $$ BEGIN CREATE TYPE \"public\".\"mood\" AS ENUM('sad', 'ok'); "
        "EXCEPTION WHEN duplicate_object THEN null; END $$;"
    )
    add = 'ALTER TYPE "public"."mood" ADD VALUE \'happy\';'
    model = model_of(history(create, add))
    assert DbObject("enum", "public", "mood") in model.effects["0000_m"]
    assert model.effects["0001_m"] == {
        DbObject("enum_value", "public", "happy", "mood"): (None, ())
    }


# -- the whole-schema judgement --------------------------------------------------------------


def test_every_clean_prefix_needs_migration_even_when_later_migrations_reuse_names() -> None:
    drop = 'ALTER TABLE "users" DROP COLUMN "email";'
    add = 'ALTER TABLE "users" ADD COLUMN "email" text NOT NULL;'
    journal = history(CREATE_USERS, CREATE_POSTS, CASCADE_FK, drop, add)
    for k in range(len(journal.migrations) + 1):
        report = judge(journal, after(journal, k), list(range(k)))
        expected = Verdict.SAFE if k == len(journal.migrations) else Verdict.NEEDS_MIGRATION
        assert report.status is expected, (k, report.findings)
        assert [m.state for m in report.migrations] == [A] * k + [P] * (5 - k)


def test_a_pending_migration_is_present_only_when_its_effect_is() -> None:
    journal = history(CREATE_USERS, CREATE_POSTS, CASCADE_FK)
    # Same-named FK exists (with the old action): 0002 is simply pending.
    assert judge(journal, after(journal, 2), [0, 1]).status is Verdict.NEEDS_MIGRATION
    # The FK already has the new action but 0002 is untracked: applied by hand.
    report = judge(journal, after(journal, 3), [0, 1])
    assert [m.state for m in report.migrations] == [A, A, U]
    assert report.matched_prefix == 3


def test_hand_changes_to_an_applied_migration_are_drift() -> None:
    journal = history(CREATE_USERS, CREATE_POSTS)
    facts = after(journal, 2)
    facts[column("users", "email")] = ("text", False, None)  # retyped by hand
    report = judge(journal, facts, [0, 1])
    assert report.status is Verdict.PARTIAL_MIGRATION
    assert [m.state for m in report.migrations] == [H, A]
    assert report.migrations[0].missing_objects == (str(column("users", "email")),)


def test_half_a_migration_is_partial() -> None:
    journal = history(CREATE_USERS, CREATE_POSTS)
    facts = after(journal, 2)
    del facts[FK]  # the table came, its foreign key did not
    report = judge(journal, facts, [0])
    assert report.status is Verdict.PARTIAL_MIGRATION
    assert report.migrations[1].state is H
    assert str(FK) in report.migrations[1].missing_objects


def test_a_skipped_migration_applied_last_must_build_the_same_schema() -> None:
    drop = 'ALTER TABLE "users" DROP COLUMN "email";'
    add_back = 'ALTER TABLE "users" ADD COLUMN "email" integer;'
    journal = history(CREATE_USERS, drop, add_back)
    model = model_of(journal)
    tracked = frozenset({journal.migrations[0].hash, journal.migrations[2].hash})
    # 0001 was skipped: applying it after 0002 drops the column 0002 re-added.
    differences = out_of_order_differences(journal, model, tracked)
    assert [d.obj for d in differences] == [column("users", "email")]
    independent = history(CREATE_USERS, CREATE_POSTS, 'CREATE TABLE "tags" ("id" integer);')
    tracked = frozenset({independent.migrations[0].hash, independent.migrations[2].hash})
    assert out_of_order_differences(independent, model_of(independent), tracked) == []


def test_functions_and_triggers_are_objects_even_inside_do_blocks() -> None:
    function = (
        'DO $$ BEGIN CREATE FUNCTION "public"."slugify"(t text) RETURNS text LANGUAGE sql '
        "AS 'select lower(t)'; EXCEPTION WHEN duplicate_function THEN null; END $$;"
    )
    trigger = (
        'CREATE OR REPLACE FUNCTION "touch"() RETURNS trigger LANGUAGE plpgsql AS $$ '
        "BEGIN RETURN NEW; END $$;"
        f"\n{BREAKPOINT}\n"
        'CREATE TRIGGER "users_touch" BEFORE UPDATE ON "users" FOR EACH ROW '
        'EXECUTE FUNCTION "touch"();'
    )
    dropped = 'DROP TRIGGER IF EXISTS "users_touch" ON "users";'
    model = model_of(history(CREATE_USERS, function, trigger, dropped))
    assert DbObject("function", "public", "slugify") in model.effects["0001_m"]
    assert set(model.effects["0002_m"]) == {
        DbObject("function", "public", "touch"),
        DbObject("trigger", "public", "users_touch", "users"),
    }
    assert model.effects["0003_m"] == {
        DbObject("trigger", "public", "users_touch", "users"): ((), None)
    }


@pytest.mark.parametrize("text", ["now()", "gen_random_uuid()", "0", "'x'::text", "true"])
def test_the_fast_paths_give_what_the_general_walk_gives(text: str) -> None:
    from orchestrator.drizzle.facts import _canonical, _dumps

    tree = json.loads(parse_sql_json(f"SELECT {text}"))
    expr = tree["stmts"][0]["stmt"]["SelectStmt"]["targetList"][0]["ResTarget"]["val"]
    canonical = _canonical(expr)
    general = canonical if isinstance(canonical, str) else _dumps(canonical)
    assert normalize_default_json(expr) == general
