"""Does ``ALTER COLUMN ... TYPE`` rewrite the table? One pure decision, shared by the plan's
risk, the compatibility matrix and the lint rule ``changing-column-type``.

PostgreSQL rewrites a table (and rebuilds its indexes) under an ACCESS EXCLUSIVE lock for a
type change, except when the old type is binary coercible to the new one and no USING
expression changes the values; a length or precision limit that is only relaxed is dropped
by the types' support functions (``varchar_support``, ``numeric_support``,
``varbit_support``, ``timestamp_support``...), so it needs no rewrite either. The exceptions
kept here are the common, certain ones; anything else counts as a rewrite.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pglast import ast


@dataclass(frozen=True)
class ColumnType:
    """A column type as written: catalog name (``varchar``, ``int4``, ``_text`` for arrays)
    and its modifiers (``varchar(40)`` -> ``(40,)``, ``numeric(10,2)`` -> ``(10, 2)``;
    ``()`` when unconstrained; ``None`` when they are not plain integers)."""

    name: str
    mods: tuple[int, ...] | None = ()

    def __str__(self) -> str:
        if self.mods is None:
            return f"{self.name}(?)"
        if not self.mods:
            return self.name
        return f"{self.name}({','.join(str(m) for m in self.mods)})"


class TypeChange(StrEnum):
    """What a type change costs."""

    SAME = "same"  # the type is re-stated: nothing changes (a catalog no-op)
    RELAXES = "relaxes"  # no rewrite: every old value fits, only a limit is lifted
    REWRITES = "rewrites"  # the table is rewritten (or may be), under an exclusive lock


# Old type -> new types it is binary coercible to (pg_cast castmethod 'b'), unconstrained.
_BINARY_COERCIBLE = {
    "varchar": frozenset({"text"}),
    "text": frozenset({"varchar"}),
    "cidr": frozenset({"inet"}),
}
# Types with one length or precision modifier that can be raised or dropped without a rewrite
# (numeric, with two, is handled on its own: its scale must stay the same).
_RELAXABLE = frozenset({"varchar", "varbit", "timestamp", "timestamptz", "time", "timetz"})


def classify_type_change(
    old: ColumnType | None, new: ColumnType, *, using: bool = False
) -> TypeChange:
    """How PostgreSQL performs changing a column of type ``old`` to ``new`` (pure).

    ``old`` is ``None`` when the column's type is unknown (created outside the folder): a rewrite is
    assumed. ``using`` is an explicit USING expression: assumed to change the values, so a rewrite.

    No rewrite: the same type re-stated; ``varchar(n)`` -> ``text`` or unconstrained ``varchar``;
    ``varchar(n)`` -> ``varchar(m >= n)``; ``text`` -> ``varchar``; ``numeric(p,s)`` -> ``numeric``
    or ``numeric(q >= p, s)``; ``varbit(n)`` -> ``varbit(m >= n)`` or ``varbit``;
    ``timestamp(p)``/``timestamptz(p)``/``time(p)`` to a higher or no precision; ``cidr`` ->
    ``inet``. Everything else rewrites: ``integer`` -> ``bigint``, ``text`` -> ``varchar(n)``,
    ``varchar(m)`` -> ``varchar(n < m)``, ``timestamp`` <-> ``timestamptz`` (a rewrite unless the
    session's TimeZone is UTC), arrays of a different type.
    """
    if using or old is None or old.mods is None or new.mods is None:
        return TypeChange.REWRITES
    if old == new:
        return TypeChange.SAME
    if new.name in _BINARY_COERCIBLE.get(old.name, frozenset()) and not new.mods:
        return TypeChange.RELAXES
    if old.name != new.name:
        return TypeChange.REWRITES
    if not new.mods:
        # dropping the limit: every value of the limited type is a value of the unlimited one
        return TypeChange.RELAXES if old.name in _RELAXABLE | {"numeric"} else TypeChange.REWRITES
    if not old.mods:
        return TypeChange.REWRITES  # adding a limit checks (or rounds) every value
    if old.name in _RELAXABLE and len(old.mods) == len(new.mods) == 1:
        return TypeChange.RELAXES if new.mods[0] >= old.mods[0] else TypeChange.REWRITES
    if old.name == "numeric" and 1 <= len(old.mods) <= 2 and 1 <= len(new.mods) <= 2:
        # numeric(p,s) -> numeric(q,s) with q >= p: the same values, stored the same way
        (p, s), (q, t) = (*old.mods, 0)[:2], (*new.mods, 0)[:2]
        return TypeChange.RELAXES if t == s and q >= p else TypeChange.REWRITES
    return TypeChange.REWRITES


_SERIAL_NAMES = {"serial": "int4", "serial4": "int4", "bigserial": "int8", "serial8": "int8"}
_SERIAL_NAMES |= {"smallserial": "int2", "serial2": "int2"}
# Aliases pglast leaves as written; everything standard it already names as pg_catalog does.
_ALIASES = {"int": "int4", "integer": "int4", "bigint": "int8", "smallint": "int2"}
_ALIASES |= {"decimal": "numeric", "boolean": "bool", "float": "float8", "real": "float4"}


def is_serial(node: Any) -> bool:
    """Whether a TypeName node says ``serial``, ``bigserial``...: an integer with a default."""
    names = [str(n.sval) for n in node.names or () if isinstance(n, ast.String)]
    return bool(names) and names[-1].lower() in _SERIAL_NAMES


def type_name_of(node: Any) -> str:
    """The catalog name (``pg_type.typname``) of a TypeName node (``varchar``, ``int4``,
    ``_text``: arrays get a ``_``)."""
    names = [str(n.sval) for n in node.names or () if isinstance(n, ast.String)]
    base = names[-1].lower() if names else "?"
    base = _SERIAL_NAMES.get(base, _ALIASES.get(base, base))
    return f"_{base}" if node.arrayBounds else base


def column_type_of(node: Any) -> ColumnType:
    """The type of a TypeName node with its modifiers (``None`` if not plain integers)."""
    mods: list[int] = []
    for mod in node.typmods or ():
        value: Any = mod.val if isinstance(mod, ast.A_Const) else None
        if not isinstance(value, ast.Integer):
            return ColumnType(type_name_of(node), None)
        mods.append(value.ival or 0)
    return ColumnType(type_name_of(node), tuple(mods))
