"""Human-readable rendering of results with rich (colour only on a terminal)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from orchestrator.validation import MigrationState, ValidationReport, Verdict

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


def validation(console: Console, report: ValidationReport, url: str) -> None:
    """Print a validation report: checks, per-migration table, findings, verdict, advice."""
    console.print(f"database: {url}", markup=False, highlight=False)
    for check in report.checks[:2]:
        mark = "[green]ok[/green]  " if check.ok else "[red]FAIL[/red]"
        console.print(f"{mark} {check.name}: ", end="")
        console.print(check.detail, markup=False, highlight=False)
    if report.migrations:
        table = Table(show_edge=False, pad_edge=False)
        table.add_column("migration")
        table.add_column("when", justify="right")
        table.add_column("state")
        table.add_column("tracked")
        table.add_column("objects")
        for m in report.migrations:
            expected = len(m.expected_objects)
            if m.missing_objects:
                objects = (
                    f"missing {len(m.missing_objects)}/{expected}: "
                    + ", ".join(m.missing_objects[:3])
                    + (" …" if len(m.missing_objects) > 3 else "")
                )
            else:
                objects = f"{expected}/{expected}" if expected else "-"
            table.add_row(
                m.tag,
                str(m.when),
                f"[{STATE_STYLE[m.state]}]{m.state.value}[/]",
                "yes" if m.tracked else "no",
                objects,
            )
        console.print(table)
    for finding in report.findings:
        style = "red" if finding.severity == "error" else "yellow"
        console.print(f"[{style}]{finding.severity}[/] [{finding.code}] ", end="")
        console.print(finding.message, markup=False, highlight=False)
    console.print(f"verdict: [{VERDICT_STYLE[report.status]}]{report.status.value}[/]")
    console.print(report.recommendation, markup=False, highlight=False)
