"""A health check's URL carries its credential (``user:pw@`` and ``?token=``): the check
sends it (userinfo as HTTP basic auth), and nothing the tool writes shows it.

A real local HTTP server answers 200 only to the right basic-auth credential and token; the
CLI runs a dry run (clean, and with the monitor failing) and a real deploy that halts on the
monitor, each with and without ``--json``. stdout, stderr and every file of the state dir
(run records, audit trails) are searched for the password and the token.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from orchestrator.cli import run
from orchestrator.monitor import http_check
from orchestrator.playbook.model import HttpCheck
from tests.http_double import Reply, Request, serve
from tests.release_world import World

USER = "watcher"
PASSWORD = "pw-Sekr3t-4821"
TOKEN = "tok-Sekr3t-9377"
SECRETS = (PASSWORD, TOKEN)


@dataclass
class GuardedHealth:
    """``GET /api/health``: 401 without the credential and token, else ``status`` (200 for the
    first ``healthy_first`` requests: production breaking after pre-flight looked)."""

    base: str  # the double's http://127.0.0.1:<port>
    status: int = 200
    healthy_first: int = 0
    seen: list[tuple[str | None, str]] = field(default_factory=list)  # (Authorization, query)

    def url(self, *, user: str = USER, password: str = PASSWORD) -> str:
        host = self.base.removeprefix("http://")
        return f"http://{user}:{password}@{host}/api/health?token={TOKEN}&region=eu"

    def answer(self, request: Request) -> Reply:
        """The endpoint's contract (tests/http_double.py serves it)."""
        authorization = request.headers.get("Authorization")
        self.seen.append((authorization, urlsplit(request.target).query))
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        allowed = authorization == expected and request.query.get("token") == TOKEN
        status = self.status if len(self.seen) > self.healthy_first else 200
        return (status if allowed else 401), {"ok": allowed}


@contextmanager
def guarded_health() -> Iterator[GuardedHealth]:
    """A :class:`GuardedHealth` served on loopback for the ``with`` block."""
    endpoint = GuardedHealth("")
    with serve(endpoint.answer) as base:
        endpoint.base = base
        yield endpoint


@pytest.fixture
def guarded(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[GuardedHealth]:
    """The world's playbook, its HTTP check pointed at the guarded endpoint."""
    with guarded_health() as server:
        text = world.playbook.read_text()
        assert world.health.url in text
        world.playbook.write_text(text.replace(world.health.url, server.url()))
        monkeypatch.setenv("DATABASE_URL", world.database_url)
        yield server


def written(world: World) -> str:
    """Every file of the state dir (run records, audit trails, logs), as one text."""
    state = world.store.state_dir
    files = [p for p in sorted(Path(state).rglob("*")) if p.is_file()] if state.exists() else []
    return "\n".join(p.read_text(errors="replace") for p in files)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"{secret} leaked in:\n{text}"


def cli(world: World, argv: list[str], as_json: bool) -> list[str]:
    state = ["--state-dir", str(world.store.state_dir)]
    return ["deploy", "--playbook", str(world.playbook), *argv, *state] + (
        ["--json"] if as_json else []
    )


@pytest.mark.parametrize("as_json", [False, True])
@pytest.mark.parametrize("healthy", [True, False])
def test_a_dry_run_uses_the_credential_and_prints_none_of_it(
    world: World,
    guarded: GuardedHealth,
    capsys: pytest.CaptureFixture[str],
    healthy: bool,
    as_json: bool,
) -> None:
    guarded.status, guarded.healthy_first = (200 if healthy else 503), 1
    code = run(cli(world, ["--dry-run"], as_json))
    captured = capsys.readouterr()
    assert code == (0 if healthy else 22), captured.err
    # The check went out with the credential (basic auth) and the token (query string).
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert guarded.seen and guarded.seen[-1][0] == expected
    assert f"token={TOKEN}" in guarded.seen[-1][1]
    shown = captured.out + captured.err
    assert "token=***" in shown and f"{USER}:***@" in shown  # named, masked
    if not healthy:
        assert "error: the deploy would halt at monitor (exit 22)" in captured.err
    assert_no_secret(captured.out, captured.err, written(world))


@pytest.mark.parametrize("as_json", [False, True])
def test_a_deploy_halting_on_the_monitor_prints_none_of_it(
    world: World, guarded: GuardedHealth, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    guarded.status, guarded.healthy_first = 503, 1
    code = run(cli(world, ["--yes"], as_json))
    captured = capsys.readouterr()
    assert code == 22, captured.err
    assert guarded.seen and all(auth is not None for auth, _query in guarded.seen)
    shown = captured.out + captured.err
    assert "token=***" in shown  # the failed check is named, masked
    if not as_json:
        assert "reason:" in captured.out
    names = {p.name for p in world.store.state_dir.rglob("*") if p.is_file()}
    assert {"state.json", "audit.jsonl"} <= names
    state = written(world)
    assert "token=***" in state  # the run record and audit trail name the check, masked
    assert_no_secret(captured.out, captured.err, state)


def test_a_wrong_credential_is_a_failed_check_that_names_no_secret() -> None:
    with guarded_health() as server:
        result = http_check(server.url(password="not-it"), timeout=10.0)()
    assert not result.ok and result.detail == "expected 200, got 401"
    assert "not-it" not in result.name and TOKEN not in result.name


def test_the_label_of_a_check_with_userinfo_is_masked() -> None:
    url = f"http://{USER}:p%40ss@127.0.0.1:8080/health?token={TOKEN}"
    label = HttpCheck(url=url).label
    assert TOKEN not in label and "p%40ss" not in label
    assert label == "http://watcher:***@127.0.0.1:8080/health?token=***"
    assert HttpCheck(url=url, name="api").label == "api"
