"""One catalog snapshot: the schema objects of a database and the rows of its tracking table.

Objects are keyed by a readable name, ``"<kind> <identity>"``: ``"table public.users"``,
``"column public.users.email"``, ``"index public.users_email_idx"``,
``"function public.slugify(text)"``. Each maps to its properties as PostgreSQL prints them
(``format_type``, ``pg_get_constraintdef``, ``pg_get_indexdef``, ...), kept as the one JSON
text the catalog reader printed: the same reader prints the same text for the same object,
so two snapshots compare by plain string equality and only what differs is decoded
(:func:`properties`). Owners, privileges, oids and storage are left out: they differ
between a shadow database and production without the schema differing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: An object's properties: a JSON object as text, its values text, booleans, numbers, lists
#: of text or null.
Properties = str
#: A catalog's objects by key.
Objects = Mapping[str, Properties]


def properties(text: Properties) -> dict[str, Any]:
    """The properties ``text`` holds, by name."""
    value = json.loads(text)
    assert isinstance(value, dict)
    return value


@dataclass(frozen=True)
class TrackingRow:
    """One row of drizzle's tracking table."""

    id: int | None
    hash: str | None
    created_at: int | None


@dataclass(frozen=True)
class CatalogSnapshot:
    """What one read of a database's catalog found."""

    server_version: str  # e.g. "15.8"
    server_major: int
    database: str
    objects: Objects
    tracking_schema: str
    tracking_table: str
    tracking_present: bool  # the table exists at schema.table
    tracking_readable: bool  # ... and has drizzle's columns, so its rows were read
    tracking_rows: tuple[TrackingRow, ...] = ()
    tracking_elsewhere: tuple[str, ...] = ()  # other schemas holding a table of that name
    zone: str = "UTC"  # the TimeZone its sessions start in: a migration's literals are fixed in it
    # Each extension's schema: a shadow creates them first where a migration uses one (see docs).
    extensions: Mapping[str, str] = field(default_factory=dict)
    # Each table's relfilenode: a statement that rewrites a table gives it a new one.
    storage: Mapping[str, int] = field(default_factory=dict)
    # Each table's row estimate (``reltuples``: -1 when never analysed).
    row_estimates: Mapping[str, int] = field(default_factory=dict)
    # Each object's owner and its own catalog entry (``c<oid>`` a relation, ``t`` a type,
    # ``p`` a function, ``n`` a schema, ``e`` an extension, ``o`` a constraint, ``g`` a
    # trigger, ``y`` a policy, ``w`` a rule): a column, constraint, index, trigger, policy
    # or rule belongs to its table. The shadow replay re-reads only what a migration touched;
    # other reads leave this empty.
    refs: Mapping[str, Sequence[str]] = field(default_factory=dict)  # (owner, itself)

    @property
    def row_hashes(self) -> tuple[str, ...]:
        """The hash of each tracking row (a text applied twice has two)."""
        return tuple(r.hash for r in self.tracking_rows if r.hash)

    @property
    def newest_created_at(self) -> int | None:
        """The largest ``created_at``: drizzle applies only journal entries newer than it."""
        values = [r.created_at for r in self.tracking_rows if r.created_at is not None]
        return max(values) if values else None
