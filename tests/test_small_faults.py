"""Issue 24, case 11: the smaller faults, each refused before anything changes.

- a pooled Neon host written as a fully qualified name with its trailing dot is still the
  pooled endpoint (a deploy refuses it, exit 2, naming the direct host);
- ``backup.path`` naming a folder that does not exist is refused (exit 2), instead of the
  dump becoming a file named like the folder.

(A health endpoint already down before the deploy: ``tests/test_deploy.py``; a pre-receive
hook's own message: ``tests/test_resume_pinned.py``.)
"""

from __future__ import annotations

import pytest

from orchestrator.cli import run
from orchestrator.db.connect import neon_direct_host
from tests.playbooks import write_playbook
from tests.release_world import World

POOLED_FQDN = "postgresql://app:pw@ep-round-river-123456-pooler.us-east-2.aws.neon.tech.:1/neondb"
DIRECT = "ep-round-river-123456.us-east-2.aws.neon.tech"


def test_a_pooled_host_with_its_trailing_dot_is_refused_before_connecting(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert neon_direct_host(POOLED_FQDN) is not None
    monkeypatch.setenv("DATABASE_URL", POOLED_FQDN)
    state = str(world.store.state_dir)
    code = run(["deploy", "--playbook", str(world.playbook), "--yes", "--state-dir", state])
    assert code == 2
    assert f"use host {DIRECT}" in capsys.readouterr().err
    assert world.store.list() == []


def test_backup_path_naming_a_missing_folder_is_refused(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = world.root / "backups" / "orchestrator"
    write_playbook(
        world.playbook,
        repo=world.repo,
        health_url=world.health.url,
        backup=f"{{kind: pg_dump, path: {missing}}}",
    )
    monkeypatch.setenv("DATABASE_URL", world.database_url)
    main_before = world.origin_main()
    state = str(world.store.state_dir)
    code = run(["deploy", "--playbook", str(world.playbook), "--yes", "--state-dir", state])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"backup.path {missing} does not exist" in err
    assert not missing.exists() and not missing.parent.exists()
    assert world.store.list() == []
    assert world.origin_main() == main_before
    # The folder, once it exists, gets the run's dump inside it.
    missing.mkdir(parents=True)
    code = run(["deploy", "--playbook", str(world.playbook), "--yes", "--state-dir", state])
    assert code == 0, capsys.readouterr().err
    [record] = world.store.list()
    assert (missing / f"{record.run_id}.dump").is_file()
