"""`make demo` is one of the two README commands: it must run a full rehearsal and succeed."""

from __future__ import annotations

import subprocess
import sys


def test_demo_rehearses_a_full_deploy() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.demo"],
        capture_output=True,
        text=True,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "NEEDS_MIGRATION" in output and "SAFE" in output
    assert "succeeded" in output
    assert "Traceback" not in output
