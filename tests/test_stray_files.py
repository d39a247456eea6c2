"""A migration-named file without a journal entry: drizzle ignores it, so do we, and say so.

Every command that reads a migrations folder reports the file as a warning, in its text
output and in its JSON document, and goes on: the file is never applied and never a refusal.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from orchestrator.cli import run
from orchestrator.sandbox.release import EXAMPLE_MIGRATIONS
from tests.drizzle_helpers import tracking_rows

STRAY = "0012_abandoned_idea.sql"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    shutil.copytree(EXAMPLE_MIGRATIONS, target)
    (target / STRAY).write_text('CREATE TABLE "never_applied" ("id" integer);\n')
    return target


def database_args(url: str, folder: Path) -> list[str]:
    return ["--database-url", url, "--migrations", str(folder), "--json"]


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (["validate"], 10),
        (["plan"], 0),
        (["inspect"], 0),
        (["repair", "--dry-run"], 0),
        (["migrate", "--yes"], 0),
    ],
)
def test_database_commands_warn_and_go_on(
    database_url: str,
    folder: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    code: int,
) -> None:
    exit_code = run([*command, *database_args(database_url, folder)])
    captured = capsys.readouterr()
    assert exit_code == code, captured.err
    document = json.loads(captured.out)
    assert any(STRAY in w and "drizzle never applies it" in w for w in document["journal_warnings"])
    assert f"warning: {STRAY} has no entry" in captured.err
    if command[0] == "validate":
        assert [f["code"] for f in document["findings"]].count("stray_file") == 1
    if command[0] == "migrate":
        assert len(tracking_rows(database_url)) == 12  # the journal's, not the stray file


def test_lint_warns_and_goes_on(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exit_code = run(["lint", "--migrations", str(folder), "--json"])
    captured = capsys.readouterr()
    assert exit_code == 0
    assert STRAY in " ".join(json.loads(captured.out)["journal_warnings"])


def test_validate_text_names_the_file(
    database_url: str, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code = run(["validate", "--database-url", database_url, "--migrations", str(folder)])
    assert exit_code == 10
    assert STRAY in capsys.readouterr().out
