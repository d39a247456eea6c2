"""The validate and migrate commands as a user runs them: exit codes, output, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import run
from tests.drizzle_helpers import FIXTURE_MIGRATIONS, prefix_folder, schema_fingerprint

FIXTURE = str(FIXTURE_MIGRATIONS)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_validate_then_migrate_then_validate(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "validate", "--database-url", database_url, "--migrations", FIXTURE)
    assert code == 10
    assert "NEEDS_MIGRATION" in out and "0010_new_colleen_wing" in out

    code, out, _ = cli(
        capsys, "migrate", "--database-url", database_url, "--migrations", FIXTURE, "--yes"
    )
    assert code == 0
    assert "applied 12 migration(s)" in out

    code, out, _ = cli(
        capsys, "validate", "--database-url", database_url, "--migrations", FIXTURE, "--json"
    )
    document = json.loads(out)
    assert code == 0 and document["status"] == "SAFE"
    assert {c["name"] for c in document["checks"]} >= {"connectivity", "tracking_table"}
    assert all(m["state"] == "applied" for m in document["migrations"])
    assert document["recommendation"]


def test_json_names_the_migration_drizzle_would_skip(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = prefix_folder(FIXTURE_MIGRATIONS, 10, tmp_path / "prefix")
    assert (
        cli(
            capsys, "migrate", "--database-url", database_url, "--migrations", str(prefix), "--yes"
        )[0]
        == 0
    )
    code, out, _ = cli(
        capsys, "validate", "--database-url", database_url, "--migrations", FIXTURE, "--json"
    )
    document = json.loads(out)
    assert code == 10
    finding = next(f for f in document["findings"] if f["code"] == "out_of_order")
    assert finding["migration"] == "0010_new_colleen_wing"
    pending = [m["tag"] for m in document["migrations"] if m["state"] == "pending"]
    assert pending == ["0010_new_colleen_wing", "0011_cute_skin"]


@pytest.mark.parametrize(
    ("url", "exit_code"),
    [
        ("postgresql://alice:hunter2secret@127.0.0.1:{port}/db", 30),
        ("postgresql://alice:hunter2%secret@127.0.0.1:{port}/db", 2),  # "%" left unencoded
        ("postgresql://alice:hunter2@secret@127.0.0.1:{port}/db", 2),  # "@" left unencoded
        ("postgresql://alice@127.0.0.1:{port}/db?password=hunter2secret&sslmode=disable", 30),
        ("host=127.0.0.1 port={port} user=alice password=hunter2secret dbname=db", 30),
    ],
)
def test_password_never_printed(
    database_url: str, capsys: pytest.CaptureFixture[str], url: str, exit_code: int
) -> None:
    from orchestrator.sandbox.pg import free_port

    url = url.format(port=free_port())
    for extra in ([], ["--json"]):
        code, out, err = cli(
            capsys,
            "validate",
            "--database-url",
            url,
            "--migrations",
            FIXTURE,
            "--retries",
            "1",
            *extra,
        )
        assert code == exit_code, err
        assert "hunter2" not in out + err and "secret" not in out + err
        assert "***" in out + err
        if extra and out:
            json.loads(out)  # a masked password leaves the document whole


def test_a_key_value_password_is_masked_and_the_json_report_stays_whole(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from psycopg.conninfo import make_conninfo

    url = make_conninfo(database_url, password="hunter2secret")  # the server trusts anyone
    code, out, err = cli(
        capsys, "validate", "--database-url", url, "--migrations", FIXTURE, "--json"
    )
    assert code == 10, err
    assert "hunter2secret" not in out + err
    assert json.loads(out)["status"] == "NEEDS_MIGRATION"


def test_a_url_that_is_not_utf8_is_bad_input() -> None:
    environ = {**os.environb, b"DATABASE_URL": b"postgresql://alice:caf\xe9secret@127.0.0.1/db"}
    argv = [sys.executable, "-m", "orchestrator.cli", "validate", "--migrations", FIXTURE]
    done = subprocess.run(argv, env=environ, capture_output=True, text=True, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: bad database URL postgresql://alice:***@127.0.0.1/db")
    assert "not UTF-8 text" in done.stderr and "secret" not in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["validate", "--migrations", "/no/such/folder"], "migrations folder not found"),
        (["validate", "--migrations", "{empty}"], "no meta/_journal.json"),
        (["validate", "--migrations", "{badjson}"], "malformed JSON"),
        (["validate", "--migrations", "{nofile}"], "has no file 0011_cute_skin.sql"),
        (
            ["validate", "--migrations", FIXTURE, "--database-url", "postgresql://u@h:port/db"],
            "bad database URL",
        ),
        (
            ["validate", "--migrations", FIXTURE, "--database-url", "mysql://u:pw@h/db"],
            "not a PostgreSQL URL",
        ),
        (["validate", "--migrations", FIXTURE, "--database-url", ""], "no database URL"),
        (["migrate", "--migrations", FIXTURE], "pass --yes"),
        (["migrate", "--migrations", FIXTURE, "--yes", "--lock-timeout", "soon"], "--lock-timeout"),
        (["migrate", "--migrations", FIXTURE, "--yes", "--lock-timeout", "0"], "at least 1ms"),
        (
            ["migrate", "--migrations", FIXTURE, "--yes", "--lock-timeout", "500"],
            "error: --lock-timeout: 500 needs a unit: 500ms (as PostgreSQL reads it) or 500s?",
        ),
        (
            ["repair", "--migrations", FIXTURE, "--yes", "--lock-timeout", "2"],
            "error: --lock-timeout: 2 needs a unit: 2ms (as PostgreSQL reads it) or 2s?",
        ),
        (
            ["migrate", "--migrations", FIXTURE, "--yes", "--statement-timeout", "300000"],
            "error: --statement-timeout: 300000 needs a unit: 300000ms (as PostgreSQL reads it)"
            " or 300000s?",
        ),
        (
            ["validate", "--migrations", FIXTURE, "--database-url", "postgresql://u@h:1,x:y/db"],
            "port '1,y' is not a number",
        ),
        (
            ["migrate", "--migrations", FIXTURE, "--yes", "--statement-timeout", "-5s"],
            "--statement-timeout",
        ),
        (["validate", "--migrations", FIXTURE, "--colour"], "No such option"),
        (["validate", "--migrations", FIXTURE, "--retries", "0"], "--retries"),
        (["validate"], "Missing option '--migrations'"),
        (["frobnicate"], "No such command"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
    database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    badjson = prefix_folder(FIXTURE_MIGRATIONS, 12, tmp_path / "badjson")
    (badjson / "meta" / "_journal.json").write_text('{"entries": [')
    nofile = prefix_folder(FIXTURE_MIGRATIONS, 12, tmp_path / "nofile")
    (nofile / "0011_cute_skin.sql").unlink()
    folders = {"{empty}": str(empty), "{badjson}": str(badjson), "{nofile}": str(nofile)}
    argv = [folders.get(a, a) for a in args]
    monkeypatch.setenv("DATABASE_URL", database_url)

    before = schema_fingerprint(database_url)
    code, out, err = cli(capsys, *argv)
    assert code == 2, (out, err)
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in out + err
    assert schema_fingerprint(database_url) == before


def test_console_script_never_shows_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": "postgresql://u:pw@127.0.0.1:1/x"}
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "validate", "--migrations", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: ")


def renamed_tags(folder: Path, renames: dict[str, str]) -> Path:
    """``folder`` with some migrations' tags renamed (journal entry and file)."""
    journal = folder / "meta" / "_journal.json"
    document = json.loads(journal.read_text())
    for entry in document["entries"]:
        if entry["tag"] in renames:
            (folder / f"{entry['tag']}.sql").rename(folder / f"{renames[entry['tag']]}.sql")
            entry["tag"] = renames[entry["tag"]]
    journal.write_text(json.dumps(document))
    return folder


