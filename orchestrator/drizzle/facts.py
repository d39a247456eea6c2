"""Facts: what one catalog object looks like, in the same words for the model and the database.

The history model (:mod:`orchestrator.drizzle.model`) and the catalog snapshot
(:mod:`orchestrator.db.catalog`) both describe the schema as ``{DbObject: Fact}``. A fact is a
tuple of the attributes that matter to a release:

========== =====================================================================
kind       fact
========== =====================================================================
column     ``(type, not_null, default)``: type as ``format_type()`` prints it, the
           default as a canonical parse of its expression (casts stripped)
constraint ``(contype, columns, ref_table, ref_columns, on_delete, on_update)``
index      ``(unique, columns)``
others     ``()``: present
========== =====================================================================

An absent object has no fact. Where the model cannot know an attribute (a type it does not
model, a column list behind an expression) it puts :data:`UNKNOWN`, which matches anything:
the model never calls a database wrong on a guess.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from typing import Any, Final

__all__ = [
    "NEXTVAL",
    "NO_DEFAULT",
    "UNKNOWN",
    "Fact",
    "describe_fact",
    "format_type",
    "matches",
    "normalize_default_json",
    "normalize_default_sql",
    "normalize_server_default",
    "quote_ident",
]


class _Unknown:
    """An attribute the model cannot know: it matches any value."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "?"


UNKNOWN: Final = _Unknown()
NO_DEFAULT: Final = None
NEXTVAL: Final = "nextval()"  # a serial column's default, whatever its sequence is called

Fact = tuple[Any, ...]

# Catalog type names as format_type() prints them (no type modifier).
_TYPE_NAMES: dict[str, str] = {
    "int2": "smallint",
    "int4": "integer",
    "int8": "bigint",
    "smallint": "smallint",
    "integer": "integer",
    "int": "integer",
    "bigint": "bigint",
    "serial": "integer",
    "serial4": "integer",
    "bigserial": "bigint",
    "serial8": "bigint",
    "smallserial": "smallint",
    "serial2": "smallint",
    "float4": "real",
    "real": "real",
    "float8": "double precision",
    "bool": "boolean",
    "boolean": "boolean",
    "varchar": "character varying",
    "bpchar": "character",
    "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone",
    "time": "time without time zone",
    "timetz": "time with time zone",
    "numeric": "numeric",
    "decimal": "numeric",
    "text": "text",
    "uuid": "uuid",
    "json": "json",
    "jsonb": "jsonb",
    "date": "date",
    "bytea": "bytea",
    "inet": "inet",
    "cidr": "cidr",
    "macaddr": "macaddr",
    "macaddr8": "macaddr8",
    "money": "money",
    "xml": "xml",
    "tsvector": "tsvector",
    "tsquery": "tsquery",
    "point": "point",
    "line": "line",
    "box": "box",
    "polygon": "polygon",
    "circle": "circle",
    "bit": "bit",
    "varbit": "bit varying",
    "oid": "oid",
    "interval": "interval",
    "citext": "citext",
}
SERIAL_TYPES: Final = frozenset(
    {"serial", "serial4", "bigserial", "serial8", "smallserial", "serial2"}
)


@functools.cache
def _quoted_keywords() -> frozenset[str]:
    """The keywords ``quote_identifier`` quotes. Loaded on first use: importing pglast costs
    30 ms, and a validate whose history model comes from the cache may never quote a name."""
    from pglast import keywords

    return (
        frozenset(keywords.RESERVED_KEYWORDS)
        | frozenset(keywords.COL_NAME_KEYWORDS)
        | frozenset(keywords.TYPE_FUNC_NAME_KEYWORDS)
    )


def quote_ident(name: str) -> str:
    """``name`` as PostgreSQL's ``quote_identifier`` prints it."""
    safe = (
        bool(name)
        and (name[0].islower() or name[0] == "_")
        and all((c.islower() and c.isascii()) or c.isdigit() or c in "_$" for c in name)
        and name not in _quoted_keywords()
    )
    return name if safe else '"' + name.replace('"', '""') + '"'


