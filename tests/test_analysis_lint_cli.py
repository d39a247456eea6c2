"""`lint` and `plan` on real migrations folders, through the command line: a folder PostgreSQL
refuses is read from the SQL with a note; a lock_timeout of 0, DEFAULT or RESET is none (and
turns migrate's off); the locks that decide require-lock-timeout are those PostgreSQL takes
on the shadow; DEFAULT NULL is no default; an unparseable statement is bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench.folders import write_drizzle_folder
from orchestrator.cli import run

HISTORIES = Path(__file__).resolve().parent / "fixtures" / "histories"
USERS = 'CREATE TABLE "users" ("id" serial PRIMARY KEY NOT NULL, "email" text NOT NULL);'


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    code = run([*args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out else None


def lint_json(capsys: pytest.CaptureFixture[str], folder: Path) -> tuple[int, Any]:
    return cli_json(capsys, "lint", "--migrations", str(folder))


def findings_of(report: Any, tag: str) -> list[tuple[str, str, int]]:
    return [(f["rule"], f["severity"], f["line"]) for f in report["findings"] if f["tag"] == tag]


ENUM_USED = [
    ("0000_users", [USERS]),
    (
        "0001_mood",
        ["CREATE TYPE \"mood\" AS ENUM('ok');", 'ALTER TABLE "users" ADD COLUMN "m" "mood";'],
    ),
    (
        "0002_glad",
        [
            "ALTER TYPE \"mood\" ADD VALUE 'glad';",
            'UPDATE "users" SET "m" = \'glad\' WHERE "m" IS NULL;',
        ],
    ),
]


def test_a_folder_postgresql_refuses_is_read_from_the_sql_with_a_note(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_drizzle_folder(tmp_path / "enum", ENUM_USED)
    refused = "no facts from the shadow, static rules only: PostgreSQL refused 0002_glad: "
    code, report = lint_json(capsys, folder)
    assert code == 21
    assert report["note"].startswith(refused) and "unsafe use of new value" in report["note"]
    # PostgreSQL's refusal is the documented error rule, where the value is added
    assert ("enum-value-used-in-transaction", "error", 1) in findings_of(report, "0002_glad")
    code, plan = cli_json(capsys, "plan", "--all", "--migrations", str(folder))
    assert code == 0 and plan["note"].startswith(refused)
    assert [m["risk"] for m in plan["migrations"]][-1] == "HIGH"
    # against a database: every migration is pending on an empty one
    code, plan = cli_json(
        capsys, "plan", "--database-url", database_url, "--migrations", str(folder)
    )
    assert code == 0 and plan["note"].startswith(refused)
    assert [m["tag"] for m in plan["migrations"]] == ["0000_users", "0001_mood", "0002_glad"]
    # a refusal no rule names: the note says why, the rules run on the SQL
    typo = write_drizzle_folder(
        tmp_path / "typo",
        [("0000_users", [USERS]), ("0001_x", ['ALTER TABLE "users" ADD COLUMN "x" intt;'])],
    )
    code, report = lint_json(capsys, typo)
    assert code == 0 and 'type "intt" does not exist' in report["note"]
    assert findings_of(report, "0001_x") == [("require-lock-timeout", "warning", 1)]


ADD_TOKEN = 'ALTER TABLE "users" ADD COLUMN "token" uuid DEFAULT gen_random_uuid();'


@pytest.mark.parametrize(
    "setting",
    [
        "SET lock_timeout = 0;",
        "SET LOCAL lock_timeout = '0ms';",
        "SET lock_timeout TO DEFAULT;",
        "RESET lock_timeout;",
        "RESET ALL;",
    ],
)
def test_a_lock_timeout_turned_off_is_none_and_an_error(
    setting: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # migrate's own lock timeout is the longest stall one attempt can cause
    # (docs/live-traffic.md); a migration that turns it off lets a lock wait stall traffic
    # until the statement timeout, so lint fails (exit 21) as migrate refuses --lock-timeout 0
    folder = write_drizzle_folder(
        tmp_path, [("0000_users", [USERS]), ("0001_token", [setting, ADD_TOKEN])]
    )
    code, report = lint_json(capsys, folder)
    assert code == 21
    assert findings_of(report, "0001_token") == [
        ("disabling-lock-timeout", "error", 1),
        ("require-lock-timeout", "warning", 3),
    ]


def test_a_lock_timeout_counts_until_it_is_turned_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    statements = [
        "SET lock_timeout = '2s';",
        ADD_TOKEN,  # line 3: under the timeout
        "RESET lock_timeout;",  # line 5
        'ALTER TABLE "users" ADD COLUMN "nick" text;',  # ACCESS EXCLUSIVE is held already
        'UPDATE "users" SET "nick" = "email";',  # ROW EXCLUSIVE queues behind no DDL
        'ALTER TABLE "teams" ADD COLUMN "name" text;',  # line 11: a new lock, no timeout
    ]
    teams = 'CREATE TABLE "teams" ("id" serial PRIMARY KEY NOT NULL);'
    folder = write_drizzle_folder(
        tmp_path, [("0000_users", [USERS, teams]), ("0001_x", statements)]
    )
    code, report = lint_json(capsys, folder)
    assert code == 21
    assert findings_of(report, "0001_x") == [
        ("disabling-lock-timeout", "error", 5),
        ("require-lock-timeout", "warning", 11),
    ]


# Statements no static rule knows the table of; the shadow sees what PostgreSQL locks.
LOCKING = [
    (
        "0001_trigger",
        'CREATE TRIGGER "touch" BEFORE UPDATE ON "users" FOR EACH ROW EXECUTE FUNCTION "touch"();',
        "SHARE ROW EXCLUSIVE",
    ),
    ("0002_truncate", 'TRUNCATE "users";', "ACCESS EXCLUSIVE"),
    ("0003_lock", 'LOCK TABLE "users" IN SHARE MODE;', "SHARE"),
    ("0004_policy", 'CREATE POLICY "own" ON "users" USING (true);', "ACCESS EXCLUSIVE"),
    (
        "0005_rename_constraint",
        'ALTER TABLE "users" RENAME CONSTRAINT "users_pkey" TO "users_id_pk";',
        "ACCESS EXCLUSIVE",
    ),
    ("0006_rename_table", 'ALTER TABLE "users" RENAME TO "people";', "ACCESS EXCLUSIVE"),
]
TOUCH = 'CREATE FUNCTION "touch"() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;'


def test_require_lock_timeout_reads_the_locks_postgresql_takes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    migrations = [("0000_users", [USERS, TOUCH]), *((tag, [sql]) for tag, sql, _ in LOCKING)]
    folder = write_drizzle_folder(tmp_path, migrations)
    code, report = lint_json(capsys, folder)
    assert code == 21 and "note" not in report  # renaming-table is an error
    for tag, _, mode in LOCKING:
        [finding] = [
            f for f in report["findings"] if f["rule"] == "require-lock-timeout" and f["tag"] == tag
        ]
        # a renamed table is named as the running code knows it
        assert f"takes {mode} on existing table public.users " in finding["message"], finding
    code, plan = cli_json(capsys, "plan", "--all", "--migrations", str(folder))
    locks = {m["tag"]: m["locks"] for m in plan["migrations"]}
    for tag, _, mode in LOCKING:
        assert locks[tag] == [{"table": "public.users", "mode": mode, "statement": 1, "line": 1}]


def test_the_blog_fixtures_triggers_lock_without_a_lock_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # drizzle-kit custom migrations that add an updated_at trigger to an existing table
    code, report = lint_json(capsys, HISTORIES / "blog" / "migrations")
    assert code == 21  # it drops and renames too
    for tag, line, table in [
        ("0003_posts_updated_at_trigger", 9, "posts"),
        ("0028_comments_updated_at_trigger", 12, "comments"),
    ]:
        [finding] = [f for f in report["findings"] if f["tag"] == tag]
        assert (finding["rule"], finding["line"]) == ("require-lock-timeout", line)
        assert f"SHARE ROW EXCLUSIVE on existing table public.{table}" in finding["message"]


NULL_DEFAULTS = [
    'ALTER TABLE "users" ADD COLUMN "x" integer DEFAULT null NOT NULL;',
    'ALTER TABLE "users" ADD COLUMN "y" integer DEFAULT NULL::integer NOT NULL;',
]


def test_a_null_default_is_no_default(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_drizzle_folder(tmp_path, [("0000_users", [USERS]), ("0001_x", NULL_DEFAULTS)])
    code, report = lint_json(capsys, folder)
    assert code == 21
    assert [r for r in findings_of(report, "0001_x") if r[0] == "adding-not-nullable-field"] == [
        ("adding-not-nullable-field", "error", 1),
        ("adding-not-nullable-field", "error", 3),
    ]
    code, plan = cli_json(capsys, "plan", "--all", "--migrations", str(folder))
    added = plan["migrations"][1]
    assert [o["detail"] for o in added["objects"]] == ["int4, NOT NULL", "int4, NOT NULL"]
    assert added["old_code_on_new_schema"] == "breaks"
    # as PostgreSQL says on a table with a row
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(USERS)
        conn.execute("INSERT INTO users (email) VALUES ('a@example.com')")
        for statement in NULL_DEFAULTS:
            with pytest.raises(psycopg.errors.NotNullViolation):
                conn.execute(statement)


@pytest.mark.parametrize("command", [["lint"], ["plan", "--all"]])
def test_an_unparseable_statement_is_bad_input(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_drizzle_folder(
        tmp_path,
        [("0000_users", [USERS]), ("0001_x", ['ALTER TABLE "users" ADDD COLUMN "x" int;'])],
    )
    assert run([*command, "--migrations", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith('0001_x.sql:1: statement 1 does not parse: syntax error at or near "ADDD"')
    assert len(err.splitlines()) == 1
