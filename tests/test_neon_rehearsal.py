"""``deploy --dry-run --rehearse-on neon-branch`` against the Neon contract double backed by
real PostgreSQL: the pending migrations run for real on a temporary branch (a real copy of
production's database), production stays as it was, and the branch is deleted, also when
the rehearsal is interrupted (SIGTERM, SIGINT) in the middle of a migration.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from orchestrator.cli import run
from tests.drizzle_helpers import schema_fingerprint, tracking_rows
from tests.neon_double import NeonState
from tests.release_world import World
from tests.test_neon_restore import KEY, backed_neon
from tests.test_rehearsal import everything
from tests.test_resume import add_slow_migration

__all__ = ["backed_neon"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def rehearsal_branches(state: NeonState) -> list[str]:
    return [name for name in state.branch_names() if name.startswith("rehearsal-")]


def made_databases(state: NeonState) -> list[str]:
    """The databases the double made that still exist (production's is not among them)."""
    assert state.backing is not None
    return [d for d in state.backing.made if state.backing.exists(d)]


def test_a_rehearsal_on_a_branch_migrates_the_branch_and_deletes_it(
    world: World, backed_neon: NeonState, capsys: pytest.CaptureFixture[str]
) -> None:
    before = everything(world)
    fingerprint, rows = schema_fingerprint(world.database_url), tracking_rows(world.database_url)
    code = run([*world.rehearse_argv("neon-branch"), "--json"])
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert code == 0, document["plan"]
    assert document["rehearsed_on"].startswith("Neon branch rehearsal-")
    migrate = next(s for s in document["steps"] if s["name"] == "migrate")
    assert "3 migration(s) applied for real on the copy" in migrate["summary"]
    assert document["predicted_validation"]["status"] == "SAFE"
    # The branch had a read-write compute and the rehearsal asked for production's database.
    created = next(b for m, p, b in backed_neon.requests if m == "POST" and p.endswith("/branches"))
    assert created["endpoints"] == [{"type": "read_write"}]
    assert "parent_lsn" not in created["branch"]  # production's head
    asked = next(p for m, p, _b in backed_neon.requests if "/connection_uri?" in p)
    assert f"database_name={backed_neon.database_name}" in asked
    # Production untouched, the branch and its database gone.
    assert everything(world) == before
    assert schema_fingerprint(world.database_url) == fingerprint
    assert tracking_rows(world.database_url) == rows
    assert rehearsal_branches(backed_neon) == [] and made_databases(backed_neon) == []
    assert any(m == "DELETE" for m, _p, _b in backed_neon.requests)
    assert KEY not in captured.out + captured.err
    # The prediction is the real deploy's outcome.
    record = world.deploy(environ={"DATABASE_URL": world.database_url, "NEON_API_KEY": KEY})
    assert record.exit_code == code


def test_without_the_neon_block_it_is_a_usage_error(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", world.database_url)
    fingerprint = schema_fingerprint(world.database_url)
    code = run(world.rehearse_argv("neon-branch"))
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [
        "error: --rehearse-on neon-branch needs the neon: block of the playbook (project_id, ...)"
    ]
    assert schema_fingerprint(world.database_url) == fingerprint


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_rehearsal_still_deletes_its_branch(
    world: World, backed_neon: NeonState, signum: signal.Signals
) -> None:
    # Longer than any wait below: the test always interrupts it.
    add_slow_migration(world, seconds=3600)
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE sleep_marker ()")  # the branch copies it: 0012 sleeps there
    fingerprint, rows = schema_fingerprint(world.database_url), tracking_rows(world.database_url)
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *world.rehearse_argv("neon-branch")],
        cwd=REPO_ROOT,
        env={**os.environ, "DATABASE_URL": world.database_url, "NEON_API_KEY": KEY},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        sleeping_in = wait_for_sleep(backed_neon, process)
        assert sleeping_in.startswith("neon_br_rehearsal_")  # the branch's database
        process.send_signal(signum)
        _out, err = process.communicate()  # the interrupted rehearsal ends
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # click turns the interruption into Abort: exit 2, and indeed nothing was committed.
    assert process.returncode == 2, err.decode()
    assert f"interrupted by {signum.name}" in err.decode() and KEY not in err.decode()
    assert rehearsal_branches(backed_neon) == []
    assert made_databases(backed_neon) == []
    assert schema_fingerprint(world.database_url) == fingerprint
    assert tracking_rows(world.database_url) == rows


def wait_for_sleep(state: NeonState, process: subprocess.Popen[bytes]) -> str:
    """The database in which the rehearsal's slow migration statement is running now: waits
    for that, or for the rehearsal to end (a failure), however slow the machine is.

    Only the databases the double made count: the shadow, on the same server, replays the
    migration too (its sleep is 0 s there, but can be caught)."""
    assert state.backing is not None
    with psycopg.connect(state.backing.cluster_url, autocommit=True) as conn:
        while True:
            if process.poll() is not None:
                pytest.fail(f"rehearsal ended early: {process.communicate()[1].decode()}")
            row = conn.execute(
                "SELECT datname FROM pg_stat_activity "
                "WHERE query LIKE 'SELECT pg_sleep%%' AND state = 'active' "
                "AND datname = ANY(%s)",
                (list(state.backing.made),),
            ).fetchone()
            if row:
                return str(row[0])
            time.sleep(0.05)
