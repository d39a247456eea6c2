"""The plan of the example release reproduces the runbook's matrix from its SQL alone; risk
levels; the JSON and Markdown shapes; `plan` and `lint` on the command line, and `plan`
against a real database (pending = not applied per validate)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import psycopg
import pytest

from orchestrator.analysis.compatibility import Compat
from orchestrator.analysis.effects import analyse_sql
from orchestrator.analysis.markdown import plan_markdown
from orchestrator.analysis.plan import build_plan, plan_migration
from orchestrator.analysis.risk import RiskLevel
from orchestrator.analysis.strategy import Strategy
from orchestrator.cli import run
from orchestrator.db.migrator import MigrateOptions
from orchestrator.db.retry import RetryPolicy
from orchestrator.drizzle.journal import read_journal
from orchestrator.migrate import migrate_database
from orchestrator.sandbox.release import EXAMPLE_MIGRATIONS, copy_migrations
from tests.analysis_helpers import analyse_on_shadow, journal_of, replayed
from tests.conftest import suite_shadow

RELEASE = ("0009_fat_kulan_gath", "0010_new_colleen_wing", "0011_cute_skin")


def matrix_rows(markdown: str) -> list[str]:
    """The rows of the compatibility matrix (the first table of the Markdown)."""
    lines = markdown.splitlines()
    start = lines.index("|---|---|---|---|---|---|") + 1
    return lines[start : lines.index("", start)]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_example_release_matrix_is_derived_from_the_sql() -> None:
    plan = build_plan(read_journal(EXAMPLE_MIGRATIONS), set(RELEASE))
    rows = {
        m.tag: (m.old_code_on_new_schema, m.new_code_on_old_schema, m.overall)
        for m in plan.migrations
    }
    assert rows == {
        # new tables: old code ignores them, new code misses them where it uses them
        "0009_fat_kulan_gath": (Compat.SAFE, Compat.CONDITIONAL, Compat.CONDITIONAL),
        "0010_new_colleen_wing": (Compat.SAFE, Compat.CONDITIONAL, Compat.CONDITIONAL),
        # new nullable columns: old code works (NULLs), new code's INSERTs fail without them
        "0011_cute_skin": (Compat.SAFE, Compat.BREAKS, Compat.BREAKS),
    }
    assert plan.strategy.strategy is Strategy.MIGRATIONS_FIRST
    assert plan.strategy.forced_by == ("0011_cute_skin",)
    objects = {
        m.tag: [o.object for o in m.objects if o.action == "create"] for m in plan.migrations
    }
    assert [o for o in objects["0009_fat_kulan_gath"] if o.startswith("table")] == [
        "table public.app_settings",
        "table public.case_queue_snapshots",
        "table public.catalog_redirect_log",
        "table public.client_settings",
    ]
    assert objects["0011_cute_skin"] == [
        "column public.case_classification_results.service_offering",
        "column public.case_classification_results.application_service",
        "column public.case_classifications.service_offering",
        "column public.case_classifications.application_service",
    ]
    risk = {m.tag: m.risk for m in plan.migrations}
    assert risk["0011_cute_skin"] is RiskLevel.HIGH
    assert risk["0010_new_colleen_wing"] is RiskLevel.LOW
    # the journal order is kept, whatever order the tags come in
    assert [m.tag for m in plan.migrations] == list(RELEASE)


@pytest.mark.parametrize(
    ("sql", "level", "reason"),
    [
        ("CREATE TABLE IF NOT EXISTS t (id int)", RiskLevel.LOW, "additive only"),
        (
            "SET lock_timeout = '1s'; CREATE INDEX IF NOT EXISTS i ON users (id)",
            RiskLevel.MEDIUM,
            "locks existing table public.users",
        ),
        ("UPDATE users SET id = id", RiskLevel.MEDIUM, "changes existing data"),
        ("DROP TABLE IF EXISTS users", RiskLevel.HIGH, "destroys data"),
        ("ALTER TABLE users ALTER COLUMN id TYPE bigint", RiskLevel.HIGH, "rewrites public.users"),
        (
            "ALTER TABLE users ADD COLUMN IF NOT EXISTS x text",
            RiskLevel.HIGH,
            "breaks new code on the old schema",
        ),
    ],
)
def test_risk_levels(sql: str, level: RiskLevel, reason: str) -> None:
    planned = plan_migration(analyse_on_shadow(sql, before="CREATE TABLE users (id int)"))
    assert planned.risk is level
    assert any(reason in r for r in planned.reasons), planned.reasons


def test_an_unparseable_statement_is_high_risk() -> None:
    # no shadow replays it: read from the SQL alone
    planned = plan_migration(analyse_sql("CREATE TABLE users (id int); CREATE TABL x"))
    assert planned.risk is RiskLevel.HIGH
    assert any("cannot be parsed" in r for r in planned.reasons), planned.reasons


def test_a_release_wide_finding_is_reported_once_where_it_is() -> None:
    # The new value is used in its own migration and in the next: PostgreSQL refuses the
    # first use inside the release's transaction; only the pending migrations are planned.
    journal = journal_of(
        ("0000_types", "CREATE TYPE mood AS ENUM ('ok');"),
        (
            "0001_glad",
            "ALTER TYPE mood ADD VALUE 'glad';--> statement-breakpoint\nSELECT 'glad'::mood;",
        ),
        ("0002_use", "SELECT 'glad'::mood;"),
    )
    plan = build_plan(journal, {"0001_glad", "0002_use"})
    assert [m.tag for m in plan.migrations] == ["0001_glad", "0002_use"]
    used = [
        (f.tag, f.statement, f.line)
        for f in plan.lint
        if f.rule == "enum-value-used-in-transaction"
    ]
    assert used == [("0001_glad", 1, 1)]
    assert plan.migrations[0].risk is RiskLevel.HIGH


def test_json_shape_is_the_documented_one() -> None:
    journal = read_journal(EXAMPLE_MIGRATIONS)
    document = build_plan(journal, set(RELEASE), replayed(journal)).to_json()
    assert set(document) == {"strategy", "migrations"}
    assert document["strategy"] == "migrations_first"
    for entry in document["migrations"]:
        assert set(entry) == {
            "tag",
            "risk",
            "reasons",
            "old_code_on_new_schema",
            "new_code_on_old_schema",
            "objects",
            "lint",
            "locks",
            "catalog",
        }
        assert entry["risk"] in ("LOW", "MEDIUM", "HIGH")
        assert entry["old_code_on_new_schema"] in ("safe", "conditional", "breaks")
        for finding in entry["lint"]:
            assert set(finding) == {"rule", "severity", "statement", "line", "message"}
        assert entry["catalog"], entry["tag"]  # every migration of the release changes something
        for change in entry["catalog"]:
            assert change["action"] in ("create", "alter", "drop")
    json.dumps(document)  # serialisable as is


def test_markdown_matrix_for_a_pull_request() -> None:
    text = plan_markdown(build_plan(read_journal(EXAMPLE_MIGRATIONS), set(RELEASE)))
    rows = matrix_rows(text)
    assert len(rows) == 3
    assert "⚠️ Conditional" in rows[0] and "⚠️ Conditional" in rows[1]
    assert "❌ No" in rows[2] and "create 4 columns" in rows[2]
    assert "**Strategy: migrations first (Strategy A).**" in text
    assert "Forced by: `0011_cute_skin`." in text


def test_plan_all_needs_no_database(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "plan", "--all", "--migrations", str(EXAMPLE_MIGRATIONS), "--json")
    assert code == 0
    document = json.loads(out)
    assert len(document["migrations"]) == 12
    code, out, _ = cli(capsys, "plan", "--all", "--migrations", str(EXAMPLE_MIGRATIONS))
    assert code == 0
    assert "strategy: migrations first (Strategy A)" in out


def test_plan_bad_input_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = cli(capsys, "plan", "--all", "--migrations", str(tmp_path / "nope"))
    assert code == 2 and "not found" in err
    args = ["plan", "--all", "--migrations", str(EXAMPLE_MIGRATIONS), "--json", "--markdown"]
    assert cli(capsys, *args)[0] == 2
    # without --all a database is needed
    code, _, err = cli(
        capsys, "plan", "--migrations", str(EXAMPLE_MIGRATIONS), "--database-url", ""
    )
    assert code == 2


def test_plan_unreachable_database_exits_30(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"
    code, _, err = cli(
        capsys,
        "plan",
        "--migrations",
        str(EXAMPLE_MIGRATIONS),
        "--database-url",
        url,
        "--retries",
        "1",
    )
    assert code == 30, err


def test_plan_pending_against_a_database(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    baseline = tmp_path / "baseline"
    copy_migrations(EXAMPLE_MIGRATIONS, baseline, count=9)
    migrate_database(
        database_url,
        read_journal(baseline),
        MigrateOptions(),
        confirm=lambda _r: True,
        retry=RetryPolicy.none(),
        shadow=suite_shadow(),
    )
    code, out, _ = cli(
        capsys,
        "plan",
        "--database-url",
        database_url,
        "--migrations",
        str(EXAMPLE_MIGRATIONS),
        "--json",
    )
    assert code == 0
    document = json.loads(out)
    assert [m["tag"] for m in document["migrations"]] == list(RELEASE)
    assert document["strategy"] == "migrations_first"
    # plan is read-only: nothing was applied
    with psycopg.connect(database_url) as conn:
        count = conn.execute("SELECT count(*) FROM drizzle.__drizzle_migrations").fetchone()
    assert count == (9,)
    code, out, _ = cli(
        capsys,
        "plan",
        "--database-url",
        database_url,
        "--migrations",
        str(EXAMPLE_MIGRATIONS),
        "--markdown",
    )
    assert code == 0 and len(matrix_rows(out)) == 3


def test_plan_on_an_up_to_date_database(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    migrate_database(
        database_url,
        read_journal(EXAMPLE_MIGRATIONS),
        MigrateOptions(),
        confirm=lambda _r: True,
        retry=RetryPolicy.none(),
        shadow=suite_shadow(),
    )
    args = ["plan", "--database-url", database_url, "--migrations", str(EXAMPLE_MIGRATIONS)]
    code, out, _ = cli(capsys, *args)
    assert code == 0 and "nothing pending" in out
    code, out, _ = cli(capsys, *args, "--json")
    assert code == 0 and json.loads(out)["migrations"] == []


def test_lint_cli_exit_codes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # the example release has warnings only: exit 0
    code, out, _ = cli(capsys, "lint", "--migrations", str(EXAMPLE_MIGRATIONS))
    assert code == 0
    assert "0 error(s)" in out and "fix:" in out
    # add a migration that drops a column: an error, exit 21 (never 1)
    folder = tmp_path / "migrations"
    shutil.copytree(EXAMPLE_MIGRATIONS, folder)
    journal_file = folder / "meta" / "_journal.json"
    document = json.loads(journal_file.read_text())
    document["entries"].append(
        {"idx": 12, "version": "7", "when": 1761000000000, "tag": "0012_drop", "breakpoints": True}
    )
    journal_file.write_text(json.dumps(document))
    (folder / "0012_drop.sql").write_text(
        'ALTER TABLE "case_classifications" DROP COLUMN "reasoning";'
    )
    code, out, _ = cli(capsys, "lint", "--migrations", str(folder), "--json")
    assert code == 21
    report = json.loads(out)
    errors = [f for f in report["findings"] if f["severity"] == "error"]
    assert [(f["tag"], f["rule"], f["statement"]) for f in errors] == [
        ("0012_drop", "ban-drop-column", 1)
    ]
    assert report["errors"] == 1
