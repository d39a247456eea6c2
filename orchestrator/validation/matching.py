"""How a database matches a replayed history: pure functions over catalog objects.

The history (:class:`~orchestrator.catalog.History`) is what PostgreSQL built from the folder
on a shadow database: the catalog before the first migration and what each migration
changed. Only the objects some state of the history holds are compared (its universe):
other tools' tables and a platform's own extensions are none of the folder's business, and
are reported apart (:func:`untouched`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.catalog import Difference, History, Objects, differences


@dataclass(frozen=True)
class MigrationEvidence:
    """One migration's effect as found in the database, each list sorted.

    ``present``: objects as the migration leaves them; ``absent``: objects not as it leaves
    them and not explained by a later migration. Objects the database cannot tell apart
    (the same before and after) count for neither.
    """

    tag: str
    present: tuple[str, ...]
    absent: tuple[str, ...]

    @property
    def checked(self) -> tuple[str, ...]:
        """Every object that tells whether this migration ran."""
        return tuple(sorted(self.present + self.absent))


def first_matching_prefix(history: History, found: Objects, start: int) -> int | None:
    """The smallest j >= ``start`` whose state is exactly the database's, if any."""
    keys = history.universe
    state = history.state_after(start)
    # The usual answer, asked of the whole catalog at once.
    if state == (found if found.keys() <= keys else {k: found[k] for k in found.keys() & keys}):
        return start
    count = sum(1 for key in keys if state.get(key) != found.get(key))
    for j in range(start, len(history.deltas)):
        for key, (before, after) in history.deltas[j].items():
            have = found.get(key)
            count += (after != have) - (before != have)
        if count == 0:
            return j + 1
    return None


def migration_evidence(
    history: History, tags: Sequence[str], found: Objects
) -> list[MigrationEvidence]:
    """Each migration's effect, read in the database (see :class:`MigrationEvidence`)."""
    later_values: dict[str, list[tuple[int, object]]] = {}
    for position, change in enumerate(history.deltas):
        for key, (_, after) in change.items():
            later_values.setdefault(key, []).append((position, after))
    evidence = []
    for position, (tag, change) in enumerate(zip(tags, history.deltas, strict=True)):
        present: list[str] = []
        absent: list[str] = []
        for key, (_, after) in change.items():
            have = found.get(key)
            if have == after:
                present.append(key)
            elif not any(
                later > position and value == have for later, value in later_values.get(key, ())
            ):
                absent.append(key)
            # else: a later migration explains what is there; it says nothing of this one
        evidence.append(MigrationEvidence(tag, tuple(sorted(present)), tuple(sorted(absent))))
    return evidence


def drift(history: History, expected: Objects, found: Objects) -> list[Difference]:
    """Every property of the history's objects that differs from ``expected``."""
    return differences(expected, found, history.universe)


def untouched(history: History, found: Objects) -> list[str]:
    """Objects of the database that no state of the history holds, sorted, then how those it
    inherits differ (:func:`inherited`)."""
    return sorted(found.keys() - history.universe) + [str(d) for d in inherited(history, found)[1]]


def inherited(history: History, found: Objects) -> tuple[Objects, list[Difference]]:
    """``found`` with the objects the history starts with and no migration touches as the
    history has them, and how they differed: those are the shadow's template's (public's
    comment, which a DROP and CREATE SCHEMA public loses), none of the folder's business."""
    keys = frozenset(history.initial).difference(*history.deltas)
    drifted = differences(history.initial, found, keys)
    return {**found, **{key: history.initial[key] for key in keys}}, drifted
