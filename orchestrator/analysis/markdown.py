"""A plan as Markdown for a pull request: the compatibility matrix, the strategy, the lint.

Pure: a :class:`~orchestrator.analysis.plan.Plan` in, text out.
"""

from __future__ import annotations

from orchestrator.analysis.compatibility import Compat
from orchestrator.analysis.plan import MigrationPlan, Plan
from orchestrator.analysis.risk import counted

_ICONS = {Compat.SAFE: "✅", Compat.CONDITIONAL: "⚠️", Compat.BREAKS: "❌"}
_SAFE_COLUMN = {Compat.SAFE: "✅ Yes", Compat.CONDITIONAL: "⚠️ Conditional", Compat.BREAKS: "❌ No"}


def objects_summary(migration: MigrationPlan) -> str:
    """ "create 4 tables, 2 indexes; alter 4 columns" from a migration's object changes."""
    nouns: dict[str, list[str]] = {}  # by action
    for change in migration.objects:
        if change.action != "none":  # IF NOT EXISTS of an object already there: nothing happens
            noun = change.object.split(" ", 1)[0].replace("_", " ")
            nouns.setdefault(change.action, []).append(noun)
    if not nouns:
        return "nothing"
    return "; ".join(f"{action} {counted(each)}" for action, each in nouns.items())


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def plan_markdown(plan: Plan) -> str:
    """The matrix, strategy and lint findings of ``plan`` as GitHub-flavoured Markdown."""
    lines = [
        "## Migration plan",
        "",
        "| Migration | Risk | Objects | Old code on new schema | New code on old schema | Safe? |",
        "|---|---|---|---|---|---|",
    ]
    for m in plan.migrations:
        lines.append(
            f"| `{m.tag}` | {m.risk.value} | {_cell(objects_summary(m))} "
            f"| {_ICONS[m.old_code_on_new_schema]} {m.old_code_on_new_schema.value} "
            f"| {_ICONS[m.new_code_on_old_schema]} {m.new_code_on_old_schema.value} "
            f"| {_SAFE_COLUMN[m.overall]} |"
        )
    if not plan.migrations:
        lines.append("| (none) | | | | | |")
    decision = plan.strategy
    lines += ["", f"**Strategy: {decision.strategy.label}.** {_cell(decision.reason)}."]
    if decision.forced_by:
        lines.append(f"Forced by: {', '.join(f'`{t}`' for t in decision.forced_by)}.")
    if reasons := [(m.tag, r) for m in plan.migrations for r in m.reasons]:
        lines += ["", "### Why", ""]
        lines += [f"- `{tag}`: {_cell(reason)}" for tag, reason in reasons]
    if findings := plan.lint:
        lines += ["", "### Lint", "", "| Location | Severity | Rule | Message |"]
        lines.append("|---|---|---|---|")
        for f in findings:
            lines.append(f"| `{f.location}` | {f.severity} | `{f.rule}` | {_cell(f.message)} |")
    return "\n".join(lines) + "\n"
