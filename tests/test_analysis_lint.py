"""Each lint rule fires on the SQL it is about and stays quiet on the safe variant, and
`lint` reports it on a folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.folders import write_drizzle_folder
from orchestrator.analysis.effects import analyse_sql
from orchestrator.analysis.lint import RULES, lint_migration, rule_named
from orchestrator.cli import run
from tests.analysis_helpers import analyse_on_shadow

BEFORE = """
CREATE TABLE "users" ("id" serial PRIMARY KEY NOT NULL, "email" text NOT NULL, "nick" text);
CREATE TABLE "teams" ("id" serial PRIMARY KEY NOT NULL);
"""


# Rules about SQL PostgreSQL refuses in a migration (CONCURRENTLY inside a transaction, a new
# enum value used before it commits): no shadow replays it, and the rule needs none.
STATIC_RULES = {
    "concurrently-in-transaction",
    "enum-value-used-in-transaction",
    "rerun-unsafe-outside-transaction",
    "transaction-control",
}


def rules_for(sql: str, rule: str = "") -> list[str]:
    if rule in STATIC_RULES:
        effects = analyse_sql(sql)
        return [f.rule for f in lint_migration(effects)]
    return [f.rule for f in lint_migration(analyse_on_shadow(sql, before=BEFORE))]


# (rule, SQL that breaks it, a safe variant of the same change)
CASES = [
    (
        "adding-not-nullable-field",
        "ALTER TABLE users ADD COLUMN IF NOT EXISTS age int NOT NULL",
        "ALTER TABLE users ADD COLUMN IF NOT EXISTS age int NOT NULL DEFAULT 0",
    ),
    (
        "require-concurrent-index-creation",
        "CREATE INDEX IF NOT EXISTS users_nick_idx ON users (nick)",
        # a table created in the same migration is empty: no lock worth avoiding
        "CREATE TABLE IF NOT EXISTS t (id int); CREATE INDEX IF NOT EXISTS t_idx ON t (id)",
    ),
    (
        "concurrently-in-transaction",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS users_nick_idx ON users (nick)",
        "CREATE TABLE IF NOT EXISTS t (id int); CREATE INDEX IF NOT EXISTS t_idx ON t (id)",
    ),
    (
        "enum-value-used-in-transaction",
        "CREATE TYPE mood AS ENUM ('ok'); ALTER TYPE mood ADD VALUE 'glad'; SELECT 'glad'::mood",
        "CREATE TYPE mood AS ENUM ('ok'); ALTER TYPE mood ADD VALUE 'glad'",
    ),
    (
        "rerun-unsafe-outside-transaction",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS users_nick_idx ON users (nick);"
        " ALTER TABLE users ADD COLUMN age int",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS users_nick_idx ON users (nick);"
        " ALTER TABLE users ADD COLUMN IF NOT EXISTS age int",
    ),
    (
        "ban-drop-column",
        "ALTER TABLE users DROP COLUMN IF EXISTS nick",
        "CREATE TABLE IF NOT EXISTS t (a int, b int); ALTER TABLE t DROP COLUMN IF EXISTS b",
    ),
    (
        "ban-drop-table",
        "DROP TABLE IF EXISTS teams",
        "CREATE TABLE IF NOT EXISTS t (a int); DROP TABLE IF EXISTS t",
    ),
    (
        "renaming-column",
        "ALTER TABLE users RENAME COLUMN nick TO handle",
        "ALTER TABLE users ADD COLUMN IF NOT EXISTS handle text",
    ),
    (
        "renaming-table",
        "ALTER TABLE teams RENAME TO squads",
        "CREATE TABLE IF NOT EXISTS squads (id int)",
    ),
    (
        "changing-column-type",
        "ALTER TABLE users ALTER COLUMN email TYPE varchar(200)",
        "ALTER TABLE users ADD COLUMN IF NOT EXISTS email2 varchar(200)",
    ),
    (
        "changing-column-type",
        "ALTER TABLE users ALTER COLUMN email TYPE varchar(200)",
        # text -> varchar without a limit: binary coercible, no rewrite
        "ALTER TABLE users ALTER COLUMN email TYPE varchar",
    ),
    (
        "constraint-missing-not-valid",
        'ALTER TABLE "users" ADD CONSTRAINT "users_team_fk" FOREIGN KEY ("id") '
        'REFERENCES "teams"("id")',
        'ALTER TABLE "users" ADD CONSTRAINT "users_team_fk" FOREIGN KEY ("id") '
        'REFERENCES "teams"("id") NOT VALID',
    ),
    (
        "constraint-missing-not-valid",
        "ALTER TABLE users ADD CONSTRAINT email_len CHECK (length(email) > 3)",
        "ALTER TABLE users ADD CONSTRAINT email_len CHECK (length(email) > 3) NOT VALID",
    ),
    (
        "not-rerunnable",
        "INSERT INTO teams (id) VALUES (1)",
        "INSERT INTO teams (id) VALUES (1) ON CONFLICT DO NOTHING",
    ),
    (
        "not-rerunnable",
        "INSERT INTO teams (id) SELECT id FROM users",
        "INSERT INTO teams (id) SELECT u.id FROM users u "
        "WHERE NOT EXISTS (SELECT 1 FROM teams t WHERE t.id = u.id)",
    ),
    (
        "not-rerunnable",
        "UPDATE users SET nick = nick || '!'",
        "UPDATE users SET nick = 'anon' WHERE nick IS NULL",
    ),
    (
        # seeding a table: only a problem when the rest of the migration re-runs cleanly
        "not-rerunnable",
        "CREATE TABLE IF NOT EXISTS s (k text); INSERT INTO s VALUES ('a')",
        "CREATE TABLE s (k text); INSERT INTO s VALUES ('a')",
    ),
    (
        "require-lock-timeout",
        "ALTER TABLE users ADD COLUMN IF NOT EXISTS bio text",
        "SET lock_timeout = '5s'; ALTER TABLE users ADD COLUMN IF NOT EXISTS bio text",
    ),
    (
        # 0 turns the timeout off: it sets none
        "require-lock-timeout",
        "SET lock_timeout = 0; ALTER TABLE users ADD COLUMN IF NOT EXISTS bio text",
        "SET lock_timeout = 500; ALTER TABLE users ADD COLUMN IF NOT EXISTS bio text",
    ),
    (
        # in a migration drizzle applied long ago, a COMMIT is still reported, not refused
        "transaction-control",
        "CREATE TABLE s (k text); COMMIT",
        "CREATE TABLE s (k text)",
    ),
    (
        "disabling-lock-timeout",
        "RESET lock_timeout; ALTER TABLE users ADD COLUMN IF NOT EXISTS bio text",
        "SET lock_timeout = '5s'; ALTER TABLE users ADD COLUMN IF NOT EXISTS bio text",
    ),
]


@pytest.mark.parametrize(("rule", "bad", "good"), CASES)
def test_rule_fires_on_the_bad_sql_only(rule: str, bad: str, good: str) -> None:
    assert rule in rules_for(bad, rule)
    assert rule not in rules_for(good, rule)


@pytest.mark.parametrize("rule", sorted(rule.name for rule in RULES))
def test_lint_can_report_every_rule(
    rule: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No rule is documented that `lint` cannot reach on a folder it accepts.
    bad = next(sql for name, sql, _ in CASES if name == rule)
    folder = write_drizzle_folder(tmp_path, [("0000_before", [BEFORE]), ("0001_case", [bad])])
    assert run(["lint", "--migrations", str(folder), "--json"]) in (0, 21)
    report = json.loads(capsys.readouterr().out)
    assert rule in {f["rule"] for f in report["findings"] if f["tag"] == "0001_case"}


def test_every_rule_is_tested_and_documented() -> None:
    assert {r.name for r in RULES} == {rule for rule, _, _ in CASES}
    docs = Path(__file__).resolve().parent.parent / "docs" / "migration-analysis.md"
    rows = docs.read_text().splitlines()
    table = rows[rows.index("## Lint rules") : rows.index("Notes:")]
    assert {row.split("`")[1] for row in table if row.startswith("| `")} == {r.name for r in RULES}
    for rule in RULES:
        row = f"| `{rule.name}` | {rule.severity} | {rule.summary} | {rule.fix} |"
        assert row in rows, rule.name


def test_lock_timeout_set_after_the_lock_does_not_count() -> None:
    sql = "ALTER TABLE users ADD COLUMN IF NOT EXISTS bio text; SET lock_timeout = '5s'"
    findings = lint_migration(analyse_on_shadow(sql, before=BEFORE))
    [finding] = [f for f in findings if f.rule == "require-lock-timeout"]
    assert finding.statement == 1
    assert "public.users" in finding.message


def test_findings_carry_statement_numbers_and_severity() -> None:
    sql = "SET lock_timeout = '1s'; ALTER TABLE users DROP COLUMN IF EXISTS nick"
    findings = lint_migration(analyse_on_shadow(sql, before=BEFORE))
    assert [(f.rule, f.statement, f.severity) for f in findings] == [
        ("ban-drop-column", 2, "error")
    ]
    assert findings[0].to_json() == {
        "rule": "ban-drop-column",
        "severity": "error",
        "statement": 2,
        "line": 1,
        "message": "column public.users.nick is dropped",
    }


def test_warnings_alone_are_not_errors() -> None:
    sql = "SET lock_timeout = '1s'; CREATE INDEX users_nick_idx ON users (nick)"
    findings = lint_migration(analyse_on_shadow(sql, before=BEFORE))
    assert [f.rule for f in findings] == ["require-concurrent-index-creation"]
    assert findings[0].severity == "warning"


def test_rule_named() -> None:
    assert rule_named("ban-drop-table").severity == "error"
    with pytest.raises(KeyError):
        rule_named("no-such-rule")
