"""Human-readable rendering of results with rich (colour only on a terminal)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

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
from orchestrator.validation import MigrationState, MigrationStatus, ValidationReport, Verdict

VERDICT_STYLE = {
    Verdict.SAFE: "bold green",
    Verdict.NEEDS_MIGRATION: "bold yellow",
    Verdict.PARTIAL_MIGRATION: "bold red",
    Verdict.ERROR: "bold red",
}

STATE_STYLE = {
    MigrationState.APPLIED: "green",
    MigrationState.PENDING: "yellow",
    MigrationState.UNTRACKED_PRESENT: "red",
    MigrationState.TRACKED_MISSING: "red",
    MigrationState.PARTIALLY_PRESENT: "red",
}


FOLD_ABOVE = 40  # migrations; beyond this, long runs of applied ones fold into one line
FOLD_RUN = 5


def migration_rows(migrations: Sequence[MigrationStatus]) -> list[MigrationStatus | str]:
    """The table's rows: every migration, or for a long history, runs of more than
    ``FOLD_RUN`` applied migrations folded into one summary line (pure)."""
    if len(migrations) <= FOLD_ABOVE:
        return list(migrations)
    rows: list[MigrationStatus | str] = []
    run: list[MigrationStatus] = []

    def flush() -> None:
        if len(run) > FOLD_RUN:
            rows.append(f"… {len(run)} applied: {run[0].tag} … {run[-1].tag}")
        else:
            rows.extend(run)
        run.clear()

    for m in migrations:
        if m.state is MigrationState.APPLIED and m.tracked:
            run.append(m)
        else:
            flush()
            rows.append(m)
    flush()
    return rows


def validation(console: Console, report: ValidationReport, url: str) -> None:
    """Print a validation report: checks, per-migration table, findings, verdict, advice."""
    console.print(f"database: {url}", markup=False, highlight=False)
    if report.replayed_on:
        console.print(f"history replayed on {report.replayed_on}", markup=False, highlight=False)
    for check in report.checks[:2]:
        mark = "[green]ok[/green]  " if check.ok else "[red]FAIL[/red]"
        console.print(f"{mark} {check.name}: ", end="")
        console.print(check.detail, markup=False, highlight=False)
    rows = migration_rows(report.migrations)
    if len(rows) == 1 and isinstance(rows[0], str):
        # Every migration applied and tracked, folded into one line: no table around it
        # (whose columns would be empty, and squeeze the line on a narrow terminal).
        console.print(f"migrations: {rows[0].removeprefix('… ')}", markup=False, highlight=False)
    elif rows:
        table = Table(show_edge=False, pad_edge=False)
        for column in ("migration", "when", "state", "tracked", "objects"):
            table.add_column(column, justify="right" if column == "when" else "left", no_wrap=True)
        for row in rows:
            if isinstance(row, str):
                table.add_row(f"[dim]{row}[/]", "", "", "", "")
                continue
            expected = len(row.expected_objects)
            present = expected - len(row.missing_objects)
            table.add_row(
                row.tag,
                str(row.when),
                f"[{STATE_STYLE[row.state]}]{row.state.value}[/]",
                "yes" if row.tracked else "no",
                f"{present}/{expected}" if expected else "-",
            )
        console.print(table)
        for m in report.unreconciled:
            console.print(f"{m.tag} missing: ", end="", style="red")
            console.print(", ".join(m.missing_summary) or "-", markup=False, highlight=False)
    for finding in report.findings:
        style = "red" if finding.severity == "error" else "yellow"
        console.print(f"[{style}]{finding.severity}[/] {escape(f'[{finding.code}]')} ", end="")
        console.print(finding.message, markup=False, highlight=False)
    console.print(f"verdict: [{VERDICT_STYLE[report.status]}]{report.status.value}[/]")
    console.print(report.recommendation, markup=False, highlight=False)


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
    elif name == "guard":
        return None  # a refused route is normal; a halt says why no route was left
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
    elif name == "check":
        return None  # the progress line shows these
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
    else:
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
    hint = _HINTS.get(step)
    if hint is None or not isinstance(outcome, Mapping):
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


def _backup_hint(raw: Mapping[str, Any]) -> str:
    return f": {BackupOutcome.model_validate(raw).kind}"


def _preflight_hint(raw: Mapping[str, Any]) -> str:
    commit = PreflightOutcome.model_validate(raw).source_commit
    return f": source {str(commit)[:12]}, trial merge clean"


_HINTS: Mapping[str, Callable[[Mapping[str, Any]], str]] = {
    "preflight": _preflight_hint,
    "backup": _backup_hint,
    "validate": _verdict_hint,
    "revalidate": _verdict_hint,
    "migrate": _migrate_hint,
    "merge": _merge_hint,
    "release": _release_hint,
    "monitor": _monitor_hint,
}


def run_summary(console: Console, record: RunRecord, plan: list[str] | None = None) -> None:
    """The end of a deploy: final state, reason, rollback plan (``plan``, else the one the
    run recorded when it halted)."""
    style = "bold green" if record.state == "succeeded" else "bold red"
    console.print(f"run {record.run_id}: [{style}]{record.state}[/] (exit {record.exit_code})")
    if record.halt_reason:
        reason = redact(record.halt_reason)  # a check's URL may carry its credential
        console.print(f"reason: {reason}", markup=False, highlight=False)
    lines = record.rollback_plan if plan is None else plan
    if lines:
        console.print("[bold]rollback plan:[/bold]")
        for line in lines:
            console.print(line, markup=False, highlight=False)


def timeline(
    console: Console,
    record: RunRecord,
    events: list[dict[str, Any]],
    plan: list[str] | None = None,
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
    unreadable: list[tuple[str, str]] | None = None,
    abandoned: dict[str, dict[str, Any]] | None = None,
) -> None:
    """One row per run, newest first: an abandoned run says so in its state, and a run
    whose record cannot be read is listed as such (with why, below the table)."""
    closed = abandoned or {}
    rows = [
        (
            r.run_id,
            r.name,
            f"{r.state} (abandoned)" if r.run_id in closed else r.state,
            str(r.exit_code),
            r.updated_at[:19].replace("T", " "),
        )
        for r in records
    ]
    for run_id, _why in unreadable or []:
        state = "unreadable (abandoned)" if run_id in closed else "unreadable"
        rows.append((run_id, "?", state, "-", "-"))
    rows.sort(key=lambda row: row[0], reverse=True)
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("run", no_wrap=True, min_width=23)
    for column in ("name", "state", "exit", "updated"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for run_id, why in unreadable or []:
        console.print(f"{run_id}: {redact(why)}", markup=False, highlight=False)
