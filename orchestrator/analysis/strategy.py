"""Which deploy order a release needs, from its migrations' compatibility verdicts.

- A migration that **breaks new code on the old schema** must run before the code ships:
  migrations first (the runbook's Strategy A).
- A migration that **breaks old code on the new schema** must run after the old code is gone:
  code first.
- If the release needs both (one migration of each kind, or one that breaks both ways), no
  order is safe: split it into an expand release and a contract release (expand/contract).
- Without any ``breaks``, conditional verdicts decide the same way (old-side-only conditionals
  prefer code first); with nothing at all, migrations first, the runbook's default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from orchestrator.analysis.compatibility import Compat, MigrationCompat


class Strategy(StrEnum):
    """The deploy order a release needs."""

    MIGRATIONS_FIRST = "migrations_first"
    CODE_FIRST = "code_first"
    EXPAND_CONTRACT = "expand_contract"

    @property
    def label(self) -> str:
        return {
            Strategy.MIGRATIONS_FIRST: "migrations first (Strategy A)",
            Strategy.CODE_FIRST: "code first",
            Strategy.EXPAND_CONTRACT: "expand/contract",
        }[self]


@dataclass(frozen=True)
class StrategyDecision:
    """The strategy, the migrations that force it, and why."""

    strategy: Strategy
    forced_by: tuple[str, ...]
    reason: str


def choose_strategy(rows: Sequence[MigrationCompat]) -> StrategyDecision:
    """Decide the deploy order from per-migration verdicts (pure)."""
    breaks_new = [r.tag for r in rows if r.new_code_on_old_schema is Compat.BREAKS]
    breaks_old = [r.tag for r in rows if r.old_code_on_new_schema is Compat.BREAKS]
    if breaks_new and breaks_old:
        forced = tuple(r.tag for r in rows if r.tag in {*breaks_new, *breaks_old})
        return StrategyDecision(
            Strategy.EXPAND_CONTRACT,
            forced,
            f"{', '.join(breaks_old)} break(s) old code on the new schema and "
            f"{', '.join(breaks_new)} break(s) new code on the old schema: no deploy order is "
            "safe; ship the additive part with code that works on both schemas, then remove "
            "the old objects in a later release",
        )
    if breaks_new:
        return StrategyDecision(
            Strategy.MIGRATIONS_FIRST,
            tuple(breaks_new),
            f"{', '.join(breaks_new)} break(s) new code on the old schema: "
            "apply the migrations before the code ships",
        )
    if breaks_old:
        return StrategyDecision(
            Strategy.CODE_FIRST,
            tuple(breaks_old),
            f"{', '.join(breaks_old)} break(s) old code on the new schema: "
            "ship code that no longer uses the objects first, then migrate",
        )
    cond_new = [r.tag for r in rows if r.new_code_on_old_schema is Compat.CONDITIONAL]
    cond_old = [r.tag for r in rows if r.old_code_on_new_schema is Compat.CONDITIONAL]
    if cond_old and not cond_new:
        return StrategyDecision(
            Strategy.CODE_FIRST,
            tuple(cond_old),
            f"{', '.join(cond_old)} may break old code on the new schema and nothing needs "
            "the new schema first: ship the code first",
        )
    if cond_new:
        return StrategyDecision(
            Strategy.MIGRATIONS_FIRST,
            tuple(cond_new),
            f"{', '.join(cond_new)} may break new code on the old schema: "
            "apply the migrations before the code ships",
        )
    return StrategyDecision(
        Strategy.MIGRATIONS_FIRST,
        (),
        "no migration breaks either side: any order works; migrations first is the default",
    )
