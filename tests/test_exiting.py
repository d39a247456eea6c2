"""The CLI's exit skips the interpreter's teardown, never what an exit must do."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def run_script(body: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_atexit_handlers_run_and_buffered_output_arrives(tmp_path: Path) -> None:
    done = run_script(
        """
        import atexit, sys
        from pathlib import Path
        from orchestrator.cli.exiting import exit_process
        atexit.register(lambda: Path(sys.argv[1], "atexit").write_text("ran"))
        sys.stdout.write("x" * 200_000)  # buffered: a pipe is not a terminal
        sys.stderr.write("last words")
        exit_process(21)
        """,
        tmp_path,
    )
    assert done.returncode == 21, done.stderr
    assert done.stdout == "x" * 200_000
    assert done.stderr == "last words"
    assert (tmp_path / "atexit").read_text() == "ran"


def test_a_working_thread_is_waited_for(tmp_path: Path) -> None:
    done = run_script(
        """
        import sys, threading, time
        from pathlib import Path
        from orchestrator.cli.exiting import exit_process
        def work():
            time.sleep(0.5)
            Path(sys.argv[1], "thread").write_text("finished")
        threading.Thread(target=work).start()
        exit_process(10)
        """,
        tmp_path,
    )
    assert done.returncode == 10, done.stderr
    assert (tmp_path / "thread").read_text() == "finished"


def test_the_console_script_exits_with_the_command_code(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "orchestrator"
    argv = [str(script)] if script.is_file() else [sys.executable, "-m", "orchestrator.cli"]
    missing = tmp_path / "nowhere"
    done = subprocess.run(
        [
            *argv,
            "validate",
            "--migrations",
            str(missing),
            "--database-url",
            "postgresql://localhost/y",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: migrations folder not found: {missing}"


def test_a_process_ending_after_its_command_keeps_what_it_is_done_with(tmp_path: Path) -> None:
    """Fresh interpreters: only once the process is declared ending does retain() keep
    objects (the last ones given) and does a pause end by freezing the heap."""
    script = """
        import gc, sys, weakref
        from orchestrator import allocation

        class Big:
            pass

        if sys.argv[2] == "ending":
            allocation.keep_until_exit()
        first, second = Big(), Big()
        first_ref, second_ref = weakref.ref(first), weakref.ref(second)
        with allocation.cyclic_gc_paused():
            allocation.retain(first)
            del first
            allocation.retain(second)  # replaces the first
            del second
        print(first_ref() is None, second_ref() is None, gc.get_freeze_count() > 0, gc.isenabled())
        """
    outputs = {}
    for mode in ("ending", "ordinary"):
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script), str(tmp_path), mode],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        outputs[mode] = done.stdout.split()
    assert outputs["ending"] == ["True", "False", "True", "True"]  # the second one kept
    assert outputs["ordinary"] == ["True", "True", "False", "True"]  # both freed


def test_the_console_entry_declares_the_process_ending(tmp_path: Path) -> None:
    done = run_script(
        """
        import atexit, weakref
        from orchestrator import allocation
        from orchestrator.cli import main

        class Big:
            pass

        def probe():  # after the command: is what retain() is given still kept?
            big = Big()
            ref = weakref.ref(big)
            allocation.retain(big)
            del big
            print("kept:", ref() is not None)

        atexit.register(probe)
        main(["--help"])
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "kept: True"
