"""``orchestrator init``: write a playbook for the app in the current folder.

The work is :mod:`orchestrator.init`'s (init reads the app, not the database, so it needs nothing of
the verb layer); this module parses the options, asks at a terminal and prints what was found.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from orchestrator.errors import ExitCode

if TYPE_CHECKING:
    from orchestrator.init.draft import Question


@click.command()
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    default="orchestrator.yaml",
    show_default=True,
    help="The playbook to write (never over an existing file).",
)
@click.option("--yes", "-y", is_flag=True, help="Take every default; ask nothing.")
@click.option(
    "--database-url",
    help="Production's URL, to see its host (default: the variable the drizzle config reads, "
    "else $DATABASE_URL). Only the host is used; it is never written.",
)
@click.option(
    "--via",
    type=click.Choice(["push", "github_pr"]),
    help="How the release reaches the target branch (default: github_pr when GitHub says "
    "it is protected, else push).",
)
@click.option("--health-url", help="Production's health check URL, for the monitor window.")
@click.option("--monitor-duration", default="15m", show_default=True, help="Monitor window.")
@click.option("--monitor-interval", default="30s", show_default=True, help="Between checks.")
@click.option("--neon-api-url", default="https://console.neon.tech/api/v2", show_default=True)
@click.option(
    "--github-api-url",
    default="https://api.github.com",
    show_default=True,
    help="GitHub Enterprise: https://HOST/api/v3.",
)
@click.option("--vercel-api-url", default="https://api.vercel.com", show_default=True)
def init(output: Path, yes: bool, **given: Any) -> int:
    """Write a playbook for the app in this folder from its drizzle config, .vercel/,
    git remote and database host. Values not found are commented TODO lines."""
    import os

    from orchestrator.cli.console import err, interactive, out
    from orchestrator.init import InitOptions, check_options, check_target, init_playbook

    check_target(output)  # before any question or API call
    # The other options are named after the InitOptions fields they fill.
    urls = {key: value.rstrip("/") for key, value in given.items() if key.endswith("_api_url")}
    options = InitOptions(**{**given, **urls})
    check_options(options)

    def ask(question: Question) -> str:
        return str(
            click.prompt(
                question.prompt, default=question.default or "", show_default=bool(question.default)
            )
        )

    person = None if yes or not interactive() else ask  # None: nobody to ask, take defaults
    result = init_playbook(Path.cwd(), output, os.environ, options, ask=person)
    for line in result.report:
        err.print(line, markup=False, highlight=False)
    out.print(f"wrote {result.path}", markup=False, highlight=False)
    if result.missing:
        last = f"not found (see the TODO lines in the file): {', '.join(result.missing)}"
    else:
        last = f"next: orchestrator deploy --playbook {result.path} --dry-run"
    out.print(last, markup=False, highlight=False)
    return int(ExitCode.OK)
