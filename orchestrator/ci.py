"""At home in GitHub Actions: a Markdown summary of each run, and its halts and warnings as
workflow annotations.

- ``$GITHUB_STEP_SUMMARY`` set: a deploy or resume appends a summary of the run to that file
  (verdict, the migrations applied, the time each step took, and the halt reason with the
  rollback plan on a halt); a rehearsal (``deploy --dry-run``) appends its plan.
- ``$GITHUB_ACTIONS`` is ``true``: a halt becomes an ``::error`` annotation and each warning
  a ``::warning`` one, on the job's page and the commit's checks.

Workflow commands are lines of the form ``::command key=value,...::message``; the message and the
property values are escaped as GitHub's workflow commands doc and the ``@actions/core`` toolkit do
(``%``, CR and LF; in properties also ``:`` and ``,``), so a message cannot end the command early or
inject another one. The formatting is pure; the two functions at the end write (the summary file is
appended to, never replaced). Every text passes through :func:`orchestrator.redaction.shown`: a job
log is public to everyone who can read the repository.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from orchestrator.redaction import shown

if TYPE_CHECKING:
    from orchestrator.engine.dry_run import DryRun
    from orchestrator.runs import RunRecord

Level = Literal["error", "warning", "notice"]


# ----------------------------------------------------------------------------- commands


def escape_data(text: str) -> str:
    """A workflow command's message: ``%``, CR and LF percent-encoded."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value: as a message, and ``:`` and ``,`` too."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(level: Level, message: str, *, title: str | None = None) -> str:
    """One ``::error``/``::warning``/``::notice`` line (secrets redacted)."""
    properties = f" title={escape_property(shown().text(title))}" if title else ""
    return f"::{level}{properties}::{escape_data(shown().text(message))}"


def run_annotations(record: RunRecord, command: str) -> list[str]:
    """The annotations a run makes: an error when it stopped short of success (not exit 0)."""
    if not record.exit_code:
        return []
    title = f"orchestrator {command} {record.state} (exit {record.exit_code})"
    message = record.halt_reason or f"the run {record.state}"
    if record.rollback_plan:
        message += "\nRollback plan:\n" + "\n".join(record.rollback_plan)
    return [annotation("error", message, title=title)]


# ----------------------------------------------------------------------------- summaries


def _cell(text: str) -> str:
    """Text for a Markdown table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _seconds(start: str, end: str) -> float | None:
    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except ValueError:
        return None


def _took(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


_MARKS = {"succeeded": "✅", "halted": "🛑", "failed": "❌"}


def run_markdown(record: RunRecord, command: str) -> str:
    """A run as Markdown for the job summary."""
    mark = _MARKS.get(record.state, "⏸️")
    lines = [
        f"### {mark} orchestrator {command} `{_cell(record.name)}`: "
        f"{record.state} (exit {record.exit_code})",
        "",
        "| | |",
        "|---|---|",
        f"| run | `{record.run_id}` |",
    ]
    if record.source_commit:
        lines.append(f"| source commit | `{record.source_commit[:12]}` |")
    migrated, merged = record.steps.migrate, record.steps.merge
    if migrated is not None:
        applied = ", ".join(f"`{tag}`" for tag in migrated.tags)
        lines.append(f"| migrations applied | {applied or _cell(migrated.skipped or 'none')} |")
    elif record.planned:
        planned = ", ".join(f"`{p.tag}`" for p in record.planned)
        lines.append(f"| migrations planned, not applied | {planned} |")
    if merged is not None:
        pushed = f"`{(merged.pushed_commit or '')[:12]}`"
        if merged.pull_request_url:
            pushed += f" via [#{merged.pull_request}]({merged.pull_request_url})"
        lines.append(f"| released commit | {pushed} |")
    lines.append(f"| took | {_took(_seconds(record.created_at, record.updated_at))} |")
    if record.transitions:
        lines += ["", "| step | to | took |", "|---|---|---|"]
        since = record.created_at
        for move in record.transitions:
            took = _took(_seconds(since, move.at))
            lines.append(f"| {move.trigger} | {move.dest} | {took} |")
            since = move.at
    if record.halt_reason:
        lines += ["", f"**Why it stopped:** {_cell(record.halt_reason)}"]
    if record.rollback_plan:
        lines += ["", "**Rollback plan**", "", "```text", *record.rollback_plan, "```"]
    if record.state not in _MARKS:
        lines += ["", f"Continue it with `orchestrator resume {record.run_id}`."]
    return shown().text("\n".join(lines)) + "\n\n"


def rehearsal_markdown(rehearsal: DryRun) -> str:
    """A rehearsal (``deploy --dry-run``) as Markdown for the job summary."""
    mark = "✅" if int(rehearsal.exit_code) == 0 else "🛑"
    lines = [
        f"### {mark} orchestrator deploy --dry-run: {_cell(rehearsal.verdict)}",
        "",
        "```text",
        *rehearsal.lines,
        "```",
    ]
    return shown().text("\n".join(lines)) + "\n\n"


# ----------------------------------------------------------------------------- the edge


@dataclass(frozen=True)
class GitHubActions:
    """Where a run reports to in GitHub Actions (nothing outside it)."""

    summary: Path | None  # $GITHUB_STEP_SUMMARY
    annotate: bool  # $GITHUB_ACTIONS == "true"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> GitHubActions:
        path = environ.get("GITHUB_STEP_SUMMARY", "")
        return cls(Path(path) if path else None, environ.get("GITHUB_ACTIONS") == "true")

    def write_summary(self, markdown: str) -> None:
        """Append ``markdown`` to the step summary; a file that cannot be written is not
        worth failing a deploy over (the run record has it all), so that is ignored."""
        if self.summary is None:
            return
        with contextlib.suppress(OSError), self.summary.open("a", encoding="utf-8") as file:
            file.write(markdown)

    def emit(self, lines: list[str], write: Callable[[str], None]) -> None:
        """Write annotation ``lines`` (with ``write``: stdout, or stderr under --json)."""
        if self.annotate:
            for line in lines:
                write(line)
