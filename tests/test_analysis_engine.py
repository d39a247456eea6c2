"""Plan and lint read each migration with what PostgreSQL built before it: the folder is
replayed on the shadow (the test server) and its history gives the facts a rule needs."""

from __future__ import annotations

import os

import pytest

from orchestrator.analysis.effects import analyse_migrations, analyse_sql
from orchestrator.analysis.lint import lint_migration
from orchestrator.analysis.plan import Plan, build_plan, plan_migration, statement_texts
from orchestrator.analysis.risk import RiskLevel
from orchestrator.analysis.shadowfacts import ColumnFacts, IndexFacts, migration_facts
from orchestrator.analysis.typechange import ColumnType, TypeChange
from orchestrator.drizzle.journal import Journal
from orchestrator.shadow import SHADOW_URL_ENV, ShadowSpec
from orchestrator.shadow.locks import locks_taken
from tests.analysis_helpers import analyse_on_shadow, journal_of, replayed


def test_the_facts_before_a_migration_are_what_postgresql_built() -> None:
    journal = journal_of(
        (
            "0000",
            "CREATE TYPE mood AS ENUM ('sad');"
            "CREATE TABLE t (id serial PRIMARY KEY, name varchar(40) NOT NULL,"
            " n numeric(10, 2), tags text[], g int GENERATED ALWAYS AS IDENTITY, s mood,"
            " at timestamp(3) with time zone);"
            "CREATE UNIQUE INDEX t_name ON t (name)",
        ),
        ("0001", "ALTER TABLE t ADD COLUMN x int"),
    )
    first, second = migration_facts(replayed(journal))
    assert not first.relation_exists("public", "t")
    assert second.relation_exists("public", "t")
    assert second.column("public", "t", "id") == ColumnFacts(ColumnType("int4", ()), True, True)
    assert second.column("public", "t", "name") == ColumnFacts(
        ColumnType("varchar", (40,)), True, False
    )
    assert second.column("public", "t", "n") == ColumnFacts(
        ColumnType("numeric", (10, 2)), False, False
    )
    assert second.column("public", "t", "tags") == ColumnFacts(
        ColumnType("_text", ()), False, False
    )
    assert second.column("public", "t", "g") == ColumnFacts(ColumnType("int4", ()), True, True)
    assert second.column("public", "t", "s") == ColumnFacts(ColumnType("mood", ()), False, False)
    assert second.column("public", "t", "at") == ColumnFacts(
        ColumnType("timestamptz", (3,)), False, False
    )
    assert second.column("public", "t", "nope") is None
    assert second.index("public", "t_name") == IndexFacts(("public", "t"), True)
    assert second.index("public", "t_pkey") == IndexFacts(("public", "t"), True)
    assert ("create", "column public.t.x") in second.changed
    assert second.rewrites == frozenset()


def test_a_type_changed_in_a_pending_migration_is_the_one_read_next() -> None:
    journal = journal_of(
        ("0000", "CREATE TABLE t (c varchar(40))"),
        ("0001", "ALTER TABLE t ALTER COLUMN c TYPE text"),
        ("0002", "ALTER TABLE t ALTER COLUMN c TYPE varchar(10)"),
    )
    folder = [(m.tag, m.statements) for m in journal.migrations]
    analysis = analyse_migrations(folder, replayed(journal))
    [relaxed] = analysis.by_tag("0001").changes
    assert (relaxed.old_type, relaxed.rewrites) == (ColumnType("varchar", (40,)), False)
    assert relaxed.type_change is TypeChange.RELAXES
    [limited] = analysis.by_tag("0002").changes
    assert (limited.old_type, limited.rewrites) == (ColumnType("text", ()), True)
    assert limited.type_change is TypeChange.REWRITES
    assert analysis.by_tag("0002").rewrites == ("public.t",)


def test_the_shadow_s_word_beats_the_rule_of_thumb_on_a_rewrite() -> None:
    # varchar -> citext-like domains, enums...: the rules assume a rewrite of what they do
    # not know; the shadow saw the table's storage kept.
    effects = analyse_on_shadow(
        "ALTER TABLE t ALTER COLUMN c TYPE short",
        before="CREATE DOMAIN short AS varchar(10); CREATE TABLE t (c varchar(10))",
    )
    [change] = effects.changes
    assert change.rewrites is False
    assert change.type_change is TypeChange.RELAXES
    assert [f.rule for f in lint_migration(effects)] == ["require-lock-timeout"]
    static = analyse_sql("ALTER TABLE t ALTER COLUMN c TYPE short")
    assert static.changes[0].type_change is TypeChange.REWRITES


def test_a_rewrite_no_type_change_explains_is_high_risk() -> None:
    effects = analyse_on_shadow(
        "ALTER TABLE t ADD COLUMN at timestamptz DEFAULT clock_timestamp()",
        before="CREATE TABLE t (id int)",
    )
    planned = plan_migration(effects)
    assert planned.risk is RiskLevel.HIGH
    assert any("rewrites public.t" in reason for reason in planned.risk_reasons)
    # a constant default is stored in the catalog: no rewrite, no such reason
    quiet = plan_migration(
        analyse_on_shadow(
            "ALTER TABLE t ADD COLUMN at timestamptz DEFAULT now()",
            before="CREATE TABLE t (id int)",
        )
    )
    assert not any("rewrites" in reason for reason in quiet.risk_reasons)


