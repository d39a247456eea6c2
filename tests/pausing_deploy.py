"""``orchestrator`` that stops itself (SIGSTOP) right after a given audit event is on disk.

For the kill tests: ``python -m tests.pausing_deploy <pause-at> deploy ...`` runs the real CLI,
with the run's console callback (a public part of :class:`orchestrator.engine.run.Interaction`)
wrapped so the process stops at ``<pause-at>``: ``"<event>"`` or ``"<event>:<step|dest|tag>"``,
e.g. ``step_end:backup``. ``dump_renamed`` stops right after the verified dump is renamed into
place, before the run records it; ``pushed`` and ``committed`` right after the merge step's
push and the migrate step's commit, before the run records them. The test then SIGKILLs it
at that exact boundary (or changes the world and lets it go on with SIGCONT). The runtime
carries no such hook: it lives here, in the tests. The mutants of
``tests/test_guard_mutations.py`` are applied here too.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.mutants import apply_from_environment

if TYPE_CHECKING:
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


def pause_after_dump_rename() -> None:
    """Stop right after a ``.<name>.partial`` dump is renamed to its target."""
    replace = os.replace

    def replacing(source: Any, target: Any, *args: Any, **kwargs: Any) -> None:
        replace(source, target, *args, **kwargs)
        if Path(source).name.endswith(".partial"):
            os.kill(os.getpid(), signal.SIGSTOP)

    os.replace = replacing


def pause_after(module: str, name: str) -> None:
    """Stop right after ``module.name`` returns, before the run records what it did."""
    target = importlib.import_module(module)
    real = getattr(target, name)

    def stopping(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGSTOP)
        return result

    setattr(target, name, stopping)


#: Pause points inside a step: right after its work, before the run records it.
AFTER = {
    "pushed": ("orchestrator.gitrepo.merge", "push_branch"),  # the release reached origin
    "committed": ("orchestrator.migrate", "apply_release"),  # the migrations committed
}


def main() -> int:
    pause_at, argv = sys.argv[1], sys.argv[2:]
    apply_from_environment()  # before the engine is imported: it binds the machine's tables
    import orchestrator.cli.runs as cli_runs
    from orchestrator.cli import run

    if pause_at == "dump_renamed":
        pause_after_dump_rename()
    if pause_at in AFTER:
        pause_after(*AFTER[pause_at])
    make = cli_runs.cli_interaction

    def interaction(*args: Any, **kwargs: Any) -> Interaction:
        made = make(*args, **kwargs)
        return dataclasses.replace(made, console=pausing(made.console, pause_at))

    cli_runs.cli_interaction = interaction
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
