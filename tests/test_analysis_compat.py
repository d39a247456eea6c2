"""Each compatibility rule on small SQL snippets, and the strategy it forces (pure, no DB)."""

from __future__ import annotations

import pytest

from orchestrator.analysis.compatibility import Compat, MigrationCompat, migration_compat
from orchestrator.analysis.effects import analyse_sql
from orchestrator.analysis.strategy import Strategy, choose_strategy
from tests.analysis_helpers import analyse_on_shadow

# An "existing" schema: created by an earlier migration, so running code knows it.
BEFORE = """
CREATE SCHEMA archive;
CREATE TYPE mood AS ENUM ('ok', 'sad');
CREATE TABLE "users" (
  "id" serial PRIMARY KEY NOT NULL,
  "email" text NOT NULL,
  "nick" text,
  "score" integer DEFAULT 0 NOT NULL,
  "legacy" text NOT NULL
);
CREATE UNIQUE INDEX "users_email_idx" ON "users" ("email");
CREATE INDEX "users_nick_idx" ON "users" ("nick");
ALTER TABLE "users" ADD CONSTRAINT "users_email_check" CHECK (email <> '');
"""

S, C, B = Compat.SAFE, Compat.CONDITIONAL, Compat.BREAKS


def verdicts(sql: str) -> tuple[Compat, Compat]:
    effects = analyse_on_shadow(sql, before=BEFORE)
    assert all(s.error is None for s in effects.statements), effects
    result = migration_compat(effects.tag, effects.changes)
    return result.old_code_on_new_schema, result.new_code_on_old_schema


@pytest.mark.parametrize(
    ("sql", "old_on_new", "new_on_old"),
    [
        # new tables are ignored by old code but missing for new code
        ('CREATE TABLE "t" ("id" serial PRIMARY KEY, "v" text NOT NULL)', S, C),
        ("CREATE VIEW v AS SELECT id FROM users", S, C),
        # ... and what is done to such a table in the same migration is part of creating it
        ('CREATE TABLE "t" ("id" int); ALTER TABLE "t" ADD COLUMN "x" text NOT NULL', S, C),
        ('CREATE TABLE "t" ("id" int); CREATE UNIQUE INDEX "t_i" ON "t" ("id")', S, C),
        # a new nullable column is harmless for old code but breaks new code's INSERTs
        ('ALTER TABLE "users" ADD COLUMN "bio" text', S, B),
        ('ALTER TABLE "users" ADD COLUMN IF NOT EXISTS "bio" text', S, B),
        ("ALTER TABLE users ADD COLUMN level int NOT NULL DEFAULT 1", S, B),
        # NOT NULL without a default breaks old INSERTs (and new code before it exists)
        ("ALTER TABLE users ADD COLUMN level int NOT NULL", B, B),
        # dropped or renamed columns and tables break old code
        ("ALTER TABLE users DROP COLUMN nick", B, S),
        ("ALTER TABLE users DROP COLUMN legacy", B, C),  # still NOT NULL without default
        ("DROP TABLE users", B, S),
        ("DROP VIEW IF EXISTS some_view", B, S),
        ("ALTER TABLE users RENAME COLUMN nick TO handle", B, B),
        ("ALTER TABLE users RENAME TO members", B, B),
        ("ALTER TABLE users SET SCHEMA archive", B, B),
        # a type change may break both
        ("ALTER TABLE users ALTER COLUMN score TYPE bigint", C, C),
        # tightening rules old code may violate
        ("ALTER TABLE users ALTER COLUMN nick SET NOT NULL", C, S),
        ("ALTER TABLE users ADD CONSTRAINT nick_len CHECK (length(nick) < 9)", C, S),
        ("CREATE UNIQUE INDEX users_nick_uq ON users (nick)", C, S),
        ("ALTER TABLE users ALTER COLUMN score DROP DEFAULT", C, S),
        ("UPDATE users SET nick = lower(nick)", C, S),
        # loosening rules new code may rely on
        ("ALTER TABLE users ALTER COLUMN email DROP NOT NULL", S, C),
        ("ALTER TABLE users ALTER COLUMN nick SET DEFAULT 'anon'", S, C),
        ("ALTER TABLE users DROP CONSTRAINT users_email_check", S, C),
        ("ALTER TYPE mood ADD VALUE 'glad'", S, C),
        # unique indexes dropped: ON CONFLICT in old code fails
        ("DROP INDEX users_email_idx", C, S),
        # invisible to application queries
        ("CREATE INDEX users_score_idx ON users (score)", S, S),
        ("DROP INDEX users_nick_idx", S, S),
        ("CREATE TYPE colour AS ENUM ('red')", S, S),
        ("CREATE SCHEMA IF NOT EXISTS audit", S, S),
        ("SET lock_timeout = '5s'", S, S),
        ("COMMENT ON TABLE users IS 'people'", S, S),
        # renaming an enum value breaks code using either label
        ("ALTER TYPE mood RENAME VALUE 'sad' TO 'blue'", B, B),
        # what the analysis does not understand is flagged for a human
        ("DO $$ BEGIN PERFORM 1; END $$", C, C),
        ("ALTER TABLE users ENABLE ROW LEVEL SECURITY", C, C),
    ],
)
def test_compatibility_rule(sql: str, old_on_new: Compat, new_on_old: Compat) -> None:
    assert verdicts(sql) == (old_on_new, new_on_old)


