"""The command group and its commands (:func:`orchestrator.cli.run` runs it)."""

from __future__ import annotations

import signal

import click

from orchestrator.cli import analysis, database, init, runs


@click.group(
    name="orchestrator",
    help="Take a release with Drizzle-tracked Postgres migrations to production, safely.",
)
def app() -> None:
    """The command group."""


for _command in (
    init.init,
    database.validate,
    database.migrate,
    runs.deploy,
    runs.resume,
    runs.rollback,
    runs.list_runs,
    runs.show,
    analysis.plan,
    analysis.lint,
    analysis.repair,
    analysis.inspect,
):
    app.add_command(_command)


#: The signals that stop a command the way Ctrl-C does: a cancelled CI job sends SIGTERM, a
#: closed terminal SIGHUP.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
