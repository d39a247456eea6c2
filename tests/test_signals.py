"""Issue 24, case 8: a cancelled CI job (SIGTERM) or a closed terminal (SIGHUP) stops a
deploy the way Ctrl-C does: the running statement is cancelled, no lock is left behind, the
audit trail records the interruption and the process exits with the interrupted code.

A real ``orchestrator deploy`` runs a release migration that sleeps inside the migration
transaction (after taking an ACCESS EXCLUSIVE lock); the test sends the signal once the
statement runs, then looks at PostgreSQL's sessions and locks.

Ctrl-C while the CLI is still importing its modules ends the same way: exit 2, no traceback.
So does Ctrl-C at a confirmation of a deploy run at a terminal (a real pseudo-terminal): an
interruption, exit 2 before the migration, 20 after it; Ctrl-D there (end of input) answers
the question's default, no: the run halts as on "n", exit 21.
"""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from orchestrator.audit import read_events
from orchestrator.errors import ExitCode
from tests.drizzle_helpers import tracking_rows
from tests.release_world import World, add_staging_migration
from tests.test_resume import REPO_ROOT, deploy_process, only_run, wait_for_sleeping_migration


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_cancels_the_statement_and_records_the_interruption(
    world: World, stop: signal.Signals
) -> None:
    add_staging_migration(
        world,
        "0012_locks_then_sleeps",
        [
            'ALTER TABLE "app_settings" ADD COLUMN "nickname" text;',
            # Sleeps on production only (its marker table): the shadow replays it at once.
            "SELECT pg_sleep(CASE WHEN to_regclass('public.sleep_marker') IS NULL THEN 0 "
            "ELSE 3600 END);",
        ],
    )
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE sleep_marker ()")
    main_before = world.origin_main()
    process = deploy_process(world, "no-pause")
    run_name = wait_for_sleeping_migration(world, process)
    process.send_signal(stop)
    _out, err = process.communicate()  # the interrupted deploy ends

    # The interrupted code, as for Ctrl-C (click turns the interruption into Abort).
    assert process.returncode == int(ExitCode.USAGE), err.decode()
    assert f"interrupted by {stop.name}" in err.decode()
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (run_name,)
        ).fetchone()
        locks = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE c.relname = 'app_settings' AND l.mode = 'AccessExclusiveLock'"
        ).fetchone()
        column = conn.execute(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'app_settings' AND column_name = 'nickname'"
        ).fetchone()
    assert left == (0,), "the run's session outlived it"
    assert locks == (0,), "an ACCESS EXCLUSIVE lock was left behind"
    assert column == (0,), "the cancelled migration transaction was committed"
    record = only_run(world)
    events = read_events(world.store.audit_path(record.run_id))
    interrupted = [e for e in events if e["event"] == "interrupted"]
    assert interrupted and interrupted[-1]["signal"] == stop.name
    assert interrupted[-1]["state"] == "validated"
    assert world.origin_main() == main_before


def test_ctrl_c_while_the_cli_imports_its_modules_is_an_interruption_not_a_traceback() -> None:
    # tests/import_gate/sitecustomize.py holds the import of the command modules until stdin
    # has a line, after saying so on stderr: the SIGINT lands in the middle of the imports.
    gate = REPO_ROOT / "tests" / "import_gate"
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "--help"],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(gate), str(REPO_ROOT)])},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    assert process.stderr.readline() == b"importing orchestrator.cli.app\n"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate()  # closes stdin: were SIGINT ignored, the imports go on

    assert "Traceback" not in err.decode(), err.decode()
    assert err.decode().splitlines() == ["interrupted by SIGINT"]  # as a later Ctrl-C
    assert process.returncode == int(ExitCode.USAGE)
    assert out == b""


def read_until(terminal: int, text: str) -> str:
    """What the process writes on ``terminal`` up to and including ``text`` (blocking: no
    clock; a process that exits first closes the terminal and the read fails)."""
    seen = b""
    while text.encode() not in seen:
        seen += os.read(terminal, 4096)
    return seen.decode()


def wait_reading_its_terminal(process: subprocess.Popen[bytes]) -> None:
    """Wait until ``process`` sleeps in a system call on file descriptor 0, its terminal: the
    read of the answer. Python handles a signal that lands between the prompt and that read
    only once the read returns (a key press). No clock: the process gets there."""
    while True:
        state = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        call = Path(f"/proc/{process.pid}/syscall").read_text().split()
        if state == "S" and call[1:2] == ["0x0"]:
            return
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("prompt", "key", "code", "says"),
    [
        ("to the production database?", "Ctrl-C", ExitCode.USAGE, "interrupted by SIGINT"),
        ("(push)?", "Ctrl-C", ExitCode.PARTIAL, "interrupted by SIGINT halfway through"),
        ("to the production database?", "Ctrl-D", ExitCode.GUARD_FAILED, "declined the migr"),
        ("(push)?", "Ctrl-D", ExitCode.GUARD_FAILED, "the operator declined the merge"),
    ],
)
def test_ctrl_c_at_a_confirmation_interrupts_the_run_and_ctrl_d_answers_no(
    world: World, prompt: str, key: str, code: ExitCode, says: str
) -> None:
    main_before = world.origin_main()
    deploy = [
        "deploy",
        "--playbook",
        str(world.playbook),
        "--state-dir",
        str(world.store.state_dir),
    ]
    terminal, operator = pty.openpty()  # the operator's keyboard and screen; the process's end
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *deploy],
        cwd=REPO_ROOT,
        env={**os.environ, "DATABASE_URL": world.database_url},
        stdin=operator,
        stdout=operator,
        stderr=operator,
    )
    os.close(operator)
    try:
        for question in ("Start the deploy?", "to the production database?", "(push)?"):
            read_until(terminal, question)
            if question == prompt:
                break
            os.write(terminal, b"y\n")
        if key == "Ctrl-C":
            wait_reading_its_terminal(process)
            process.send_signal(signal.SIGINT)  # what the terminal sends on Ctrl-C
        else:
            os.write(terminal, b"\x04")  # end of input on an empty line
        shown = b""
        with contextlib.suppress(OSError):  # EIO: the process exited, closing its terminal
            while chunk := os.read(terminal, 4096):
                shown += chunk
        process.wait()
    finally:
        os.close(terminal)

    output = shown.decode()
    assert process.returncode == int(code), output
    assert says in output and "Traceback" not in output
    record = only_run(world)
    assert record.state != "failed"
    events = [e["event"] for e in read_events(world.store.audit_path(record.run_id))]
    assert "unexpected_error" not in events
    assert ("interrupted" in events) is (key == "Ctrl-C")
    migrated = prompt == "(push)?"
    assert len(tracking_rows(world.database_url)) == (12 if migrated else 9)
    assert world.origin_main() == main_before
