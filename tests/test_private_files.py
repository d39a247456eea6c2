"""What a run leaves on disk is the operator's alone, and holds no secret.

Run folders are 0700 and their files (state, audit trail, lock) 0600 whatever the umask; a
``pg_dump`` backup is written under a temporary name, readable by its owner only, and
renamed once ``pg_restore --list`` accepts it; a recorded dump counts only while it is
intact; ``pg_dump`` dies with the process that started it; check URLs are masked wherever
they are written; the library's default answer to a confirmation is no.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from orchestrator.engine.run import Interaction
from orchestrator.engine.steps.backup import dump_intact, partial_path, pg_dump
from orchestrator.redaction import redact
from tests.playbooks import write_playbook
from tests.release_world import World

TOKEN = "chk-7f3e9a-token"


def group_or_world_readable(root: Path) -> list[str]:
    found = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            found.append(f"{path} {oct(mode)}")
    return found


def test_with_umask_000_a_deploy_leaves_nothing_readable_by_others(world: World) -> None:
    dump = world.root / "dumps" / "nested" / "pre-release.dump"  # its folders made by the run
    write_playbook(
        world.playbook,
        repo=world.repo,
        health_url=f"{world.health.url}?token={TOKEN}",
        backup=f"{{kind: pg_dump, path: {dump}}}",
        duration="200ms",
        interval="100ms",
    )
    previous = os.umask(0)
    try:
        record = world.deploy()
    finally:
        os.umask(previous)
    assert record.state == "succeeded", record.halt_reason
    assert group_or_world_readable(world.store.runs_dir) == []
    assert group_or_world_readable(world.root / "dumps") == []
    run_dir = world.store.run_dir(record.run_id)
    for written in run_dir.iterdir():
        assert TOKEN not in written.read_text(errors="replace"), written


def test_a_partial_dump_is_replaced_and_the_dump_appears_complete(
    database_url: str, tmp_path: Path
) -> None:
    target = tmp_path / "pre.dump"
    partial = partial_path(target)
    partial.write_bytes(b"half a dump from a killed run")
    outcome = pg_dump(database_url, target)
    assert not partial.exists()
    assert target.is_file() and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert dump_intact(outcome)


def test_a_recorded_dump_counts_only_while_it_is_intact(database_url: str, tmp_path: Path) -> None:
    target = tmp_path / "pre.dump"
    outcome = pg_dump(database_url, target)
    with target.open("ab") as handle:
        handle.write(b"tampered")
    assert not dump_intact(outcome)
    target.unlink()
    assert not dump_intact(outcome)


def test_check_urls_are_masked_and_confirmations_default_to_no() -> None:
    shown = redact(f"GET https://ops:pw@app.example/health?token={TOKEN}&region=eu failed")
    assert TOKEN not in shown and "pw@" not in shown
    assert "token=***" in shown and "region=***" in shown
    assert Interaction().confirm("Apply 3 migrations to production?") is False
