"""``orchestrator`` that stops itself (SIGSTOP) right after a given audit event is on disk.

For the kill tests: ``python -m tests.pausing_deploy <pause-at> deploy ...`` runs the real CLI,
with the run's console callback (a public part of :class:`orchestrator.engine.run.Interaction`)
wrapped so the process stops at ``<pause-at>``: ``"<event>"`` or ``"<event>:<step|dest|tag>"``,
e.g. ``step_end:backup``. The test then SIGKILLs it at that exact boundary. The runtime
carries no such hook: it lives here, in the tests.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from typing import Any

import orchestrator.cli.runs as cli_runs
from orchestrator.cli import run
from orchestrator.engine.run import ConsoleCallback, Interaction


def pausing(console: ConsoleCallback | None, pause_at: str) -> ConsoleCallback:
    def on_event(event: dict[str, Any]) -> None:
        if console is not None:
            console(event)
        name = str(event.get("event"))
        detail = event.get("step") or event.get("dest") or event.get("tag")
        if pause_at in (name, f"{name}:{detail}"):
            os.kill(os.getpid(), signal.SIGSTOP)

    return on_event


def main() -> int:
    pause_at, argv = sys.argv[1], sys.argv[2:]
    make = cli_runs._interaction

    def interaction(*args: Any, **kwargs: Any) -> Interaction:
        made = make(*args, **kwargs)
        return dataclasses.replace(made, console=pausing(made.console, pause_at))

    cli_runs._interaction = interaction
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