def test_worst_change_wins_and_reasons_name_the_objects() -> None:
    effects = analyse_on_shadow(
        'CREATE TABLE "t" ("id" int); ALTER TABLE users ADD COLUMN bio text;',
        before=BEFORE,
    )
    result = migration_compat(effects.tag, effects.changes)
    assert (result.old_code_on_new_schema, result.new_code_on_old_schema) == (S, B)
    assert result.overall is B
    assert any("public.users.bio" in r for r in result.new_reasons)
    assert any("table public.t" in r for r in result.new_reasons)
    assert result.old_reasons == ()


def test_unparseable_migration_is_conditional_both_ways() -> None:
    effects = analyse_sql("CREATE TABL oops (id int)")
    assert effects.statements[0].error is not None
    result = migration_compat(effects.tag, effects.changes, unparsed=True)
    assert (result.old_code_on_new_schema, result.new_code_on_old_schema) == (C, C)


def compat_of(tag: str, sql: str) -> MigrationCompat:
    effects = analyse_on_shadow(sql, tag=tag, before=BEFORE)
    return migration_compat(tag, effects.changes)


@pytest.mark.parametrize(
    ("migrations", "strategy", "forced_by"),
    [
        # new code needs the new column: migrate first
        (
            [("a", "CREATE TABLE t (id int)"), ("b", "ALTER TABLE users ADD COLUMN x text")],
            Strategy.MIGRATIONS_FIRST,
            ("b",),
        ),
        # old code needs the column the migration drops: code first
        ([("a", "ALTER TABLE users DROP COLUMN nick")], Strategy.CODE_FIRST, ("a",)),
        # both at once: no order works
        (
            [
                ("a", "ALTER TABLE users DROP COLUMN nick"),
                ("b", "ALTER TABLE users ADD COLUMN x text"),
            ],
            Strategy.EXPAND_CONTRACT,
            ("a", "b"),
        ),
        (
            [("a", "ALTER TABLE users RENAME COLUMN nick TO handle")],
            Strategy.EXPAND_CONTRACT,
            ("a",),
        ),
        # only conditionals: they decide the same way
        ([("a", "CREATE TABLE t (id int)")], Strategy.MIGRATIONS_FIRST, ("a",)),
        ([("a", "ALTER TABLE users ALTER COLUMN nick SET NOT NULL")], Strategy.CODE_FIRST, ("a",)),
        # nothing forces an order: the default, forced by nothing
        ([("a", "CREATE INDEX i ON users (score)")], Strategy.MIGRATIONS_FIRST, ()),
    ],
)
def test_strategy(
    migrations: list[tuple[str, str]], strategy: Strategy, forced_by: tuple[str, ...]
) -> None:
    decision = choose_strategy([compat_of(tag, sql) for tag, sql in migrations])
    assert decision.strategy is strategy
    assert decision.forced_by == forced_by
    for tag in forced_by:
        assert tag in decision.reason
