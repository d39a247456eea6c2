"""Read-only, pglast-shaped access to libpg_query's JSON parse tree.

``pglast.parse_sql`` builds a Python object per node and checks every attribute as it goes;
for a large migrations folder that is most of the cost of modelling it. libpg_query's JSON
(``pglast.parser.parse_sql_json``) holds the same tree and is several times cheaper to get.
:class:`Node` wraps one JSON node and answers attribute reads the way ``pglast.ast`` nodes do:

* the same attribute names (``def_`` for C's ``def``, as pglast spells it);
* the JSON omits fields whose value is empty, false or zero; they read as pglast reads them
  (``None`` for pointers, lists and strings, ``False``, ``0``, an enum's zero member);
* lists read as tuples, a nested ``List`` node as a tuple of its items, like pglast;
* enum fields read as the member's *name* (``"OBJECT_TABLE"``), not a ``pglast.enums`` member;
* the node type is :attr:`Node.tag` (``"RangeVar"``), not the Python class.

One difference cannot be recovered from the JSON: a ``char *`` field holding ``""`` is omitted
like a NULL one. Identifiers cannot be empty in PostgreSQL, so this only matters for string
literals kept in ``char *`` fields; :func:`parse_sql` restores them from pglast's own tree for
the statement kinds listed in ``_EMPTY_STRING_FIELDS``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pglast
from pglast import ast, enums
from pglast.parser import parse_sql_json

__all__ = ["Node", "parse_sql", "walk"]

# Statement kinds whose ``char *`` fields may legitimately hold "" (string literals).
_EMPTY_STRING_FIELDS: dict[str, tuple[str, ...]] = {
    "AlterEnumStmt": ("oldVal", "newVal", "newValNeighbor"),
}
_INTEGER_TYPES = frozenset(
    {
        "int",
        "int16",
        "int32",
        "long",
        "bits32",
        "Index",
        "AttrNumber",
        "ParseLoc",
        "Cost",
        "AclMode",
        "SubTransactionId",
        "RelFileNumber",
        "Cardinality",
    }
)
# A_Const's value union: the JSON key names the member, pglast's ``val`` holds a node.
_A_CONST_VALUES = {
    "ival": "Integer",
    "fval": "Float",
    "boolval": "Boolean",
    "sval": "String",
    "bsval": "BitString",
}


class _Slot:
    """How one attribute of one node type reads: its JSON key, C type and absent value."""

    __slots__ = ("c_type", "default", "key")

    def __init__(self, key: str, c_type: str, default: Any) -> None:
        self.key = key
        self.c_type = c_type
        self.default = default


_SLOTS: dict[str, dict[str, _Slot]] = {}


def _slots(tag: str) -> dict[str, _Slot]:
    """Attribute name -> slot of node type ``tag``, from pglast's own description of it."""
    found = _SLOTS.get(tag)
    if found is None:
        cls = getattr(ast, tag, None)
        described = getattr(cls, "__slots__", None)
        found = {}
        if isinstance(described, dict):
            for name, info in described.items():
                key = name[:-1] if name.endswith("_") else name  # pglast's def_ is C's def
                found[name] = _Slot(key, str(info.c_type), _absent_value(str(info.c_type)))
        _SLOTS[tag] = found
    return found


def _absent_value(c_type: str) -> Any:
    """What pglast reads for a field the JSON left out (zero, false, NULL)."""
    if c_type == "bool":
        return False
    if c_type in _INTEGER_TYPES:
        return 0
    if c_type == "char":
        return "\x00"
    enum = getattr(enums, c_type, None)
    if enum is not None:
        try:
            return enum(0).name
        except (ValueError, TypeError):
            return None
    return None


class Node:
    """One parse-tree node: ``tag`` is its type name, attributes are its fields."""

    __slots__ = ("_fields", "tag")

    def __init__(self, tag: str, fields: dict[str, Any]) -> None:
        self.tag = tag
        self._fields = fields

    def __getattr__(self, name: str) -> Any:
        slot = _slots(self.tag).get(name)
        if slot is None:
            raise AttributeError(f"{self.tag} has no attribute {name!r}")
        try:
            value = self._fields[slot.key]
        except KeyError:
            if self.tag == "A_Const" and name == "val":
                return _a_const_value(self._fields)
            return slot.default
        if value == -1 and slot.c_type == "ParseLoc":
            return None  # pglast's "unknown location"
        return _value(value, slot.c_type)

    def __repr__(self) -> str:
        return f"<{self.tag} {json.dumps(self._fields)}>"

    def children(self) -> Iterator[Any]:
        """The values of the fields the JSON holds, read as attributes (nodes, tuples, ...)."""
        for name, slot in _slots(self.tag).items():
            if slot.key in self._fields or (self.tag == "A_Const" and name == "val"):
                yield getattr(self, name)


def _a_const_value(fields: dict[str, Any]) -> Node | None:
    for key, tag in _A_CONST_VALUES.items():
        if key in fields:
            return Node(tag, fields[key])
    return None  # NULL constant


def _value(value: Any, c_type: str) -> Any:
    if isinstance(value, dict):
        if c_type == "Node*" or c_type == "List*":
            return _tagged(value)
        return Node(c_type.rstrip("*"), value)  # a field of a specific node type
    if isinstance(value, list):
        return tuple(_tagged(item) for item in value)
    return value


def _tagged(value: Any) -> Any:
    """A JSON ``{"Type": {...}}`` node (a ``List`` becomes a tuple of its items)."""
    if not isinstance(value, dict):
        return value
    if not value:
        return None  # a NULL list element
    ((tag, fields),) = value.items()
    if tag == "List":
        return tuple(_tagged(item) for item in fields.get("items", ()))
    return Node(tag, fields)


def walk(node: Any) -> Iterator[Node]:
    """Every node below (and including) ``node``, depth first, like walking pglast's tree."""
    if isinstance(node, Node):
        yield node
        for child in node.children():
            yield from walk(child)
    elif isinstance(node, tuple):
        for item in node:
            yield from walk(item)


def parse_sql(sql: str) -> tuple[Node, ...]:
    """The statements of ``sql`` (each RawStmt's ``stmt``); raises pglast's ``ParseError``."""
    document = json.loads(parse_sql_json(sql))
    statements = [_tagged(raw["stmt"]) for raw in document.get("stmts", ())]
    lossy = [
        number
        for number, statement in enumerate(statements)
        if any(key not in statement._fields for key in _EMPTY_STRING_FIELDS.get(statement.tag, ()))
    ]
    if lossy:  # rare: let pglast say which omitted strings were "" rather than NULL
        exact = pglast.parse_sql(sql)
        for number in lossy:
            statement, original = statements[number], exact[number].stmt
            for key in _EMPTY_STRING_FIELDS[statement.tag]:
                if key not in statement._fields and getattr(original, key) is not None:
                    statement._fields[key] = getattr(original, key)
    return tuple(statements)
