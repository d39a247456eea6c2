"""Names as PostgreSQL gives them: database objects, identifier truncation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal, NamedTuple

from orchestrator.drizzle.facts import (
    Fact,
)

ObjectKind = Literal[
    "schema",
    "table",
    "view",
    "column",
    "index",
    "constraint",
    "enum",
    "enum_value",
    "function",
    "trigger",
]

NAMEDATALEN = 64  # PostgreSQL's compile-time default; identifiers keep NAMEDATALEN-1 bytes
DEFAULT_SCHEMA = "public"


class DbObject(NamedTuple):
    """One database object as PostgreSQL names it.

    ``schema`` is the namespace (the schema's own name for kind ``schema``); ``parent`` is the
    owning table for columns and constraints, the enum type for enum values, else ``None``.
    A named tuple rather than a dataclass: tens of thousands are hashed, compared and sorted
    per validation, and tuples do that in C.
    """

    kind: ObjectKind
    schema: str
    name: str
    parent: str | None = None

    def __str__(self) -> str:
        return object_names((self,))[0]


def object_names(objects: Iterable[DbObject]) -> tuple[str, ...]:
    """``str()`` of each object, in one comprehension rather than a method call per object:
    a report of a large folder names tens of thousands."""
    return tuple(
        [
            f"schema {name}"
            if kind == "schema"
            else f"{kind} {schema}.{name}"
            if parent is None
            else f"{kind} {schema}.{parent}.{name}"
            for kind, schema, name, parent in objects
        ]
    )


#: What one migration did to one object: its fact just before and just after (None: absent).
Effect = Mapping[DbObject, tuple[Fact | None, Fact | None]]


def truncate_identifier(name: str) -> str:
    """Cut ``name`` to NAMEDATALEN-1 bytes of UTF-8 without splitting a character, like PG."""
    if len(name) < NAMEDATALEN and name.isascii():  # fast path: one byte per character
        return name
    return _clip_bytes(name, NAMEDATALEN - 1)


def _clip_bytes(text: str, limit: int) -> str:
    if len(text) * 4 <= limit:  # fast path: a character is at most 4 bytes of UTF-8
        return text
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    # errors="ignore" drops a trailing partial character, as pg_mbcliplen does.
    return encoded[:limit].decode("utf-8", errors="ignore")


def _make_object_name(name1: str, label: str) -> str:
    """PostgreSQL's makeObjectName(name1, NULL, label): shorten name1 so the result fits."""
    available = NAMEDATALEN - 1 - (len(label.encode("utf-8")) + 1)
    return f"{_clip_bytes(name1, available)}_{label}"
