"""``plan``, ``lint``, ``repair`` and ``inspect``: migration intelligence on the command line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from orchestrator.cli.options import (
    DatabaseTarget,
    database_options,
    json_option,
    lock_timeout_option,
    migrations_option,
    shadow_url_option,
)
from orchestrator.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from orchestrator.analysis.lint import LintFinding
    from orchestrator.analysis.plan import Plan
    from orchestrator.inventory import Inventory
    from orchestrator.repair import RepairPlan, RepairResult
    from orchestrator.validation import ValidationReport


@click.command()
@database_options
@click.option("--all", "all_migrations", is_flag=True, help="Plan every migration; no database.")
@click.option("--markdown", is_flag=True, help="Print the matrix as Markdown for a pull request.")
def plan(target: DatabaseTarget, all_migrations: bool, markdown: bool) -> int:
    """Read-only: risk, compatibility both ways, lint, and the deploy strategy of the pending
    migrations (or of every migration with --all)."""
    from orchestrator import reports
    from orchestrator.analysis.markdown import plan_markdown
    from orchestrator.cli.console import err, out, print_json

    if target.as_json and markdown:
        raise UsageError("--json and --markdown are exclusive: pick one")
    journal = target.journal()
    url = None if all_migrations else target.url()
    result = reports.plan(url, journal, target.options(), **target.reading())
    if result.note and not target.as_json:
        err.print(f"note: {result.note}", markup=False, highlight=False)
    if target.as_json:
        print_json(result.to_json())
    elif markdown:
        out.print(plan_markdown(result), markup=False, highlight=False, end="")
    else:
        show_plan(result)
    return int(ExitCode.OK)


@click.command()
@migrations_option
@json_option
@click.option(
    "--allow-concurrent",
    is_flag=True,
    help="Statements that must run outside a transaction (CONCURRENTLY, ADD VALUE used "
    "later) are warnings: `migrate --allow-concurrent` applies them.",
)
@shadow_url_option
def lint(migrations: Path, as_json: bool, allow_concurrent: bool, shadow_url: str | None) -> int:
    """Lint every migration of a folder, replayed on a shadow server for the facts a rule
    needs; exit 21 on errors (warnings alone exit 0)."""
    from orchestrator import reports
    from orchestrator.cli.console import err, print_json
    from orchestrator.cli.options import read_migrations, shadow_spec

    journal = read_migrations(migrations)
    shadow = shadow_spec(shadow_url)
    findings, note = reports.lint(journal, allow_concurrent=allow_concurrent, shadow=shadow)
    errors = sum(f.severity == "error" for f in findings)
    if as_json:
        document: dict[str, object] = {
            "errors": errors,
            "warnings": len(findings) - errors,
            "findings": [{"tag": f.tag, **f.to_json()} for f in findings],
        }
        print_json({**document, "note": note} if note else document)
    else:
        if note:
            err.print(f"note: {note}", markup=False, highlight=False)
        show_lint(findings)
    return int(ExitCode.GUARD_FAILED if errors else ExitCode.OK)


@click.command()
@database_options
@lock_timeout_option
@click.option("--dry-run", is_flag=True, help="Show the rows it would insert; change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def repair(target: DatabaseTarget, lock_timeout: str, dry_run: bool, yes: bool) -> int:
    """Track migrations whose objects were applied by hand (untracked_present), exactly as
    drizzle would; refuses partial states."""
    from orchestrator import render
    from orchestrator.cli.console import interactive, out, print_json
    from orchestrator.redaction import redact_url
    from orchestrator.repair import repair_database

    url = target.url(writes=True)
    options = target.options(lock_timeout=lock_timeout)
    journal = target.journal()
    if not dry_run and not yes and not interactive():
        raise UsageError("repair changes the database: pass --yes (no terminal to confirm on)")

    def confirm(plan: RepairPlan, report: ValidationReport) -> bool:
        if yes:
            return True
        render.validation(out, report, redact_url(url))
        show_repair_rows(plan)
        return click.confirm(
            f"Insert {len(plan.rows)} tracking row(s) into {redact_url(url)}?", default=False
        )

    result = repair_database(
        url, journal, options, confirm=confirm, dry_run=dry_run, **target.reading()
    )
    if target.as_json:
        print_json(repair_json(result, dry_run))
    else:
        show_repair(result, dry_run)
    return int(ExitCode.OK if dry_run else (result.after or result.before).exit_code)


@click.command()
@database_options
def inspect(target: DatabaseTarget) -> int:
    """Read-only: every table with its columns, types, row estimate and creating migration,
    and the drift between the database and the migrations, both ways."""
    from orchestrator import reports
    from orchestrator.cli.console import print_json

    inventory = reports.inspect(
        target.url(), target.journal(), target.options(), **target.reading()
    )
    if target.as_json:
        print_json(inventory.to_json())
    else:
        show_inventory(inventory)
    return int(ExitCode.OK)


# -- rendering ---------------------------------------------------------------------------------


def show_plan(result: Plan) -> None:
    """The plan as a table, then the strategy, the reasons and the lint findings."""
    from rich.table import Table
    from rich.text import Text

    from orchestrator.analysis.markdown import objects_summary
    from orchestrator.cli.console import out, print_lines

    colours = {"safe": "green", "conditional": "yellow", "breaks": "red"}
    risk_colours = {"LOW": "green", "MEDIUM": "yellow", "HIGH": "red"}
    table = Table(title="Migration plan", title_justify="left")
    for header in ("migration", "risk", "objects", "old code/new schema", "new code/old schema"):
        table.add_column(header)
    table.add_column("lint", justify="right")
    for m in result.migrations:
        errors = sum(f.severity == "error" for f in m.lint)
        table.add_row(
            Text(m.tag),
            Text(m.risk.value, style=risk_colours[m.risk.value]),
            Text(objects_summary(m)),
            Text(m.old_code_on_new_schema.value, style=colours[m.old_code_on_new_schema.value]),
            Text(m.new_code_on_old_schema.value, style=colours[m.new_code_on_old_schema.value]),
            Text(f"{errors}E {len(m.lint) - errors}W" if m.lint else "-"),
        )
    if not result.migrations:
        print_lines(["nothing pending: every migration is applied"])
        return
    out.print(table)
    decision = result.strategy
    lines = [f"strategy: {decision.strategy.label}: {decision.reason}"]
    for m in result.migrations:
        lines.append(f"{m.tag} ({m.risk.value}):")
        lines.extend(f"  - {reason}" for reason in m.reasons)
        lines.extend(f"  - locks {lock.description}" for lock in m.locks)
    print_lines(lines)
    if result.lint:
        show_lint(list(result.lint))


def show_lint(findings: list[LintFinding]) -> None:
    """One line per finding with its fix, then a count."""
    from orchestrator.analysis.lint import rule_named
    from orchestrator.cli.console import print_lines

    lines = []
    fixes_shown: set[str] = set()
    for f in findings:
        lines.append(f"{f.location}: {f.severity} {f.rule}: {f.message}")
        if f.rule not in fixes_shown:
            fixes_shown.add(f.rule)
            lines.append(f"    fix: {rule_named(f.rule).fix}")
    errors = sum(f.severity == "error" for f in findings)
    lines.append(f"{errors} error(s), {len(findings) - errors} warning(s)")
    print_lines(lines)


def show_repair_rows(plan: RepairPlan) -> None:
    """The tracking rows repair inserts (or would insert)."""
    from orchestrator.cli.console import print_lines

    print_lines([f"  {row.tag}: hash {row.hash} created_at {row.created_at}" for row in plan.rows])


def show_repair(result: RepairResult, dry_run: bool) -> None:
    """What repair did (or would do), then the verdict after."""
    from orchestrator.cli.console import print_lines

    if not result.plan.rows:
        print_lines(["nothing to repair: no migration is in state untracked_present"])
        return
    verb = "would insert" if dry_run else "inserted"
    print_lines([f"{verb} {len(result.plan.rows)} tracking row(s):"])
    show_repair_rows(result.plan)
    after = [f"status after repair: {result.after.status.value}"] if result.after else []
    print_lines([*after, (result.after or result.before).recommendation])


def repair_json(result: RepairResult, dry_run: bool) -> dict[str, object]:
    """The JSON document of ``repair --json``."""
    return {
        "dry_run": dry_run,
        "rows": [row.__dict__ for row in result.plan.rows],
        "inserted": [row.__dict__ for row in result.plan.rows] if result.after else [],
        "before": result.before.status.value,
        "after": result.after.status.value if result.after is not None else None,
        "recommendation": (result.after or result.before).recommendation,
    }


def show_inventory(inventory: Inventory) -> None:
    """Tables with their columns, then drift both ways."""
    from orchestrator.cli.console import print_lines

    lines = [f"database {inventory.database} (PostgreSQL {inventory.server_version})"]
    for t in inventory.tables:
        rows = (
            "rows unknown (never analysed)" if t.row_estimate is None else f"~{t.row_estimate} rows"
        )
        creator = t.created_by or "no migration (drift)"
        lines.append(f"{t.kind} {t.schema}.{t.name}: {rows}, created by {creator}")
        for c in t.columns:
            null = "NOT NULL" if c.not_null else "null"
            default = " default" if c.has_default else ""
            origin = c.created_by or "no migration"
            lines.append(f"    {c.name:<32} {c.type} {null}{default}  [{origin}]")
    lines.append("in the database but created by no tracked migration:")
    lines.extend(f"  - {d}" for d in inventory.drift or ["(none)"])
    lines.append("created by a tracked migration but gone:")
    lines.extend([f"  - {g.migration}: {g.object}" for g in inventory.gone] or ["  - (none)"])
    lines.append("present, but not as the tracked migrations define it:")
    lines.extend(f"  - {c}" for c in inventory.changed or ["(none)"])
    print_lines(lines)
