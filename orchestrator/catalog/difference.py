"""How two catalogs differ: per object (a :data:`Delta`) and per property (:class:`Difference`).

A migration's effect is the delta between the snapshots before and after it; the modelled
state after any prefix of a history is the first snapshot with the deltas applied in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.catalog.snapshot import Objects, Properties, properties

#: One object's properties before and after (None: absent).
Change = tuple[Properties | None, Properties | None]
#: What changed between two catalogs, by object key.
Delta = Mapping[str, Change]


def delta(before: Objects, after: Objects) -> dict[str, Change]:
    """The objects whose properties differ between ``before`` and ``after``."""
    pairs = ((key, before.get(key), after.get(key)) for key in before.keys() | after.keys())
    return {key: (old, new) for key, old, new in pairs if old != new}


def fold(state: Objects, changes: Iterable[Delta]) -> dict[str, Properties]:
    """``state`` with each of ``changes`` applied in turn (one copy, however many)."""
    result = dict(state)
    for change in changes:
        for key, (_, after) in change.items():
            if after is None:
                result.pop(key, None)
            else:
                result[key] = after
    return result


@dataclass(frozen=True)
class Difference:
    """One property of one object that is not as expected (``prop`` None: the object)."""

    key: str
    prop: str | None
    expected: Any
    found: Any

    def __str__(self) -> str:
        if self.prop is None:
            return f"{self.key}: " + ("missing" if self.found is None else "not expected, present")
        return f"{self.key}: {self.prop} expected {_show(self.expected)}, found {_show(self.found)}"


def differences(expected: Objects, found: Objects, keys: Iterable[str]) -> list[Difference]:
    """Every property of the objects ``keys`` that differs, in key order."""
    result: list[Difference] = []
    for key in sorted(keys):
        want, have = expected.get(key), found.get(key)
        if want == have:
            continue
        if want is None or have is None:
            result.append(Difference(key, None, want, have))
            continue
        want_props, have_props = properties(want), properties(have)
        for prop in sorted(want_props.keys() | have_props.keys()):
            if want_props.get(prop) != have_props.get(prop):
                result.append(Difference(key, prop, want_props.get(prop), have_props.get(prop)))
    return result


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, str):
        text = " ".join(value.split())
        return repr(text if len(text) <= 80 else text[:77] + "...")
    return repr(value)
