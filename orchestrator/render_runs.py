"""A run, human-readable with rich: one line per audit event as the run goes, the summary at its
end, its timeline, the table of runs (a validation report is :mod:`orchestrator.render`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.audit import HEAD_KEYS
from orchestrator.engine.outcomes import (
    BackupOutcome,
    MergeOutcome,
    MigrateOutcome,
    MonitorOutcome,
    PreflightOutcome,
    ReleaseOutcome,
    ValidationOutcome,
)
from orchestrator.redaction import redact
from orchestrator.runs import RunRecord

# What befalls a run after it ended (database_re...: a restore, and validating after it).
_AFTERWARDS = ("rollback_pushed", "rollback_failed", "database_re", "run_abandoned")


def event_line(event: dict[str, Any]) -> str | None:
    """One readable console line for an audit event (``None`` for events not worth a line)."""
    name = event.get("event")
    time = str(event.get("timestamp", ""))[11:19]
    if name == "transition":
        text = f"{event['source']} → {event['dest']}  ({event['trigger']})"
        if event.get("detail"):
            text += f": {event['detail']}"
    elif name == "step_start":
        text = f"step {event['step']} …"
    elif name == "step_end":
        text = f"step {event['step']} done{_outcome_hint(str(event['step']), event.get('outcome'))}"
    elif name == "step_already_done":
        text = f"step {event['step']} already done (postcondition holds): not repeated"
    elif name == "retry":
        text = (
            f"transient failure, attempt {event['attempt']}: {event['error']} "
            f"(retry in {event['wait_s']}s)"
        )
    elif name == "lock_retry":
        text = str(event["line"])
    elif name == "finding":
        text = f"finding [{event['code']}] {event['message']}"
    elif name == "applying_migration":
        text = f"applying {event['tag']}"
    elif name in ("halted", "failed"):
        text = f"{name.upper()}: {event['reason']} (exit {event['exit_code']})"
    elif name in ("run_started", "run_resumed"):
        text = f"{name.replace('_', ' ')}: {event.get('name')} from state {event.get('state')}"
    elif name in ("release_waiting", "release_live", "release_failed", "release_timeout"):
        what = {"release_waiting": "waiting", "release_live": "LIVE"}.get(
            str(name), str(name).removeprefix("release_").upper()
        )
        text = f"release gate {what} after {event.get('waited_s')}s: {event.get('detail')}"
        text += _deployment(event)
    elif name == "release_checked":
        still = "still live" if event.get("live") else "NOT live"
        text = f"release {str(event.get('commit'))[:12]} {still}: {event.get('detail')}"
        text += _deployment(event)
    elif str(name).startswith("pull_request_"):
        verb = str(name).removeprefix("pull_request_").replace("_", " ")
        where = event.get("url") or f"#{event.get('number')}"
        text = f"pull request {where} {verb}"
        for key in ("mergeable_state", "reason", "merge_commit"):
            if event.get(key):
                text += f"; {key.replace('_', ' ')} {event[key]}"
    elif str(name).startswith(_AFTERWARDS):
        facts = [f"{k.replace('_', ' ')} {v}" for k, v in event.items() if v and k not in HEAD_KEYS]
        text = "; ".join([str(name).replace("_", " ").upper(), *facts])
    elif name == "run_succeeded":
        text = "run succeeded"
    elif name == "interrupted":
        by = f" by {event['signal']}" if event.get("signal") else ""
        text = f"interrupted{by} in state {event.get('state')}: resume with `{event.get('hint')}`"
    elif name == "local_merge_continued":
        text = str(event.get("note"))
    elif name == "production_checked":
        text = f"production holds the release's migrations: {event.get('status')}"
    elif name == "baseline_check":
        mark = "ok" if event.get("ok") else "FAIL"
        text = f"before the deploy: {mark} {event.get('check')}: {event.get('detail')}"
    else:  # e.g. guard (a refused route is normal), check (the progress line shows it)
        return None
    return f"{time} {text}"


def _deployment(event: dict[str, Any]) -> str:
    """`` [STATE URL]`` of a release event, for what its detail does not already say."""
    shown = [
        str(event[key])
        for key in ("deployment_state", "deployment_url")
        if event.get(key) and str(event[key]) not in str(event.get("detail"))
    ]
    return f" [{' '.join(shown)}]" if shown else ""


def _outcome_hint(step: str, outcome: Any) -> str:
    """What a finished step's outcome says, in a few words, read as that step's model."""
    if (hint := _HINTS.get(step)) is None or not isinstance(outcome, Mapping):
        return ""
    try:
        return hint(outcome)
    except ValidationError:  # not the shape this version records: no hint, not a wrong one
        return ""


def _verdict_hint(raw: Mapping[str, Any]) -> str:
    return f": {ValidationOutcome.model_validate(raw).status}"


def _migrate_hint(raw: Mapping[str, Any]) -> str:
    migrate = MigrateOutcome.model_validate(raw)
    if migrate.applied:
        return f": applied {', '.join(migrate.tags)}"
    return f": {migrate.skipped or 'nothing'}"


def _release_hint(raw: Mapping[str, Any]) -> str:
    release = ReleaseOutcome.model_validate(raw)
    return f": {release.ending} ({release.detail})"


def _merge_hint(raw: Mapping[str, Any]) -> str:
    merge = MergeOutcome.model_validate(raw)
    hint = f": pushed {str(merge.pushed_commit)[:12]}"
    if merge.pull_request is not None:
        hint = f": merged pull request #{merge.pull_request}"
        hint += f" ({merge.pull_request_url})" if merge.pull_request_url else ""
    if merge.merge_commit:
        hint += f", merge commit {merge.merge_commit}"
    return hint


def _monitor_hint(raw: Mapping[str, Any]) -> str:
    monitor = MonitorOutcome.model_validate(raw)
    return f": {'healthy' if monitor.healthy else 'UNHEALTHY'} ({monitor.rounds} rounds)"


def _preflight_hint(raw: Mapping[str, Any]) -> str:
    commit = PreflightOutcome.model_validate(raw).source_commit
    return f": source {str(commit)[:12]}, trial merge clean"


_HINTS: Mapping[str, Callable[[Mapping[str, Any]], str]] = {
    "preflight": _preflight_hint,
    "backup": lambda raw: f": {BackupOutcome.model_validate(raw).kind}",
    "validate": _verdict_hint,
    "revalidate": _verdict_hint,
    "migrate": _migrate_hint,
    "merge": _merge_hint,
    "release": _release_hint,
    "monitor": _monitor_hint,
}


def state_label(record: RunRecord, abandoned: object = None) -> str:
    """The run's state and what befell it since: ``succeeded (rolled back)``."""
    steps = record.steps
    since = {"rolled back": steps.rollback, "database restored": steps.database_restore}
    notes = [what for what, done in {**since, "abandoned": abandoned}.items() if done]
    return f"{record.state} ({', '.join(notes)})" if notes else record.state


