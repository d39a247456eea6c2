"""A migrations folder as PostgreSQL built it: the catalog before the first migration and
what each migration changed, as replayed on a shadow database (:mod:`orchestrator.shadow`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from orchestrator.catalog.difference import Delta, fold
from orchestrator.catalog.snapshot import CatalogSnapshot, Objects, Properties


@dataclass(frozen=True)
class ReplayFailure:
    """A migration PostgreSQL refused, with the statement and PostgreSQL's own message."""

    tag: str
    statement: str
    message: str
    sqlstate: str | None = None
    number: int = 0  # the statement's place among the migration's (1-based)

    def __str__(self) -> str:
        return f"{self.tag}: {self.message} (statement: {' '.join(self.statement.split())[:120]})"


@dataclass(frozen=True)
class History:
    """The catalog after every prefix of a folder, as deltas from the empty database."""

    hashes: tuple[str, ...]  # the folder's migrations, in journal order
    initial: Objects  # the shadow database before any migration
    # What each migration changed; fewer than ``hashes`` when PostgreSQL refused one
    # (``failure``): the history stops before it.
    deltas: tuple[Delta, ...]
    server: str  # which server the history was replayed on, for the report
    server_major: int
    # Per migration: the tables whose storage it rewrote (a new relfilenode).
    rewrites: tuple[tuple[str, ...], ...] = field(default=())
    failure: ReplayFailure | None = None
    # Production's extensions (name, schema) a migration needed and none creates (enabled from
    # a console), held from the start: the history holds for a production that has them.
    seeded: tuple[tuple[str, str], ...] = ()

    def state_after(self, count: int) -> dict[str, Properties]:
        """The catalog after the first ``count`` migrations."""
        return fold(self.initial, self.deltas[:count])

    @cached_property
    def universe(self) -> frozenset[str]:
        """Every object some state of the history holds: what the folder is answerable for."""
        return frozenset(self.initial).union(*self.deltas)

    def fits(self, extensions: Mapping[str, str]) -> bool:
        """Whether a production with ``extensions`` (name: schema) has the ones seeded."""
        return all(extensions.get(name) == schema for name, schema in self.seeded)

    def created_unapplied(self, production: CatalogSnapshot) -> dict[str, str]:
        """Those of ``production``'s extensions (name: schema) first created by a migration it
        has not applied (by hash) and none of whose other objects it has: it had them before
        that migration ran, so must the replay."""
        applied, found = production.row_hashes, production.objects
        first: dict[str, bool] = {}  # each extension: whether its creator ran on production
        for hash_, delta in zip(self.hashes, self.deltas, strict=False):  # up to a failure
            created = [key for key, (before, _) in delta.items() if before is None]
            others = [key for key in created if not key.startswith("extension ")]
            ran = hash_ in applied or any(key in found for key in others)
            for key in created:
                if key.startswith("extension "):
                    first.setdefault(key.removeprefix("extension "), ran)
        extensions = production.extensions.items()
        return {name: schema for name, schema in extensions if first.get(name) is False}

    def to_json(self) -> dict[str, Any]:
        """A JSON document :meth:`from_json` reads back."""
        return {
            "hashes": list(self.hashes),
            "initial": self.initial,
            # The deltas' after values, and their before values where there were some (most
            # are creations): a smaller file, decoded without a list per object.
            "afters": [{k: after for k, (_, after) in d.items()} for d in self.deltas],
            "befores": [{k: b for k, (b, _) in d.items() if b is not None} for d in self.deltas],
            "server": self.server,
            "server_major": self.server_major,
            "rewrites": [list(r) for r in self.rewrites],
            "seeded": [list(e) for e in self.seeded],
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> History:
        """The history :meth:`to_json` wrote."""
        return cls(
            hashes=tuple(document["hashes"]),
            initial=document["initial"],
            deltas=tuple(
                {k: (before.get(k), after) for k, after in afters.items()}
                for before, afters in zip(document["befores"], document["afters"], strict=True)
            ),
            server=document["server"],
            server_major=int(document["server_major"]),
            rewrites=tuple(tuple(r) for r in document["rewrites"]),
            seeded=tuple((name, schema) for name, schema in document.get("seeded", ())),
        )