def test_migrate_prints_tags_that_look_like_markup_as_written(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tags = {"0010_new_colleen_wing": "0010_[bold]colleen", "0011_cute_skin": "0011_[x]skin"}
    folder = renamed_tags(prefix_folder(FIXTURE_MIGRATIONS, 12, tmp_path / "m"), tags)
    argv = ["migrate", "--database-url", database_url, "--migrations", str(folder), "--yes"]
    code, out, err = cli(capsys, *argv)
    assert code == 0, err
    for tag in tags.values():
        assert f"applying {tag} …" in err
        assert tag in out.split("applied 12 migration(s):")[1].splitlines()[0]
        assert f"{tag} " in out  # its row of the table


UNREACHABLE = ["--database-url", "postgresql://u@127.0.0.1:1/db", "--retries", "1"]


@pytest.mark.parametrize(
    ("argv", "exit_code"),
    [
        (["validate", "--json", "--migrations", "{missing}"], 2),
        (["migrate", "--json", "--yes", "--migrations", "{missing}"], 2),
        (["plan", "--json", "--all", "--migrations", "{missing}"], 2),
        (["plan", "--json", "--bogus"], 2),
        (["lint", "--json", "--migrations", "{missing}"], 2),
        (["repair", "--json", "--yes", "--migrations", "{missing}"], 2),
        (["inspect", "--json", "--migrations", "{missing}"], 2),
        (["deploy", "--json", "--yes", "--playbook", "{missing}"], 2),
        (["deploy", "--json", "--dry-run", "--playbook", "{missing}"], 2),
        (["resume", "--json", "--yes", "--state-dir", "{empty}"], 2),
        (["rollback", "nope", "--json", "--yes", "--state-dir", "{empty}"], 2),
        (["runs", "--json", "--state-dir", "{file}"], 2),
        (["runs", "abandon", "nope", "--json", "--state-dir", "{empty}"], 2),
        (["show", "nope", "--json", "--state-dir", "{empty}"], 2),
        (["validate", "--json", "--migrations", FIXTURE, *UNREACHABLE], 30),
        (["migrate", "--json", "--yes", "--migrations", FIXTURE, *UNREACHABLE], 30),
        (["plan", "--json", "--migrations", FIXTURE, *UNREACHABLE], 30),
        (["repair", "--json", "--yes", "--migrations", FIXTURE, *UNREACHABLE], 30),
        (["inspect", "--json", "--migrations", FIXTURE, *UNREACHABLE], 30),
    ],
    ids=lambda value: " ".join(value[:2]) if isinstance(value, list) else str(value),
)
def test_json_on_an_error_path_is_one_json_document_and_one_line_on_stderr(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    exit_code: int,
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("")
    places = {
        "missing": tmp_path / "missing",
        "empty": tmp_path / "empty",
        "file": tmp_path / "file",
    }
    code, out, err = cli(capsys, *(arg.format(**places) for arg in argv))
    [line] = err.splitlines()
    document = json.loads(out)  # one document, nothing else
    assert code == exit_code == document["exit_code"]
    assert document["status"] == "ERROR"
    assert document["findings"][0]["code"] == {2: "usage", 30: "database_error"}[exit_code]
    assert [f["message"] for f in document["findings"]] == [line.removeprefix("error: ")]


def test_a_command_without_json_prints_no_document_on_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "validate", "--migrations", str(tmp_path / "missing"))
    assert code == 2 and out == "" and err.startswith("error: ")