def run_summary(console: Console, record: RunRecord, plan: list[str] | None = None) -> None:
    """The end of a deploy: final state, reason, rollback plan (``plan``, else the one the
    run recorded when it halted)."""
    state = state_label(record)
    style = "bold green" if state == "succeeded" else "bold red"
    console.print(f"run {record.run_id}: [{style}]{state}[/] (exit {record.exit_code})")
    if record.halt_reason:
        reason = redact(record.halt_reason)  # a check's URL may carry its credential
        console.print(f"reason: {reason}", markup=False, highlight=False)
    if lines := (record.rollback_plan if plan is None else plan):
        console.print("[bold]rollback plan:[/bold]")
        for line in lines:
            console.print(line, markup=False, highlight=False)


def timeline(
    console: Console, record: RunRecord, events: list[dict[str, Any]], plan: list[str] | None = None
) -> None:
    """A run's timeline: its transitions, every event of its audit trail, its rollback plan."""
    lines = [
        f"run {record.run_id} · {record.name} · state {record.state} · exit {record.exit_code}",
        f"playbook {record.playbook}; source commit {record.source_commit}",
    ]
    lines += [line for event in events if (line := event_line(event)) is not None]
    for line in lines:
        console.print(line, markup=False, highlight=False)
    run_summary(console, record, plan)


def runs_table(
    console: Console,
    records: list[RunRecord],
    unreadable: list[tuple[str, str]],
    abandoned: dict[str, dict[str, Any]],
) -> None:
    """One row per run, newest first: an abandoned run says so in its state, and a run
    whose record cannot be read is listed as such (with why, below the table)."""
    rows = [
        (
            r.run_id,
            escape(r.name),  # a name is text, whatever brackets it holds
            state_label(r, r.run_id in abandoned),
            str(r.exit_code),
            r.updated_at[:19].replace("T", " "),
        )
        for r in records
    ]
    for run_id, _why in unreadable:
        state = "unreadable (abandoned)" if run_id in abandoned else "unreadable"
        rows.append((run_id, "?", state, "-", "-"))
    rows.sort(key=lambda row: row[0], reverse=True)
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("run", no_wrap=True, min_width=23)
    # A narrow terminal folds the other cells, never a word of a state (backup_checked).
    for column in ("name", "state", "exit", "updated"):
        table.add_column(column, overflow="fold", min_width=14 if column == "state" else None)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for run_id, why in unreadable:
        console.print(f"{run_id}: {redact(why)}", markup=False, highlight=False)
