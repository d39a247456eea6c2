"""The command line: parse arguments, call the verb layer (:mod:`orchestrator.commands`),
render the result.

Every command shares one exit-code scheme (:class:`orchestrator.errors.ExitCode`). Errors
are printed as one line on stderr; a traceback never reaches the user.

The command group is in ``app``; the commands live in small modules (``database``, ``runs``,
``analysis``) that import only click at module level: the runtime is imported when a command
runs, so ``--help`` is fast. This module imports nothing at all, so that ``validate`` can
start its catalog read before click loads (``early``).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run a command and exit with its code; never show a traceback.

    The process ends without the interpreter's teardown (see :mod:`orchestrator.cli.exiting`),
    so the large structures a command is done with need not be freed first
    (:func:`orchestrator.allocation.keep_until_exit`).
    """
    from orchestrator.allocation import keep_until_exit
    from orchestrator.cli.exiting import exit_process

    keep_until_exit()
    exit_process(run(argv))


def run(argv: list[str] | None = None) -> int:
    """Run a command and return its exit code.

    A plain ``validate`` first starts its catalog read (:mod:`orchestrator.cli.early`), before
    click and the command modules load; then the command line is parsed as usual.
    """
    import os

    from orchestrator.cli import early

    early.start(sys.argv[1:] if argv is None else argv, os.environ)
    from orchestrator.cli.app import run_app

    return run_app(argv)
