"""Backward compatibility of a migration, in both directions, from its changes.

During a deploy the old code and the new schema (or the new code and the old schema) meet:

- **old code on the new schema**: migrations ran first and the previous release still serves;
- **new code on the old schema**: code went out first and the migration has not run yet.

Each change gets a verdict per direction: ``safe``, ``conditional`` (breaks only some code
paths, e.g. a feature that uses a table the schema does not have yet) or ``breaks`` (every
code path that touches the object fails). A migration's verdict is the worst of its changes.
The rules are documented in ``docs/migration-analysis.md``; each is one branch below.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from orchestrator.analysis.effects import Change
from orchestrator.analysis.typechange import TypeChange


class Compat(StrEnum):
    """How one side of a deploy fares; ordered from best to worst."""

    SAFE = "safe"
    CONDITIONAL = "conditional"
    BREAKS = "breaks"


def worst(values: Iterable[Compat]) -> Compat:
    """The worst verdict of ``values`` (``safe`` when empty)."""
    return max(values, key=list(Compat).index, default=Compat.SAFE)


@dataclass(frozen=True)
class ChangeCompat:
    """The verdict of one change in both directions, with a reason for each non-safe one."""

    old_code_on_new_schema: Compat
    new_code_on_old_schema: Compat
    old_reason: str = ""
    new_reason: str = ""


@dataclass(frozen=True)
class MigrationCompat:
    """A migration's verdicts (worst of its changes) and the reasons behind them."""

    tag: str
    old_code_on_new_schema: Compat
    new_code_on_old_schema: Compat
    old_reasons: tuple[str, ...]
    new_reasons: tuple[str, ...]

    @property
    def overall(self) -> Compat:
        """The runbook's "Safe?" column: the worse of the two directions."""
        return worst((self.old_code_on_new_schema, self.new_code_on_old_schema))


S, C, B = Compat.SAFE, Compat.CONDITIONAL, Compat.BREAKS


def change_compat(change: Change) -> ChangeCompat:
    """The compatibility rule for one change (pure; see docs/migration-analysis.md)."""
    t, kind = change.target, change.kind
    # IF NOT EXISTS of an object the history already holds: PostgreSQL skips it.
    if kind == "no_op":
        return ChangeCompat(S, S)
    # Anything on a table created earlier in the same migration is part of creating it.
    if change.table_is_new and kind != "create_table":
        return ChangeCompat(S, S)
    if kind == "create_table":
        return ChangeCompat(S, C, new_reason=f"{t} is missing: code paths that use it fail")
    if kind == "create_view":
        return ChangeCompat(S, C, new_reason=f"{t} is missing: code paths that read it fail")
    if kind == "add_column":
        new = f"{t} does not exist: new code's INSERTs and SELECTs naming it fail"
        if change.not_null and not change.has_default:
            return ChangeCompat(
                B,
                B,
                old_reason=f"{t} is NOT NULL without a default: old INSERTs fail",
                new_reason=new,
            )
        return ChangeCompat(S, B, new_reason=new)
    if kind in ("drop_table", "drop_view"):
        return ChangeCompat(B, S, old_reason=f"{t} is gone: old code that uses it fails")
    if kind == "drop_column":
        old = f"{t} is gone: old code reading or writing it fails"
        if change.not_null and not change.has_default:
            return ChangeCompat(
                B,
                C,
                old_reason=old,
                new_reason=f"{t} is still NOT NULL without a default: new INSERTs omitting it fail",
            )
        return ChangeCompat(B, S, old_reason=old)
    if kind in ("rename_table", "rename_column"):
        return ChangeCompat(
            B,
            B,
            old_reason=f"{t} renamed {change.detail}: old code still uses the old name",
            new_reason=f"{t} renamed {change.detail}: new code uses a name the old schema lacks",
        )
    if kind == "alter_column_type":
        verdict = change.type_change
        if verdict is TypeChange.SAME:
            return ChangeCompat(S, S)
        if verdict is TypeChange.RELAXES:
            # every old value still fits; only values beyond the old limit need the new type
            return ChangeCompat(
                S,
                C,
                new_reason=f"{t} is still {change.old_type} on the old schema: new code's "
                "values beyond its limit are rejected",
            )
        reason = f"{t} changes type ({change.detail}): values, casts or comparisons may fail"
        return ChangeCompat(C, C, old_reason=reason, new_reason=reason)
    if kind == "set_not_null":
        return ChangeCompat(C, S, old_reason=f"{t} becomes NOT NULL: old writes of NULL fail")
    if kind == "drop_not_null":
        return ChangeCompat(S, C, new_reason=f"{t} is still NOT NULL: new writes of NULL fail")
    if kind == "set_default":
        return ChangeCompat(
            S, C, new_reason=f"{t} has no default yet: new INSERTs relying on it fail"
        )
    if kind == "drop_default":
        return ChangeCompat(C, S, old_reason=f"{t} loses its default: old INSERTs omitting it")
    if kind == "add_constraint":
        if change.constraint_type in ("p", "u", "x", "f", "c") and not change.table_is_new:
            return ChangeCompat(
                C, S, old_reason=f"{t} is new: old writes that violate it are rejected"
            )
        return ChangeCompat(S, S)
    if kind == "drop_constraint":
        return ChangeCompat(
            S, C, new_reason=f"{t} still exists: new writes that violate it are rejected"
        )
    if kind == "create_index":
        if change.unique:
            return ChangeCompat(
                C, S, old_reason=f"{t} is unique: old writes of duplicates are rejected"
            )
        return ChangeCompat(S, S)
    if kind == "drop_index" and change.unique:
        return ChangeCompat(
            C, S, old_reason=f"{t} was unique: old code relying on it (ON CONFLICT) fails"
        )
    if kind == "add_enum_value":
        return ChangeCompat(S, C, new_reason=f"{t} does not exist: new writes of it fail")
    if kind in ("rename_enum_value", "rename_type"):
        reason = f"{t} renamed {change.detail}: code using either name fails on the other schema"
        return ChangeCompat(B, B, old_reason=reason, new_reason=reason)
    if kind in ("drop_type", "drop_schema"):
        return ChangeCompat(B, S, old_reason=f"{t} is gone: old code that uses it fails")
    if kind == "data_change":
        return ChangeCompat(
            C, S, old_reason=f"{t}: {change.detail} changes data the old code reads"
        )
    if kind == "other":
        reason = f"{t} ({change.detail}): not analysed, check by hand"
        return ChangeCompat(C, C, old_reason=reason, new_reason=reason)
    # create_schema, create_enum, create_other, validate/rename constraint or index, drop of a
    # plain index, settings and metadata: invisible to application queries.
    return ChangeCompat(S, S)


def migration_compat(
    tag: str, changes: Iterable[Change], *, unparsed: bool = False
) -> MigrationCompat:
    """Combine the verdicts of a migration's changes: worst wins, reasons kept in order.

    A migration with an unparseable statement cannot be judged: conditional both ways.
    """
    verdicts = [change_compat(c) for c in changes]
    old_reasons = list(dict.fromkeys(v.old_reason for v in verdicts if v.old_reason))
    new_reasons = list(dict.fromkeys(v.new_reason for v in verdicts if v.new_reason))
    old = worst(v.old_code_on_new_schema for v in verdicts)
    new = worst(v.new_code_on_old_schema for v in verdicts)
    if unparsed:
        reason = "a statement could not be parsed: check by hand"
        old, new = worst((old, C)), worst((new, C))
        old_reasons.append(reason)
        new_reasons.append(reason)
    return MigrationCompat(tag, old, new, tuple(old_reasons), tuple(new_reasons))
