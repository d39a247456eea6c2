"""Which ALTER COLUMN ... TYPE rewrites the table: the pure decision on each case, checked
against a real PostgreSQL (a rewrite gives the table a new relfilenode), and its use by the
plan's risk, the compatibility matrix and the lint rule."""

from __future__ import annotations

import psycopg
import pytest

from orchestrator.analysis.compatibility import Compat, migration_compat
from orchestrator.analysis.effects import analyse_sql
from orchestrator.analysis.lint import lint_migration
from orchestrator.analysis.plan import plan_migration
from orchestrator.analysis.risk import RiskLevel
from orchestrator.analysis.typechange import (
    ColumnType,
    TypeChange,
    classify_type_change,
)
from tests.analysis_helpers import analyse_on_shadow

SAME, RELAXES, REWRITES = TypeChange.SAME, TypeChange.RELAXES, TypeChange.REWRITES

# (old type as SQL, new type as SQL, the verdict); each is also run on a real server below.
CASES = [
    # no rewrite
    ("varchar(40)", "text", RELAXES),
    ("varchar(40)", "varchar(200)", RELAXES),
    ("varchar(40)", "varchar", RELAXES),
    ("character varying(40)", "character varying(41)", RELAXES),
    ("numeric(10,2)", "numeric", RELAXES),
    ("numeric(10,2)", "numeric(12,2)", RELAXES),
    ("varbit(8)", "varbit(16)", RELAXES),
    ("varbit(8)", "bit varying", RELAXES),
    ("timestamp(3)", "timestamp(6)", RELAXES),
    ("timestamptz(0)", "timestamptz", RELAXES),
    ("text", "varchar", RELAXES),
    ("cidr", "inet", RELAXES),
    ("text", "text", SAME),
    ("integer", "int4", SAME),
    ("varchar(40)", "varchar(40)", SAME),
    ("numeric(10,2)", "decimal(10,2)", SAME),
    ("timestamp with time zone", "timestamptz", SAME),
    # rewrites
    ("integer", "bigint", REWRITES),
    ("text", "varchar(200)", REWRITES),
    ("varchar(200)", "varchar(40)", REWRITES),
    ("varchar", "varchar(40)", REWRITES),
    ("numeric", "numeric(10,2)", REWRITES),
    ("numeric(10,2)", "numeric(10,3)", REWRITES),
    ("numeric(10,2)", "numeric(8,2)", REWRITES),
    ("varbit(16)", "varbit(8)", REWRITES),
    ("timestamp", "timestamptz", REWRITES),  # unless TimeZone is UTC
    ("timestamptz", "timestamp", REWRITES),
    ("timestamp(6)", "timestamp(3)", REWRITES),
    ("varchar(40)", "char(40)", REWRITES),
    ("real", "double precision", REWRITES),
    ("varchar(40)[]", "text[]", REWRITES),
]


def sql_type(text: str) -> ColumnType:
    """The ColumnType the analysis reads in ``ALTER COLUMN ... TYPE <text>``."""
    [change] = analyse_sql(f"ALTER TABLE t ALTER COLUMN c TYPE {text}").changes
    assert change.new_type is not None
    return change.new_type


@pytest.mark.parametrize(("old", "new", "verdict"), CASES)
def test_classify_type_change(old: str, new: str, verdict: TypeChange) -> None:
    assert classify_type_change(sql_type(old), sql_type(new)) is verdict


def test_using_or_an_unknown_old_type_rewrites() -> None:
    varchar40, text = ColumnType("varchar", (40,)), ColumnType("text")
    assert classify_type_change(varchar40, text) is RELAXES
    assert classify_type_change(varchar40, text, using=True) is REWRITES
    assert classify_type_change(text, text, using=True) is REWRITES
    assert classify_type_change(None, text) is REWRITES
    assert classify_type_change(ColumnType("varchar", None), text) is REWRITES


def test_the_verdicts_match_a_real_server(database_url: str) -> None:
    """A rewrite gives the table a new file (pg_class.relfilenode); no rewrite keeps it."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'Europe/Paris'")
        for number, (old, new, verdict) in enumerate(CASES):
            table = f"t{number}"
            conn.execute(f"CREATE TABLE {table} (c {old})")
            conn.execute(f"INSERT INTO {table} VALUES (NULL)")
            query = "SELECT relfilenode FROM pg_class WHERE oid = %s::regclass"
            before = conn.execute(query, (table,)).fetchone()
            conn.execute(f"ALTER TABLE {table} ALTER COLUMN c TYPE {new}")
            after = conn.execute(query, (table,)).fetchone()
            assert (before != after) is (verdict is REWRITES), (old, new, verdict)


BEFORE = 'CREATE TABLE "posts" ("id" serial PRIMARY KEY, "title" varchar(40), "n" integer)'


@pytest.mark.parametrize(
    ("alter", "risk", "compat", "lint_error"),
    [
        # relaxing a limit: only the brief lock, new code's longer values need the migration
        ("title TYPE text", RiskLevel.MEDIUM, (Compat.SAFE, Compat.CONDITIONAL), False),
        ("title TYPE varchar(200)", RiskLevel.MEDIUM, (Compat.SAFE, Compat.CONDITIONAL), False),
        ("title TYPE varchar", RiskLevel.MEDIUM, (Compat.SAFE, Compat.CONDITIONAL), False),
        ("title SET DATA TYPE varchar(40)", RiskLevel.MEDIUM, (Compat.SAFE, Compat.SAFE), False),
        # rewrites
        ("n TYPE bigint", RiskLevel.HIGH, (Compat.CONDITIONAL, Compat.CONDITIONAL), True),
        ("title TYPE varchar(20)", RiskLevel.HIGH, (Compat.CONDITIONAL, Compat.CONDITIONAL), True),
        # a USING that only relabels the value: the shadow sees no rewrite
        (
            "title TYPE text USING title::text",
            RiskLevel.MEDIUM,
            (Compat.SAFE, Compat.CONDITIONAL),
            False,
        ),
        (
            "n TYPE bigint USING n + 1",
            RiskLevel.HIGH,
            (Compat.CONDITIONAL, Compat.CONDITIONAL),
            True,
        ),
    ],
)
def test_plan_compat_and_lint_use_the_decision(
    alter: str, risk: RiskLevel, compat: tuple[Compat, Compat], lint_error: bool
) -> None:
    effects = analyse_on_shadow(f"ALTER TABLE posts ALTER COLUMN {alter}", before=BEFORE)
    planned = plan_migration(effects)
    assert planned.risk is risk, planned.reasons
    assert any("rewrites public.posts" in r for r in planned.reasons) is lint_error
    verdict = migration_compat(effects.tag, effects.changes)
    assert (verdict.old_code_on_new_schema, verdict.new_code_on_old_schema) == compat
    rules = [f.rule for f in lint_migration(effects)]
    assert ("changing-column-type" in rules) is lint_error


def test_the_replayed_type_is_the_latest() -> None:
    # varchar(40) -> varchar(100) -> varchar(60): the last step shrinks, so it rewrites
    effects = analyse_on_shadow(
        "ALTER TABLE posts ALTER COLUMN title TYPE varchar(100);"
        "ALTER TABLE posts ALTER COLUMN title TYPE varchar(60)",
        before=BEFORE,
    )
    assert [c.type_change for c in effects.changes] == [RELAXES, REWRITES]
    assert [c.detail for c in effects.changes] == [
        "varchar(40) -> varchar(100)",
        "varchar(100) -> varchar(60)",
    ]
