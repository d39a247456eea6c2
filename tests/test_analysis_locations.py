"""Lint findings (and every analysed statement) point at the line of the .sql file where the
statement starts, not at its statement number; and the clean drizzle-kit folders lint
without a single not-rerunnable warning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.analysis.effects import FolderAnalysis, analyse_migrations, analyse_sql
from orchestrator.analysis.lint import lint_migrations
from orchestrator.analysis.markdown import plan_markdown
from orchestrator.analysis.plan import build_plan
from orchestrator.cli import run
from orchestrator.drizzle.journal import read_journal, split_statements
from orchestrator.sandbox.release import EXAMPLE_MIGRATIONS

REPO = Path(__file__).resolve().parent.parent
RELEASE_FIXTURE = REPO / "tests" / "fixtures" / "drizzle" / "release-0009-0011" / "migrations"
CLEAN_FOLDERS = [RELEASE_FIXTURE, EXAMPLE_MIGRATIONS]


def analyse(folder: Path) -> FolderAnalysis:
    journal = read_journal(folder)
    return analyse_migrations([(m.tag, m.statements) for m in journal.migrations])


def test_statement_lines_in_the_fixture_files() -> None:
    analysis = analyse(RELEASE_FIXTURE)
    lines = {m.tag: [s.line for s in m.statements] for m in analysis.migrations}
    # 0009_fat_kulan_gath.sql: four CREATE TABLEs (lines 1, 7, 16, 25), then three indexes
    assert lines["0009_fat_kulan_gath"] == [1, 7, 16, 25, 34, 35, 36]
    assert lines["0000_initial"] == [1, 10, 19, 20]
    assert lines["0004_case_escalations"] == [1, 8]
    assert lines["0011_cute_skin"] == [1, 2, 3, 4]


@pytest.mark.parametrize("folder", CLEAN_FOLDERS, ids=["release-fixture", "example"])
def test_every_statement_line_starts_that_statement(folder: Path) -> None:
    migrations = analyse(folder).migrations
    assert migrations and all(m.statements for m in migrations)
    for migration in migrations:
        text = (folder / f"{migration.tag}.sql").read_text().splitlines()
        for statement in migration.statements:
            assert text[statement.line - 1].strip()[:20] == statement.sql[:20], (
                migration.tag,
                statement.number,
                statement.line,
            )


def test_lines_skip_blank_lines_and_comments() -> None:
    text = (
        "-- header\n"
        "/* a block\n   comment /* nested */ */\n"
        "\n"
        "SET lock_timeout = '1s';\n"  # line 5
        "-- drop it\n"
        "ALTER TABLE users DROP COLUMN nick;--> statement-breakpoint\n"  # line 7
        "\n"
        "-- é, ü: characters, not bytes\n"
        "ALTER TABLE users\n"  # line 10
        "  DROP COLUMN email;--> statement-breakpoint\n"
        "\n"
        "ALTER TABLE users DROP;"  # line 13, unparseable (the CLI refuses the folder)
    )
    folder = analyse_migrations(
        [
            ("0000", ['CREATE TABLE users (id int, nick text, email text, "é" text)']),
            ("0001", split_statements(text)),
        ]
    )
    migration = folder.by_tag("0001")
    assert [(s.number, s.line) for s in migration.statements] == [(1, 5), (2, 7), (3, 10), (4, 13)]
    findings = lint_migrations([migration])
    assert [(f.rule, f.statement, f.line, f.location) for f in findings] == [
        ("ban-drop-column", 2, 7, "0001.sql:7"),
        ("ban-drop-column", 3, 10, "0001.sql:10"),
    ]


CUSTOM = """-- Custom SQL migration file, put your code below! --
SET lock_timeout = '5s';--> statement-breakpoint

-- seed the default setting
INSERT INTO "app_settings" ("key", "value")
VALUES ('queue', 'on');--> statement-breakpoint
ALTER TABLE "case_classifications" DROP COLUMN IF EXISTS "subcategory";
"""


def with_custom_migration(folder: Path, target: Path) -> Path:
    """A copy of ``folder`` plus a hand-written migration 0012_custom.sql (CUSTOM)."""
    journal = read_journal(folder)
    target.mkdir()
    (target / "meta").mkdir()
    for migration in journal.migrations:
        (target / f"{migration.tag}.sql").write_text(migration.sql)
    document = json.loads((folder / "meta" / "_journal.json").read_text())
    document["entries"].append(
        {
            "idx": 12,
            "version": "7",
            "when": 1761000000000,
            "tag": "0012_custom",
            "breakpoints": True,
        }
    )
    (target / "meta" / "_journal.json").write_text(json.dumps(document))
    (target / "0012_custom.sql").write_text(CUSTOM)
    return target


def test_lint_cli_prints_file_lines(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = with_custom_migration(RELEASE_FIXTURE, tmp_path / "migrations")
    assert run(["lint", "--migrations", str(folder)]) == 21
    out = capsys.readouterr().out
    # statement 2 starts on line 5 (after a blank line and a comment), statement 3 on line 7
    assert "0012_custom.sql:5: warning not-rerunnable: INSERT on table public.app_settings" in out
    assert "0012_custom.sql:7: error ban-drop-column" in out
    assert "0012_custom.sql:2:" not in out and "0012_custom.sql:3:" not in out
    assert run(["lint", "--migrations", str(folder), "--json"]) == 21
    report = json.loads(capsys.readouterr().out)
    custom = [f for f in report["findings"] if f["tag"] == "0012_custom"]
    assert [(f["rule"], f["statement"], f["line"]) for f in custom] == [
        ("not-rerunnable", 2, 5),
        ("ban-drop-column", 3, 7),
    ]
    markdown = plan_markdown(build_plan(read_journal(folder), {"0012_custom"}))
    assert "| `0012_custom.sql:7` | error | `ban-drop-column` |" in markdown


@pytest.mark.parametrize("folder", CLEAN_FOLDERS, ids=["release-fixture", "example"])
def test_clean_drizzle_kit_folders_have_no_not_rerunnable_warning(folder: Path) -> None:
    findings = lint_migrations(analyse(folder).migrations)
    assert [f for f in findings if f.rule == "not-rerunnable"] == []
    # what is left is advice about locks on existing tables, which is real
    assert {f.rule for f in findings} == {
        "require-lock-timeout",
        "require-concurrent-index-creation",
    }
    assert all(f.severity == "warning" for f in findings)


def test_not_rerunnable_fires_on_a_hand_written_seed(tmp_path: Path) -> None:
    folder = with_custom_migration(EXAMPLE_MIGRATIONS, tmp_path / "migrations")
    findings = lint_migrations(analyse(folder).migrations)
    [finding] = [f for f in findings if f.rule == "not-rerunnable"]
    assert (finding.tag, finding.line) == ("0012_custom", 5)
    assert "adds its rows again" in finding.message


def test_statement_text_counts_characters_not_bytes() -> None:
    # pglast gives locations in characters of the text it parsed
    effects = analyse_sql("INSERT INTO t VALUES ('ééé');\n  DELETE FROM t WHERE v = 'ü'")
    assert [(s.sql, s.line) for s in effects.statements] == [
        ("INSERT INTO t VALUES ('ééé')", 1),
        ("DELETE FROM t WHERE v = 'ü'", 2),
    ]
