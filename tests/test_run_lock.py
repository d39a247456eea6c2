"""One deploy at a time: the database's run lock, on the real cluster."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from orchestrator.cli import run
from orchestrator.db import runlock
from orchestrator.engine.run import start
from orchestrator.errors import UsageError
from orchestrator.runs import RunRecord
from tests.drizzle_helpers import schema_fingerprint
from tests.release_world import World, build_world

EXAMPLE = Path(__file__).resolve().parents[1] / "playbooks" / "examples" / "migrations"


def test_lock_key_and_application_name_are_pure() -> None:
    # Every process (another deploy, another version) must compute the same key: one with
    # other hash seeds agrees with this one.
    code = "from orchestrator.db import runlock; print(runlock.lock_key('drizzle', 't'))"
    for seed in ("1", "2"):
        other = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        assert int(other.stdout) == runlock.lock_key("drizzle", "t")
    assert runlock.lock_key("drizzle", "a") != runlock.lock_key("drizzle", "b")
    name = runlock.application_name("20251021T143005Z-3fa9c2")
    assert name == "orchestrator run 20251021T143005Z-3fa9c2"
    assert len(name.encode()) <= 63  # PostgreSQL truncates longer names
    assert runlock.run_id_of(name) == "20251021T143005Z-3fa9c2"
    assert runlock.run_id_of("psql") is None


def test_second_holder_is_refused_at_once_naming_the_first(database_url: str) -> None:
    owner = runlock.application_name("20251021T143005Z-aaaaaa")
    with runlock.RunLock(database_url, schema="drizzle", table="t", owner=owner):
        with (
            pytest.raises(UsageError, match="run 20251021T143005Z-aaaaaa") as refused,
            runlock.RunLock(database_url, schema="drizzle", table="t", owner="orchestrator x y"),
        ):
            pass
        assert refused.value.exit_code == 2
        # Another tracking table is another lock.
        with runlock.RunLock(database_url, schema="drizzle", table="other", owner="orchestrator"):
            pass
    # Released with its session: the next holder gets it.
    with runlock.RunLock(database_url, schema="drizzle", table="t", owner=owner):
        pass


TERMINATE = b"X\x00\x00\x00\x04"  # the protocol's Terminate message: the session ends


@contextmanager
def relay_slow_to_end_sessions(port: int) -> Iterator[tuple[int, threading.Event]]:
    """A TCP relay to the server at ``port`` (the relay's port, and an event): it passes
    everything on, except that a client's Terminate reaches the server, and the session
    ends, only once the event is set. A slow network, or a proxy, does that."""
    delivered = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))

    def pump(source: socket.socket, target: socket.socket, hold_terminate: bool) -> None:
        try:
            while data := source.recv(65536):
                if hold_terminate and data == TERMINATE:
                    delivered.wait()
                target.sendall(data)
        except OSError:
            pass  # the other side is gone

    def serve() -> None:
        client, _ = listener.accept()
        with client, socket.create_connection(("127.0.0.1", port)) as server:
            back = threading.Thread(target=pump, args=(server, client, False), daemon=True)
            back.start()
            pump(client, server, True)
            delivered.wait()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], delivered
    finally:
        delivered.set()
        listener.close()
        thread.join()


def test_a_released_lock_is_free_before_the_server_sees_its_session_end(
    database_url: str,
) -> None:
    port = int(psycopg.conninfo.conninfo_to_dict(database_url)["port"])
    with relay_slow_to_end_sessions(port) as (relay_port, delivered):
        relayed = psycopg.conninfo.make_conninfo(database_url, port=relay_port)
        with runlock.RunLock(relayed, schema="drizzle", table="t", owner="orchestrator run a"):
            pass
        assert not delivered.is_set()  # the first session is still open on the server
        with runlock.RunLock(database_url, schema="drizzle", table="t", owner="orchestrator"):
            pass


def test_a_dead_holder_releases_the_lock_with_its_session(database_url: str) -> None:
    key = runlock.lock_key("drizzle", "__drizzle_migrations")
    holder = psycopg.connect(database_url, autocommit=True, application_name="orchestrator run x")
    holder.execute("SELECT pg_advisory_lock(%s)", (key,))
    pid = holder.info.backend_pid
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))  # the process died
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            time.sleep(0.02)  # until the server has ended the session
        holder.close()
        owner = runlock.application_name("20251021T143005Z-bbbbbb")
        with runlock.RunLock(
            database_url, schema="drizzle", table="__drizzle_migrations", owner=owner
        ):
            taken = admin.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            assert taken == (False,)  # ours now: no other session gets it


def test_two_concurrent_deploys_exactly_one_migrates(tmp_path: Path, baseline_url: str) -> None:
    with build_world(tmp_path / "a", baseline_url, at_baseline=True) as first:
        # A second operator with their own clone and playbook, same production database.
        second_root = tmp_path / "b"
        second_root.mkdir()
        barrier = threading.Barrier(2)
        results: dict[str, RunRecord | BaseException] = {}

        def deploy(name: str, world: World) -> None:
            interaction = world.interaction()
            barrier.wait()
            try:
                results[name] = start(world.playbook, world.store, interaction)
            except BaseException as exc:
                results[name] = exc

        second = World(
            first.root,
            first.database_url,
            first.repo,
            first.health,
            first.playbook,
            type(first.store)(second_root / ".orchestrator"),
        )
        threads = [
            threading.Thread(target=deploy, args=("a", first)),
            threading.Thread(target=deploy, args=("b", second)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    outcomes = sorted(results.items())
    succeeded = [r for _n, r in outcomes if isinstance(r, RunRecord) and r.state == "succeeded"]
    refused = [r for _n, r in outcomes if isinstance(r, UsageError)]
    assert len(succeeded) == 1 and len(refused) == 1, outcomes
    assert f"run {succeeded[0].run_id}" in str(refused[0])
    assert "another deploy or migrate holds" in str(refused[0])
    applied = succeeded[0].steps.migrate.tags
    assert applied == [
        "0009_fat_kulan_gath",
        "0010_new_colleen_wing",
        "0011_cute_skin",
    ]
    # The refused deploy left no run behind.
    stores = [first.store, second.store]
    assert sum(len(s.list()) for s in stores) == 1


def test_migrate_is_refused_while_a_deploy_holds_the_database(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = runlock.application_name("20251021T143005Z-cccccc")
    before = schema_fingerprint(world.database_url)
    monkeypatch.setenv("DATABASE_URL", world.database_url)
    with runlock.RunLock(
        world.database_url, schema="drizzle", table="__drizzle_migrations", owner=owner
    ):
        code = run(["migrate", "--migrations", str(EXAMPLE), "--yes"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "run 20251021T143005Z-cccccc" in err and len(err.strip().splitlines()) == 1
        assert schema_fingerprint(world.database_url) == before
        record_count = len(world.store.list())
        assert run(world.deploy_argv()) == 2
        assert "run 20251021T143005Z-cccccc" in capsys.readouterr().err
        assert len(world.store.list()) == record_count == 0
    assert run(["migrate", "--migrations", str(EXAMPLE), "--yes"]) == 0


def test_a_deploy_names_its_connections_after_the_run(world: World) -> None:
    seen: list[str] = []

    def confirm(_question: str) -> bool:
        with psycopg.connect(world.database_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
            ).fetchall()
        seen.extend(str(r[0]) for r in rows)
        return True

    record = world.deploy(confirm=confirm)
    assert record.state == "succeeded", record.halt_reason
    assert f"orchestrator run {record.run_id}" in seen