def format_type(
    names: Sequence[str],
    typmods: Sequence[object],
    array: bool,
    *,
    enum_schema: str | None = None,
) -> Any:
    """The type as ``format_type(oid, typmod)`` prints it, or :data:`UNKNOWN`.

    ``names`` are the parsed type name's parts (``["pg_catalog", "varchar"]``), ``typmods``
    its modifiers' constant values. ``enum_schema`` is set when the name denotes an enum the
    model knows, in that schema: printed bare in ``public``, schema-qualified elsewhere.
    """
    if enum_schema is not None:
        base = quote_ident(names[-1])
        if enum_schema != "public":
            base = f"{quote_ident(enum_schema)}.{base}"
        return base + "[]" if array else base
    if len(names) > 2 or (len(names) == 2 and names[0] != "pg_catalog"):
        return UNKNOWN
    builtin = _TYPE_NAMES.get(names[-1])
    if builtin is None or any(not isinstance(m, int) for m in typmods):
        return UNKNOWN
    mods = [m for m in typmods if isinstance(m, int)]
    printed = _with_modifiers(names[-1], builtin, mods)
    if printed is None:
        return UNKNOWN
    return printed + "[]" if array else printed


def _with_modifiers(name: str, base: str, mods: list[int]) -> str | None:
    if not mods:
        return base
    if name in ("varchar", "bpchar", "bit", "varbit") and len(mods) == 1:
        return f"{base}({mods[0]})"
    if name in ("numeric", "decimal") and len(mods) in (1, 2):
        scale = mods[1] if len(mods) == 2 else 0
        return f"numeric({mods[0]},{scale})"
    if name in ("timestamp", "timestamptz", "time", "timetz") and len(mods) == 1:
        word, zone = base.split(" ", 1)
        return f"{word}({mods[0]}) {zone}"
    return None  # interval fields and other rarities: not modelled


def matches(model: Fact | None, database: Fact | None) -> bool:
    """Whether the database's fact is what the model says (absent on both sides counts)."""
    if model is None or database is None:
        return model is database
    if model == database:
        return True
    if len(model) != len(database):
        return False
    return all(m is UNKNOWN or m == d for m, d in zip(model, database, strict=True))


def describe_fact(obj_kind: str, fact: Fact | None) -> str:
    """A fact for people: ``absent``, ``present``, or its attributes."""
    if fact is None:
        return "absent"
    if not fact:
        return "present"
    if obj_kind == "column":
        type_, not_null, default = fact
        parts = [str(type_), "NOT NULL" if not_null is True else "NULL"]
        if not_null is UNKNOWN:
            parts.pop()
        if default is not NO_DEFAULT:
            parts.append(f"DEFAULT {_default_text(default)}")
        return " ".join(parts)
    if obj_kind == "constraint":
        contype, columns, ref, ref_columns, on_delete, on_update = fact
        label = {"p": "PRIMARY KEY", "u": "UNIQUE", "f": "FOREIGN KEY", "c": "CHECK"}.get(
            str(contype), str(contype)
        )
        text = f"{label} {_names(columns)}"
        if contype == "f":
            text += f" REFERENCES {ref} {_names(ref_columns)}"
            text += f" ON DELETE {_ACTIONS.get(on_delete, on_delete)}"
            text += f" ON UPDATE {_ACTIONS.get(on_update, on_update)}"
        return text
    if obj_kind == "index":
        unique, columns = fact
        return ("UNIQUE " if unique is True else "") + f"INDEX {_names(columns)}"
    return repr(fact)


_ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


def _names(columns: Any) -> str:
    if columns is UNKNOWN:
        return "(?)"
    return "(" + ", ".join(str(c) for c in columns) + ")"


def _default_text(default: Any) -> str:
    if default is UNKNOWN:
        return "?"
    if default == NEXTVAL:
        return "nextval(...)"
    return str(default)


# --------------------------------------------------------------------------------------------
# Default expressions: the model reads them from the migration's parse tree, the database
# prints them with pg_get_expr(); both become the same canonical text by parsing and
# stripping what PostgreSQL adds (casts to the column's type, locations, call formats).
# --------------------------------------------------------------------------------------------

_DROPPED_KEYS = frozenset({"location", "funcformat", "typemod"})


def normalize_default_json(expr: Any) -> Any:
    """The canonical text of a default expression given as libpg_query JSON (a raw node)."""
    if type(expr) is dict and len(expr) == 1:  # the common shapes, without the general walk
        constant = expr.get("A_Const")
        if type(constant) is dict:
            return _constant(constant)
        call = expr.get("FuncCall")
        if type(call) is dict and call.keys() <= _PLAIN_CALL:
            names = call.get("funcname")
            if type(names) is list and len(names) == 1 and type(names[0]) is dict:
                name = names[0].get("String", {}).get("sval")
                if type(name) is str and name != "nextval":
                    return _dumps({"FuncCall": {"funcname": [{"String": {"sval": name}}]}})
    canonical = _canonical(expr)
    if isinstance(canonical, dict) and set(canonical) == {"nextval"}:
        return NEXTVAL
    if isinstance(canonical, str):
        return canonical
    return _dumps(canonical)


