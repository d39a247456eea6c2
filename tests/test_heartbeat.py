"""Issue 24, case 9: without a terminal a deploy is heard from while a step waits: a line
at least every heartbeat period (10 s from the CLI) naming the step, how long it has been
working, and its latest progress line.

The waits are real: a push stalled by origin's pre-receive hook, and a monitor window over a
real health endpoint. Each test waits on the line itself, never on the clock: the stalled push
is released by the heartbeat line that names it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import run
from orchestrator.engine.heartbeat import heartbeat_line
from tests.drizzle_helpers import schema_fingerprint
from tests.playbooks import write_playbook
from tests.release_world import World
from tests.test_resume import REPO_ROOT, assert_converged
from tests.test_resume_pinned import pre_receive


def stall_pushes(world: World) -> Path:
    """Origin's pre-receive hook waits (up to a minute) until the returned file exists."""
    go = world.root / "push-go"
    pre_receive(
        world,
        f"i=0\nwhile [ ! -e {go} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done\nexit 0",
    )
    return go


def test_a_stalled_push_and_the_monitor_window_are_heard_from(world: World) -> None:
    go = stall_pushes(world)
    write_playbook(
        world.playbook,
        repo=world.repo,
        health_url=world.health.url,
        duration="1s",
        interval="100ms",
    )
    lines: list[str] = []

    def heard(line: str) -> None:
        lines.append(line)
        if line.startswith("step merge:"):
            go.touch()  # the push stalls until its heartbeat is heard

    main_before = world.origin_main()
    record = world.deploy(heartbeat=heard, heartbeat_s=0.2)
    assert_converged(world, record, main_before)
    assert go.exists(), "the stalled push was never heard from"
    assert any(line.startswith("step merge: working (") for line in lines), lines
    monitor = [line for line in lines if line.startswith("step monitor:")]
    assert monitor, lines
    # The beat repeats the step's latest progress: the monitor's round and check.
    assert any(line.startswith("step monitor: monitor round ") for line in monitor), monitor


def test_the_cli_without_a_terminal_prints_a_line_while_the_push_stalls(world: World) -> None:
    go = stall_pushes(world)
    main_before = world.origin_main()
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *world.deploy_argv()],
        cwd=REPO_ROOT,
        # A beat every 200 ms instead of every 10 s: the push is released by the first one.
        env={**os.environ, "DATABASE_URL": world.database_url, "ORCHESTRATOR_HEARTBEAT": "200ms"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    seen: list[str] = []
    for line in process.stderr:
        seen.append(line)
        if line.startswith("step merge: working ("):
            go.touch()
            break
    _out, rest = process.communicate()
    assert go.exists(), "".join(seen)
    assert process.returncode == 0, "".join(seen) + rest
    assert world.origin_main() != main_before


@pytest.mark.parametrize("term", ["xterm", "dumb"])
def test_a_person_at_a_terminal_whose_stderr_is_a_log_gets_lines_not_escape_codes(
    world: World, tmp_path: Path, term: str
) -> None:
    # `orchestrator deploy --yes 2>deploy.log` typed at a terminal (stdin and stdout a tty),
    # or a terminal that cannot rewrite a line (TERM=dumb): the log gets plain lines.
    import pty

    primary, secondary = pty.openpty()
    log = tmp_path / "deploy.log"
    stderr_is_a_log = term == "xterm"
    environ = {**os.environ, "DATABASE_URL": world.database_url, "TERM": term}
    with log.open("wb") as to_log:
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", *world.deploy_argv()],
            cwd=REPO_ROOT,
            env=environ,
            stdin=secondary,
            stdout=secondary,
            stderr=to_log if stderr_is_a_log else secondary,
            check=False,
        )
    os.close(secondary)
    if stderr_is_a_log:
        written = log.read_bytes()
    else:  # what the dumb terminal showed: all it was sent
        chunks = []
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        written = b"".join(chunks)
    os.close(primary)
    assert done.returncode == 0, written.decode(errors="replace")
    assert b"run succeeded" in written
    assert b"\x1b[2K" not in written  # the monitor's rounds were no rewritten line


@pytest.mark.parametrize("period", ["soon", "0s"])
def test_a_heartbeat_period_that_is_no_duration_is_refused_before_anything(
    world: World,
    period: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", world.database_url)
    monkeypatch.setenv("ORCHESTRATOR_HEARTBEAT", period)
    before = (schema_fingerprint(world.database_url), world.origin_main())
    assert run(world.deploy_argv()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: $ORCHESTRATOR_HEARTBEAT: "), err
    assert (schema_fingerprint(world.database_url), world.origin_main()) == before
    assert world.store.list() == []


def test_the_line_names_the_step_its_time_and_its_latest_progress() -> None:
    assert heartbeat_line("monitor", 20.4, None) == "step monitor: working (20s)"
    assert (
        heartbeat_line("release", 12.0, "release gate: not live yet (waited 11s)")
        == "step release: release gate: not live yet (waited 11s) (12s)"
    )
