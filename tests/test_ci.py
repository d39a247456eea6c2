"""GitHub Actions: a run under ``GITHUB_ACTIONS=true`` appends its Markdown summary to
``$GITHUB_STEP_SUMMARY`` and prints its halt and warnings as workflow annotations, escaped
as GitHub's workflow-commands doc says (``%`` -> ``%25``, CR -> ``%0D``, LF -> ``%0A``; in
properties also ``:`` -> ``%3A`` and ``,`` -> ``%2C``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from orchestrator.ci import annotation, escape_data, escape_property
from orchestrator.cli import run
from tests.release_world import World


def test_messages_and_properties_are_escaped_as_github_says() -> None:
    assert escape_data("50% done\r\nnext") == "50%25 done%0D%0Anext"
    assert escape_property("a: b, c%\n") == "a%3A b%2C c%25%0A"


def test_a_message_cannot_end_its_command_or_start_another() -> None:
    line = annotation("warning", "bad\n::error::injected", title="t: x, y")
    assert line == "::warning title=t%3A x%2C y::bad%0A::error::injected"
    assert len(line.splitlines()) == 1


def test_annotations_never_carry_a_password() -> None:
    line = annotation("error", "cannot reach postgresql://app:s3cret@db.example.com/prod")
    assert "s3cret" not in line and line.startswith("::error::")


def in_actions(world: World, monkeypatch: pytest.MonkeyPatch, *, remote_host: bool) -> Path:
    """GitHub Actions' environment for the run; ``remote_host``: production's URL names a
    remote host without TLS (reached at 127.0.0.1 through libpq's ``hostaddr``), which the
    deploy warns about."""
    summary = world.root / "step_summary.md"
    summary.write_text("## an earlier step's summary\n\n")
    url = world.database_url
    if remote_host:
        parts = urlsplit(url)
        auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        url = f"postgresql://{auth}db.example.com:{parts.port}{parts.path}?hostaddr=127.0.0.1"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    return summary


def test_a_halted_run_writes_its_summary_and_annotations(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = in_actions(world, monkeypatch, remote_host=True)
    world.health.status = 503  # production is unhealthy once pre-flight has looked at it
    world.health.healthy_first = 1
    assert run(world.deploy_argv()) == 22
    out = capsys.readouterr().out
    errors = [line for line in out.splitlines() if line.startswith("::error")]
    warnings = [line for line in out.splitlines() if line.startswith("::warning")]
    assert len(errors) == 1
    assert errors[0].startswith("::error title=orchestrator deploy halted (exit 22)::")
    assert "monitor unhealthy" in errors[0] and "%0ARollback plan%3A" not in errors[0]
    assert "%0ARollback plan:%0A" in errors[0]  # one line: the plan's newlines are escaped
    assert len(warnings) == 1 and "db.example.com" in warnings[0] and "sslmode" in warnings[0]

    text = summary.read_text()
    assert text.startswith("## an earlier step's summary\n\n")  # appended, not replaced
    assert "orchestrator deploy `release-2025-10-21`: halted (exit 22)" in text
    assert re.search(
        r"\| migrations applied \| `0009_fat_kulan_gath`, `0010_new_colleen_wing`, "
        r"`0011_cute_skin` \|",
        text,
    )
    for trigger in ("check_backup", "migrate", "merge", "halt"):
        assert re.search(rf"^\| {trigger} \| \w+ \| [\d.]+ s \|$", text, re.MULTILINE), trigger
    assert "**Why it stopped:** monitor unhealthy" in text
    plan = text.split("**Rollback plan**", 1)[1]
    assert "```text" in plan and "git cherry-pick" in plan


def test_a_successful_run_summarises_itself_and_raises_no_annotation(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = in_actions(world, monkeypatch, remote_host=False)
    assert run([*world.deploy_argv(), "--json"]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)  # stdout stays one JSON document
    assert document["state"] == "succeeded"
    assert "::" not in captured.out and "::error" not in captured.err
    text = summary.read_text()
    assert "orchestrator deploy `release-2025-10-21`: succeeded (exit 0)" in text
    assert f"| run | `{document['run_id']}` |" in text
    assert "| released commit | `" in text and "Rollback plan" not in text


def test_outside_actions_nothing_is_written(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", world.database_url)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    world.health.status, world.health.healthy_first = 503, 1
    assert run(world.deploy_argv()) == 22
    assert "::error" not in capsys.readouterr().out
