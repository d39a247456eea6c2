"""A validation report, human-readable with rich (colour only on a terminal); a run's lines,
timeline and table are :mod:`orchestrator.render_runs`."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

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
        # A narrow terminal folds the other cells, never a state (untracked_present: 17).
        for column in ("migration", "when", "state", "tracked", "objects"):
            table.add_column(column, overflow="fold", min_width=17 if column == "state" else None)
        table.columns[1].justify = "right"  # when
        for row in rows:
            if isinstance(row, str):
                table.add_row(f"[dim]{escape(row)}[/]", "", "", "", "")
                continue
            expected = len(row.expected_objects)
            present = expected - len(row.missing_objects)
            table.add_row(
                escape(row.tag),
                str(row.when),
                f"[{STATE_STYLE[row.state]}]{row.state.value}[/]",
                "yes" if row.tracked else "no",
                f"{present}/{expected}" if expected else "-",
            )
        console.print(table)
        for m in report.unreconciled:
            if m.missing_summary:  # untracked_present: nothing is missing, a row is
                console.print(f"{escape(m.tag)} missing: ", end="", style="red")
                console.print(", ".join(m.missing_summary), markup=False, highlight=False)
    for finding in report.findings:
        style = "red" if finding.severity == "error" else "yellow"
        console.print(f"[{style}]{finding.severity}[/] {escape(f'[{finding.code}]')} ", end="")
        console.print(finding.message, markup=False, highlight=False)
    console.print(f"verdict: [{VERDICT_STYLE[report.status]}]{report.status.value}[/]")
    console.print(report.recommendation, markup=False, highlight=False)
