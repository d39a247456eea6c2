"""Neon's pooled endpoint: refused by every command that changes the database, before any
connection, naming the direct host; read-only commands warn and go on.

Behind Neon's PgBouncer (transaction mode) a session advisory lock, our one-deploy-at-a-time
guarantee, is released between transactions, and session settings do not stick.
"""

from __future__ import annotations

import socket

import pytest

from orchestrator.cli import run
from orchestrator.db.connect import neon_direct_host, pooler_problem
from orchestrator.sandbox.release import EXAMPLE_MIGRATIONS
from tests.release_world import World

POOLED = (
    "postgresql://app:pw@ep-round-river-123456-pooler.us-east-2.aws.neon.tech/neondb"
    "?sslmode=require"
)
DIRECT = "ep-round-river-123456.us-east-2.aws.neon.tech"
# For the commands that do connect: the same host name, but libpq dials a closed local port
# (hostaddr wins over the name), so no test ever sends a packet towards Neon.
POOLED_LOCAL = (
    "postgresql://app:pw@ep-round-river-123456-pooler.us-east-2.aws.neon.tech:1/neondb"
    "?hostaddr=127.0.0.1&sslmode=require&connect_timeout=2"
)


def test_the_pooled_host_and_its_direct_twin() -> None:
    assert neon_direct_host(POOLED) == (DIRECT.replace("123456", "123456-pooler"), DIRECT)
    assert neon_direct_host(POOLED.replace("-pooler", "")) is None
    assert neon_direct_host("postgresql://u@db-pooler.example.com/x") is None  # not Neon
    assert DIRECT in str(pooler_problem(POOLED))


@pytest.mark.parametrize(
    "command",
    [["migrate", "--yes"], ["repair", "--yes"], ["repair", "--dry-run"]],
)
def test_writing_commands_refuse_before_connecting(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # The pooled host name, dialled at a local port of ours: any attempt would arrive here.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        url = POOLED_LOCAL.replace(":1/", f":{port}/")
        code = run([*command, "--database-url", url, "--migrations", str(EXAMPLE_MIGRATIONS)])
        err = capsys.readouterr().err
        assert code == 2
        assert f"use host {DIRECT}" in err and "pw" not in err.replace("pwd", "")
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # no connection attempt was made


def test_read_only_commands_warn(capsys: pytest.CaptureFixture[str]) -> None:
    folder = str(EXAMPLE_MIGRATIONS)
    code = run(
        ["validate", "--database-url", POOLED_LOCAL, "--migrations", folder, "--retries", "1"]
    )
    err = capsys.readouterr().err
    assert "warning:" in err and "pooled endpoint" in err and DIRECT in err
    assert code == 30  # then it tries (a closed local port here): ERROR


def test_deploy_and_resume_refuse_a_pooled_url(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", POOLED_LOCAL)
    state = str(world.store.state_dir)
    code = run(["deploy", "--playbook", str(world.playbook), "--yes", "--state-dir", state])
    assert code == 2
    assert f"use host {DIRECT}" in capsys.readouterr().err
    assert world.store.list() == []  # no run was recorded
    run(["deploy", "--playbook", str(world.playbook), "--dry-run", "--json"])
    assert "pooled endpoint" in capsys.readouterr().err  # the rehearsal: a warning
