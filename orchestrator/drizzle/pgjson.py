"""Read-only, pglast-shaped access to libpg_query's JSON parse tree.

``pglast.parse_sql`` builds a Python object per node and checks every attribute as it goes;
for a large migrations folder that is most of the cost of analysing it. libpg_query's JSON
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

import functools
import json
from collections.abc import Iterator
from typing import Any

import pglast
from pglast import enums
from pglast.parser import parse_sql_json, split

__all__ = ["Node", "check_syntax", "parse_json", "parse_sql", "walk"]

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


_SCALAR_TYPES = frozenset({"bool", "char", "char*"}) | _INTEGER_TYPES
_JSON = json.JSONDecoder()


class Node:
    """One parse-tree node: ``tag`` is its type name, attributes are its fields.

    Each node type gets its own subclass (see :func:`_node_class`) whose instances use the
    JSON object itself as their ``__dict__``: fields the JSON holds read at native speed,
    absent ones fall back to class attributes holding pglast's value for "absent", and
    fields holding nodes or lists are properties that convert the JSON once, on first read.
    """

    tag = ""
    _field_names: tuple[tuple[str, str], ...] = ()  # (attribute, JSON key) of every field

    def __init__(self, fields: dict[str, Any]) -> None:
        self.__dict__ = fields

    def __getattr__(self, name: str) -> Any:
        # Reached only for names that are not fields of this node type (pglast raises too).
        raise AttributeError(f"{self.tag} has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"<{self.tag} {sorted(self.__dict__)}>"

    def children(self) -> Iterator[Any]:
        """The values of the fields the JSON holds, read as attributes (nodes, tuples, ...)."""
        present = self.__dict__
        for name, key in self._field_names:
            if key in present:
                yield getattr(self, name)
        if self.tag == "A_Const":
            yield self.val


_CLASSES: dict[str, type[Node]] = {}


def _node(tag: str, fields: dict[str, Any]) -> Node:
    cls = _CLASSES.get(tag)
    if cls is None:
        cls = _CLASSES[tag] = _node_class(tag)
    return cls(fields)


def _node_class(tag: str) -> type[Node]:
    """The Node subclass for node type ``tag``, its fields described by pglast.ast."""
    from pglast import ast  # here: a journal's syntax check needs no node classes

    described = getattr(getattr(ast, tag, None), "__slots__", None)
    namespace: dict[str, Any] = {"tag": tag, "__slots__": ()}
    names: list[tuple[str, str]] = []
    for name, info in described.items() if isinstance(described, dict) else ():
        c_type = str(info.c_type)
        key = name[:-1] if name.endswith("_") else name  # pglast's def_ is C's def
        names.append((name, key))
        if key == name and (c_type in _SCALAR_TYPES or _enum_type(c_type)) and c_type != "ParseLoc":
            namespace[name] = _absent_value(c_type)  # read from the instance when present
        elif tag == "A_Const" and name == "val":
            namespace[name] = property(_a_const_value)
        else:
            namespace[name] = _converting_property(key, c_type)
    namespace["_field_names"] = tuple(names)
    return type(tag, (Node,), namespace)


def _enum_type(c_type: str) -> bool:
    return isinstance(getattr(enums, c_type, None), type)


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


def _converting_property(key: str, c_type: str) -> property:
    """A field read through conversion: nodes and lists, locations, renamed fields."""
    absent = _absent_value(c_type)
    if c_type == "ParseLoc":

        def read_location(node: Node) -> Any:
            value = node.__dict__.get(key, absent)
            return None if value == -1 else value  # -1 is pglast's "unknown location"

        return property(read_location)

    def read(node: Node) -> Any:
        present = node.__dict__
        if key not in present:
            return absent
        value = present[key]
        kind = type(value)
        # Convert once and keep the result for next time. Lists are the most read fields,
        # so they are converted here rather than through _value's general dispatch.
        if kind is list:
            value = present[key] = tuple([_tagged(item) for item in value])
        elif kind is dict:
            value = present[key] = _value(value, c_type)
        return value

    return property(read)


def _a_const_value(node: Node) -> Node | None:
    present = node.__dict__
    for key, tag in _A_CONST_VALUES.items():
        if key in present:
            return _node(tag, present[key])
    return None  # NULL constant


def _value(value: Any, c_type: str) -> Any:
    """A JSON field value as pglast reads it (``c_type`` is the field's C type)."""
    if isinstance(value, dict):
        # Generic pointers (Node*, Expr*) hold {"Type": {...}}; a field of a specific node
        # type holds the bare fields, all lower-case-initial (no node type is).
        if len(value) == 1 and next(iter(value))[0].isupper():
            return _tagged(value)
        if not value and c_type in ("Node*", "Expr*"):
            return None
        return _node(c_type.rstrip("*"), value)
    if isinstance(value, list):
        return tuple([_tagged(item) for item in value])
    return value


def _tagged(value: Any) -> Any:
    """A JSON ``{"Type": {...}}`` node (a ``List`` becomes a tuple of its items)."""
    if type(value) is not dict:
        return value
    if not value:
        return None  # a NULL list element
    (tag,) = value  # the node type, its one key
    if tag == "List":
        return tuple([_tagged(item) for item in value[tag].get("items", ())])
    try:  # _node, inlined: this runs for every node read
        cls = _CLASSES[tag]
    except KeyError:
        cls = _CLASSES[tag] = _node_class(tag)
    return cls(value[tag])


def walk(node: Any) -> Iterator[Node]:
    """Every node below (and including) ``node``, depth first, like walking pglast's tree."""
    if isinstance(node, Node):
        yield node
        for child in node.children():
            yield from walk(child)
    elif isinstance(node, tuple):
        for item in node:
            yield from walk(item)


@functools.lru_cache(maxsize=65536)
def parse_json(sql: str) -> str:
    """libpg_query's parse tree of ``sql`` as JSON text; raises pglast's ``ParseError``.

    Cached: reading a journal checks every statement's syntax and the analysis then parses
    the same statements again; each is parsed once per process.
    """
    return str(parse_sql_json(sql))


@functools.lru_cache(maxsize=65536)
def check_syntax(sql: str) -> None:
    """Raise pglast's ``ParseError`` when PostgreSQL's parser rejects ``sql``.

    The parser's statement split: the same grammar and the same errors as
    :func:`parse_json`, at half the cost, for it writes no JSON tree. A journal's check
    needs no tree; the analysis makes one when it reads the statements. Cached like
    :func:`parse_json`: each text is checked once per process.
    """
    split(sql, with_parser=True)


def parse_sql(sql: str) -> tuple[Node, ...]:
    """The statements of ``sql`` (each RawStmt's ``stmt``); raises pglast's ``ParseError``."""
    document, _ = _JSON.raw_decode(parse_json(sql))  # json.loads, minus its checks
    statements: list[Node] = [_tagged(raw["stmt"]) for raw in document.get("stmts", ())]
    for number, statement in enumerate(statements):
        lossy = _EMPTY_STRING_FIELDS.get(statement.tag)
        if lossy and any(key not in statement.__dict__ for key in lossy):
            # Rare: pglast's own tree says which omitted strings were "" rather than NULL.
            original = pglast.parse_sql(sql)[number].stmt
            for key in lossy:
                if key not in statement.__dict__ and getattr(original, key) is not None:
                    statement.__dict__[key] = getattr(original, key)
    return tuple(statements)