def _dumps(canonical: Any) -> str:
    return json.dumps(canonical, sort_keys=True, separators=(",", ":"))


_PLAIN_CALL = frozenset({"funcname", "funcformat", "location"})  # name(), nothing else


@functools.lru_cache(maxsize=4096)
def normalize_default_sql(text: str) -> Any:
    """The canonical text of a default as ``pg_get_expr`` prints it (UNKNOWN if unparsable)."""
    if text.startswith("nextval(") and text.endswith("::regclass)"):
        return NEXTVAL  # a serial's sequence: one per column, not worth a parse each
    from pglast.parser import ParseError, parse_sql_json

    try:
        document = json.loads(parse_sql_json(f"SELECT {text}"))
        target = document["stmts"][0]["stmt"]["SelectStmt"]["targetList"][0]["ResTarget"]
        return normalize_default_json(target["val"])
    except (ParseError, KeyError, IndexError, TypeError):
        return UNKNOWN


# Defaults as the server prints them that need no parse (see normalize_server_default).
_SERVER_CALL = re.compile(r"[a-z_][a-z0-9_]*\(\)")  # what quote_identifier leaves bare
# nextval is the serials' (NEXTVAL); OPERATOR() is syntax, though an unreserved keyword.
_NOT_PLAIN_CALLS = frozenset({"nextval()", "operator()"})
_SERVER_INTEGER = re.compile(r"0|-?[1-9][0-9]{0,8}")  # int4: the parser's ival, printed back


@functools.lru_cache(maxsize=4096)
def normalize_server_default(text: str) -> Any:
    """:func:`normalize_default_sql` of a default as ``pg_get_expr`` printed it, without
    pglast for the commonest forms: ``now()``-like calls, booleans and small integers.

    Only for the server's text: ``pg_get_expr`` quotes every name that is a keyword other
    than an unreserved one (``quote_identifier``), so an unquoted ``name()`` it prints is a
    plain call, which is what the parser would say. A folder whose history model is cached
    then validates without importing pglast at all when its defaults are all of this kind.
    """
    if _SERVER_CALL.fullmatch(text) and text not in _NOT_PLAIN_CALLS:
        return _dumps({"FuncCall": {"funcname": [{"String": {"sval": text[:-2]}}]}})
    if text in ("true", "false") or _SERVER_INTEGER.fullmatch(text):
        return text
    return normalize_default_sql(text)


def _canonical(node: Any) -> Any:
    if isinstance(node, list):
        return [_canonical(item) for item in node]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        ((tag, fields),) = node.items()
        if tag == "TypeCast" and isinstance(fields, dict):
            return _canonical(fields.get("arg"))
        if tag == "A_Const" and isinstance(fields, dict):
            return _constant(fields)
        if tag == "FuncCall" and isinstance(fields, dict):
            names = [part.get("String", {}).get("sval") for part in fields.get("funcname", [])]
            if names and names[-1] == "nextval":
                return {"nextval": True}
    return {key: _canonical(value) for key, value in node.items() if key not in _DROPPED_KEYS}


def _json_canonical(text: str) -> str:
    """JSON text as jsonb prints it back (``{"a":1}`` and ``{"a": 1}`` agree); else as is."""
    if text[:1] not in ("{", "["):
        return text
    try:
        return json.dumps(json.loads(text), separators=(", ", ": "), sort_keys=True)
    except ValueError:
        return text  # an array literal such as '{a,b}'


def _constant(fields: dict[str, Any]) -> str:
    """A constant's text whatever its literal form: ``-1`` and ``'-1'::integer`` agree."""
    if fields.get("isnull"):
        return "NULL"
    if "ival" in fields:
        return str(fields["ival"].get("ival", 0))
    if "fval" in fields:
        return str(fields["fval"].get("fval", "0"))
    if "boolval" in fields:
        return "true" if fields["boolval"].get("boolval") else "false"
    if "sval" in fields:
        return _json_canonical(str(fields["sval"].get("sval", "")))
    if "bsval" in fields:
        return str(fields["bsval"].get("bsval", ""))
    return json.dumps(fields, sort_keys=True)
