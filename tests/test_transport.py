"""A remote database host without TLS: deploy, resume and rehearsal warn, and a playbook with
``database.require_ssl: true`` refuses before anything happens.

The server is the local test cluster, reached through a conninfo that names a remote host
(``host=db.example.com hostaddr=127.0.0.1``): libpq connects to 127.0.0.1, but by name the
host is remote, exactly what the check looks at.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from orchestrator.cli import run
from tests.drizzle_helpers import schema_fingerprint
from tests.release_world import World, build_world


@pytest.fixture
def remote_world(tmp_path: Path, baseline_url: str) -> Iterator[tuple[World, str]]:
    params = conninfo_to_dict(baseline_url)
    if params.get("host") not in ("127.0.0.1", "localhost"):
        pytest.skip("needs a server on 127.0.0.1 to pose as a remote host")
    remote = make_conninfo(baseline_url, host="db.example.com", hostaddr="127.0.0.1")
    with build_world(tmp_path, baseline_url, at_baseline=True) as world:
        yield world, remote


def deploy(world: World, *extra: str) -> int:
    return run(world.deploy_argv(*extra))


def test_deploy_to_a_remote_host_without_tls_warns_once(
    remote_world: tuple[World, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world, remote = remote_world
    monkeypatch.setenv("DATABASE_URL", remote)
    assert deploy(world) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert len(warnings) == 1
    assert "db.example.com" in warnings[0] and "sslmode=require" in warnings[0]


def test_rehearsal_warns_too(
    remote_world: tuple[World, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world, remote = remote_world
    monkeypatch.setenv("DATABASE_URL", remote)
    code = run(["deploy", "--playbook", str(world.playbook), "--dry-run"])
    lines = capsys.readouterr().err.splitlines()
    assert code == 0, lines
    assert lines[0].startswith("rehearsal on production")  # the bounds, before it connects
    assert any(line.startswith("warning: ") and "db.example.com" in line for line in lines)


def test_require_ssl_in_the_playbook_refuses_before_anything_happens(
    remote_world: tuple[World, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world, remote = remote_world
    world.playbook.write_text(
        world.playbook.read_text().replace(
            "database: {url_env: DATABASE_URL}",
            "database: {url_env: DATABASE_URL, require_ssl: true}",
        )
    )
    monkeypatch.setenv("DATABASE_URL", remote)
    before = (schema_fingerprint(world.database_url), world.origin_main())
    assert deploy(world) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "db.example.com" in err
    assert (schema_fingerprint(world.database_url), world.origin_main()) == before
    assert not world.store.runs_dir.exists() or world.store.list() == []
    # With TLS asked for, the check passes (the connection itself then needs a TLS server).
    monkeypatch.setenv("DATABASE_URL", remote + " sslmode=require")
    code = run(["deploy", "--playbook", str(world.playbook), "--dry-run"])
    assert code == 30  # the test server has no TLS: cannot connect, but the check passed
    assert "warning" not in capsys.readouterr().err
