"""CREATE TABLE / ADD COLUMN / CREATE INDEX ... IF NOT EXISTS of an object the replayed history
already holds is a no-op: not a new object, not a missing one for old or new code, not a
table creation. What exists before a migration is what the shadow built."""

from __future__ import annotations

from orchestrator.analysis.compatibility import Compat, migration_compat
from orchestrator.analysis.effects import analyse_migrations, analyse_sql
from orchestrator.analysis.lint import lint_migration
from orchestrator.analysis.markdown import objects_summary
from orchestrator.analysis.plan import plan_migration
from orchestrator.analysis.risk import RiskLevel
from orchestrator.analysis.typechange import ColumnType
from orchestrator.drizzle.journal import BREAKPOINT
from tests.analysis_helpers import analyse_on_shadow, journal_of, replayed

BEFORE = """
CREATE TABLE "users" ("id" serial PRIMARY KEY NOT NULL, "email" text NOT NULL, "bio" text);
CREATE UNIQUE INDEX "users_email_idx" ON "users" ("email");
"""

S, C, B = Compat.SAFE, Compat.CONDITIONAL, Compat.BREAKS


def verdicts(sql: str) -> tuple[Compat, Compat]:
    effects = analyse_on_shadow(sql, before=BEFORE)
    result = migration_compat(effects.tag, effects.changes)
    return result.old_code_on_new_schema, result.new_code_on_old_schema


def test_restated_table_is_not_created() -> None:
    sql = 'CREATE TABLE IF NOT EXISTS "users" ("id" serial PRIMARY KEY NOT NULL, "x" text)'
    effects = analyse_on_shadow(sql, before=BEFORE)
    [change] = effects.changes
    assert (change.kind, change.action, change.restates) == ("no_op", "none", "create_table")
    assert change.target == "table public.users"
    assert verdicts(sql) == (S, S)  # was (safe, conditional): "table is missing"
    planned = plan_migration(effects)
    assert planned.risk is RiskLevel.LOW
    assert planned.reasons == ("changes nothing that running code depends on",)
    assert [o.action for o in planned.objects] == ["none"]
    assert objects_summary(planned) == "nothing"
    assert lint_migration(effects) == []


def test_restated_table_keeps_the_history_s_columns() -> None:
    journal = journal_of(
        ("0000", 'CREATE TABLE "users" ("id" int NOT NULL, "email" varchar(40))'),
        ("0001", 'CREATE TABLE IF NOT EXISTS "users" ("id" bigint, "name" text)'),
        ("0002", 'ALTER TABLE "users" ALTER COLUMN "id" TYPE int8'),
    )
    folder = analyse_migrations(
        [(m.tag, m.statements) for m in journal.migrations], replayed(journal)
    )
    assert folder.by_tag("0001").catalog == ()  # PostgreSQL skipped it: nothing changed
    [retype] = folder.by_tag("0002").changes
    assert retype.old_type == ColumnType("int4", ())  # 0000's, not the restatement's bigint


def test_restated_column_breaks_nobody() -> None:
    sql = 'ALTER TABLE "users" ADD COLUMN IF NOT EXISTS "bio" text'
    assert verdicts(sql) == (S, S)  # was (safe, breaks): "does not exist for new code"
    planned = plan_migration(analyse_on_shadow(sql, before=BEFORE))
    # it still takes the table's ACCESS EXCLUSIVE lock before PostgreSQL skips it
    assert planned.risk is RiskLevel.MEDIUM
    assert planned.risk_reasons == ("locks existing table public.users",)
    assert [f.rule for f in planned.lint] == ["require-lock-timeout"]
    # a restated NOT NULL column without a default is no error either: nothing is added
    sql = "SET lock_timeout = '1s'; ALTER TABLE users ADD COLUMN IF NOT EXISTS email text NOT NULL"
    assert lint_migration(analyse_on_shadow(sql, before=BEFORE)) == []
    assert verdicts(sql) == (S, S)


def test_restated_index_is_not_built() -> None:
    sql = (
        "SET lock_timeout = '1s'; "
        "CREATE UNIQUE INDEX IF NOT EXISTS users_email_idx ON users (email)"
    )
    assert verdicts(sql) == (S, S)  # was (conditional, safe): "is unique"
    effects = analyse_on_shadow(sql, before=BEFORE)
    assert [c.kind for c in effects.changes] == ["set_setting", "no_op"]
    assert lint_migration(effects) == []  # no require-concurrent-index-creation
    # CONCURRENTLY is still rejected inside the migration's transaction
    concurrently = "CREATE INDEX CONCURRENTLY IF NOT EXISTS users_email_idx ON users (email)"
    rules = [f.rule for f in lint_migration(analyse_on_shadow(concurrently, before=BEFORE))]
    assert "concurrently-in-transaction" in rules


def test_restating_within_the_same_migration() -> None:
    sql = (
        "CREATE TABLE t (id int); CREATE TABLE IF NOT EXISTS t (id int);"
        "CREATE INDEX t_idx ON t (id); CREATE INDEX IF NOT EXISTS t_idx ON t (id)"
    )
    effects = analyse_sql(sql)
    assert [c.kind for c in effects.changes] == ["create_table", "no_op", "create_index", "no_op"]
    assert objects_summary(plan_migration(effects)) == "create 1 table, 1 index"


def test_if_not_exists_of_a_new_object_still_creates_it() -> None:
    assert verdicts("CREATE TABLE IF NOT EXISTS t (id int)") == (S, C)
    assert verdicts("ALTER TABLE users ADD COLUMN IF NOT EXISTS nick text") == (S, B)
    assert verdicts("CREATE UNIQUE INDEX IF NOT EXISTS users_bio_idx ON users (bio)") == (C, S)
    # from the SQL alone (no shadow) nothing is known to exist: not a no-op
    effects = analyse_sql("ALTER TABLE elsewhere ADD COLUMN IF NOT EXISTS x text")
    assert [c.kind for c in effects.changes] == ["add_column"]


def test_a_hotfix_restating_the_base_tables() -> None:
    """The runbook hotfix shape: ensure the base tables exist, then add one new column."""
    pieces = [
        '-- make sure the base tables exist\nCREATE TABLE IF NOT EXISTS "users" '
        '("id" serial PRIMARY KEY NOT NULL, "email" text NOT NULL)\n',
        '\nALTER TABLE "users" ADD COLUMN IF NOT EXISTS "bio" text;',
        '\nALTER TABLE "users" ADD COLUMN IF NOT EXISTS "avatar" text;',
    ]
    journal = journal_of(("0000_init", BEFORE), ("0001_ensure", BREAKPOINT.join(pieces)))
    folder = analyse_migrations(
        [(m.tag, m.statements) for m in journal.migrations], replayed(journal)
    )
    planned = plan_migration(folder.by_tag("0001_ensure"))
    assert [(o.action, o.object) for o in planned.objects] == [
        ("none", "table public.users"),
        ("none", "column public.users.bio"),
        ("create", "column public.users.avatar"),
    ]
    assert objects_summary(planned) == "create 1 column"
    assert planned.new_reasons == (
        "column public.users.avatar does not exist: new code's INSERTs and SELECTs naming it fail",
    )