def test_the_plan_names_the_objects_each_migration_changes_in_the_catalog() -> None:
    journal = journal_of(
        ("0000", "CREATE TABLE t (id int PRIMARY KEY, old text)"),
        ("0001", "ALTER TABLE t DROP COLUMN old; ALTER TABLE t ADD COLUMN new text"),
    )
    plan = build_plan(journal, {"0001"}, replayed(journal))
    [migration] = plan.migrations
    assert migration.catalog == (
        ("create", "column public.t.new"),
        ("drop", "column public.t.old"),
    )
    assert migration.to_json()["catalog"] == [
        {"action": "create", "object": "column public.t.new"},
        {"action": "drop", "object": "column public.t.old"},
    ]


def test_if_not_exists_of_an_object_an_earlier_migration_made_is_a_no_op() -> None:
    effects = analyse_on_shadow(
        "CREATE INDEX IF NOT EXISTS t_id ON t (id); ALTER TABLE t ADD COLUMN IF NOT EXISTS id int",
        before="CREATE TABLE t (id int); CREATE INDEX t_id ON t (id)",
    )
    assert [(c.kind, c.restates) for c in effects.changes] == [
        ("no_op", "create_index"),
        ("no_op", "add_column"),
    ]
    # from the SQL alone they are what they say
    static = analyse_sql("CREATE INDEX IF NOT EXISTS t_id ON t (id)")
    assert [c.kind for c in static.changes] == ["create_index"]


def test_a_dropped_index_is_read_with_its_table_and_uniqueness() -> None:
    effects = analyse_on_shadow(
        "DROP INDEX t_key", before="CREATE TABLE t (k int); CREATE UNIQUE INDEX t_key ON t (k)"
    )
    [change] = effects.changes
    assert (change.table, change.unique, change.on_existing_table) == ("public.t", True, True)


def test_a_history_of_another_folder_is_refused() -> None:
    journal = journal_of(("0000", "CREATE TABLE t (id int)"))
    with pytest.raises(ValueError):  # one delta per migration, or zip(strict=True) refuses
        analyse_migrations([("a", ["SELECT 1"]), ("b", ["SELECT 1"])], replayed(journal))


def test_a_table_renamed_in_its_creating_migration_is_still_new() -> None:
    effects = analyse_sql(
        "CREATE TABLE a (x int); ALTER TABLE a RENAME TO b; CREATE INDEX b_x ON b (x);"
        "ALTER TABLE b ADD COLUMN y int NOT NULL"
    )
    assert [c.table_is_new for c in effects.changes] == [True, True, True, True]
    assert lint_migration(effects) == []


def test_an_empty_enum_label_is_read_as_written() -> None:
    effects = analyse_on_shadow(
        "ALTER TYPE mood RENAME VALUE '' TO 'blank'",
        before="CREATE TYPE mood AS ENUM ('sad', '')",
    )
    assert [(c.kind, c.target) for c in effects.changes] == [
        ("rename_enum_value", "enum_value public.mood.blank")
    ]


def locks_on_shadow(journal: Journal, tags: set[str]) -> Plan:
    """The plan of ``tags`` with the locks PostgreSQL took on the shadow."""
    texts = statement_texts(journal, tags)
    held = locks_taken(journal, texts, ShadowSpec(os.environ[SHADOW_URL_ENV]))
    return build_plan(journal, tags, replayed(journal), held)


def test_the_plan_s_locks_are_those_postgresql_took() -> None:
    journal = journal_of(
        ("0000", "CREATE TABLE p (id int PRIMARY KEY); CREATE TABLE t (a int)"),
        (
            "0001",
            "SET lock_timeout = '1s';"
            "ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES p (id);"
            "CREATE TABLE n (a int); CREATE INDEX n_a ON n (a); CREATE INDEX t_a ON t (a)",
        ),
    )
    [shadow] = locks_on_shadow(journal, {"0001"}).migrations
    # the foreign key locks the table it references too; the new table n is left out
    assert [(lock.table, lock.mode, lock.statement) for lock in shadow.locks] == [
        ("public.p", "SHARE ROW EXCLUSIVE", 2),
        ("public.t", "SHARE ROW EXCLUSIVE", 2),
    ]
    [static] = build_plan(journal, {"0001"}).migrations
    assert [(lock.table, lock.mode) for lock in static.locks] == [
        ("public.t", "SHARE ROW EXCLUSIVE")
    ]


def test_a_migration_outside_a_transaction_keeps_the_lock_table() -> None:
    journal = journal_of(
        ("0000", "CREATE TABLE t (a int)"),
        ("0001", "CREATE INDEX CONCURRENTLY t_a ON t (a)"),
    )
    [migration] = locks_on_shadow(journal, {"0001"}).migrations
    assert [(lock.table, lock.mode) for lock in migration.locks] == [
        ("public.t", "SHARE UPDATE EXCLUSIVE")
    ]


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE t ADD COLUMN c text",
        "CREATE INDEX i ON t (a)",
        "ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES p (id)",
        "ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0) NOT VALID",
        "ALTER TABLE t ALTER COLUMN b SET NOT NULL",
        "ALTER TABLE t RENAME COLUMN b TO b2",
        "DROP INDEX t_b",
        "UPDATE t SET a = 1",
        "DELETE FROM t",
    ],
)
def test_the_documented_lock_table_agrees_with_postgresql(statement: str) -> None:
    before = "CREATE TABLE t (a int, b int); CREATE TABLE p (id int PRIMARY KEY);"
    journal = journal_of(("0000", before + "CREATE INDEX t_b ON t (b)"), ("0001", statement))
    [shadow] = locks_on_shadow(journal, {"0001"}).migrations
    [static] = build_plan(journal, {"0001"}, replayed(journal)).migrations
    on_t = [(lock.table, lock.mode) for lock in shadow.locks if lock.table == "public.t"]
    assert on_t == [(lock.table, lock.mode) for lock in static.locks]
