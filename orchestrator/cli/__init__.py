"""The command line: parse arguments, call the runtime's functions (validate in
:mod:`orchestrator.database`, migrate in :mod:`orchestrator.migrate`, the reports in
:mod:`orchestrator.reports`, the deploy engine in :mod:`orchestrator.engine`, ...), render the
result. The command group, and the one place errors become exit codes, is ``app``; the
commands live in small modules (``database``, ``runs``, ``analysis``, ``init``).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run a command and exit with its code; never show a traceback."""
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    """Run a command and return its exit code."""
    from orchestrator.cli.app import run_app

    return run_app(argv)
