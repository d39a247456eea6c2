"""Reading parse trees for the replay: raw-JSON helpers, node kinds, DO block bodies."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any, NamedTuple

import pglast
from pglast import ast
from pglast.enums import AlterTableType, ConstrType, DropBehavior, ObjectType

from orchestrator.drizzle.facts import (
    format_type,
)
from orchestrator.drizzle.model.entities import ConstraintType, _Enum, _Written
from orchestrator.drizzle.model.names import truncate_identifier
from orchestrator.drizzle.pgjson import Node, raw_fields, walk


class _Unanalysable(Exception):
    """A part of a migration (a DO body) that pglast could not parse."""


def _is(node: Any, kind: type[ast.Node]) -> bool:
    """Whether ``node`` is a parse-tree node of pglast's type ``kind``."""
    return isinstance(node, Node) and node.tag == kind.__name__


def _column_ref_fields(node: Any) -> Iterator[tuple[Any, ...]]:
    """The fields (String or A_Star nodes) of every ColumnRef below ``node``."""
    for sub in walk(node):
        if _is(sub, ast.ColumnRef) and sub.fields:
            yield tuple(sub.fields)


def _column_refs(node: Any) -> set[str]:
    """Column names referenced by an expression (last field of each ColumnRef)."""
    return {
        truncate_identifier(str(fields[-1].sval))
        for fields in _column_ref_fields(node)
        if _is(fields[-1], ast.String)
    }


def _raw_strings(items: Any) -> list[str] | None:
    """The untruncated strings of a raw JSON list of String nodes; None if it is not one."""
    if items is None:
        return []
    if type(items) is not list:
        return None  # already converted to Nodes by an earlier read
    try:
        # str(): an omitted sval reads as None through a Node, and str(None) there too.
        return [str(item["String"].get("sval")) for item in items]
    except (KeyError, AttributeError):
        return None


def _raw_nodes(items: Any, tag: str) -> list[dict[str, Any]] | None:
    """The fields of each node of a raw JSON list of ``tag`` nodes (absent: empty).

    None when ``items`` is anything else: a tuple of Nodes an earlier read converted (a list
    is converted as a whole, so a raw list holds raw items), or a list of other node types.
    """
    if items is None:
        return []
    if type(items) is not list:
        return None
    try:
        return [item[tag] for item in items]
    except KeyError:
        return None


def _strings(items: Any) -> list[str]:
    """The identifiers of a pglast list of String nodes, truncated like PostgreSQL."""
    return [truncate_identifier(str(item.sval)) for item in (items or ())]


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# The parse tree (pgjson) gives enum fields as member names: compare with pglast's names.
_CONSTRAINT_TYPES: dict[str, ConstraintType] = {
    ConstrType.CONSTR_PRIMARY.name: "p",
    ConstrType.CONSTR_UNIQUE.name: "u",
    ConstrType.CONSTR_EXCLUSION.name: "x",
    ConstrType.CONSTR_FOREIGN.name: "f",
    ConstrType.CONSTR_CHECK.name: "c",
}

_TABLE = ObjectType.OBJECT_TABLE.name
_VIEW = ObjectType.OBJECT_VIEW.name
_MATVIEW = ObjectType.OBJECT_MATVIEW.name
_INDEX = ObjectType.OBJECT_INDEX.name
_COLUMN = ObjectType.OBJECT_COLUMN.name
_TABCONSTRAINT = ObjectType.OBJECT_TABCONSTRAINT.name
_TYPE = ObjectType.OBJECT_TYPE.name
_SCHEMA = ObjectType.OBJECT_SCHEMA.name
_TRIGGER = ObjectType.OBJECT_TRIGGER.name
_ROUTINE_KINDS = {
    ObjectType.OBJECT_FUNCTION.name,
    ObjectType.OBJECT_PROCEDURE.name,
    ObjectType.OBJECT_ROUTINE.name,
}
_RELATION_KINDS = {_TABLE, _VIEW, _MATVIEW}
_CASCADE = DropBehavior.DROP_CASCADE.name
_AT_ADD_COLUMN = AlterTableType.AT_AddColumn.name
_AT_DROP_COLUMN = AlterTableType.AT_DropColumn.name
_AT_ADD_CONSTRAINT = AlterTableType.AT_AddConstraint.name
_AT_DROP_CONSTRAINT = AlterTableType.AT_DropConstraint.name
_AT_ALTER_COLUMN_TYPE = AlterTableType.AT_AlterColumnType.name
_AT_SET_NOT_NULL = AlterTableType.AT_SetNotNull.name
_AT_DROP_NOT_NULL = AlterTableType.AT_DropNotNull.name
_AT_COLUMN_DEFAULT = AlterTableType.AT_ColumnDefault.name
_AT_ADD_IDENTITY = AlterTableType.AT_AddIdentity.name
_AT_DROP_IDENTITY = AlterTableType.AT_DropIdentity.name
_AT_DROP_EXPRESSION = AlterTableType.AT_DropExpression.name
_COLUMN_ALTERATIONS = frozenset(
    {
        _AT_ALTER_COLUMN_TYPE,
        _AT_SET_NOT_NULL,
        _AT_DROP_NOT_NULL,
        _AT_COLUMN_DEFAULT,
        _AT_ADD_IDENTITY,
        _AT_DROP_IDENTITY,
        _AT_DROP_EXPRESSION,
    }
)
_MAKES_NOT_NULL = frozenset({ConstrType.CONSTR_NOTNULL.name, ConstrType.CONSTR_PRIMARY.name})
_CONSTR_NULL = ConstrType.CONSTR_NULL.name
_CONSTR_DEFAULT = ConstrType.CONSTR_DEFAULT.name
_CONSTR_IDENTITY = ConstrType.CONSTR_IDENTITY.name
_CONSTR_GENERATED = ConstrType.CONSTR_GENERATED.name


class _ColumnSpec(NamedTuple):
    """A column's definition as the model keeps it."""

    enum: _Enum | None
    type: Any  # format_type() text, or UNKNOWN (always UNKNOWN for an enum: printed late)
    array: bool
    not_null: Any
    default: Any
    written: _Written | None = None
    identity: bool = False


@functools.lru_cache(maxsize=1024)
def _printed_type(names: tuple[str, ...], typmods: tuple[object, ...], array: bool) -> Any:
    """format_type() text of a built-in type (a folder uses a handful: cached)."""
    return format_type(names, typmods, array)


def _action(code: Any) -> str:
    """A foreign key action as pg_constraint stores it ('a' when the statement names none)."""
    return str(code) if code and code != "\x00" else "a"


def _plain(value: Any) -> Any:
    """A parse-tree value as raw libpg_query JSON again, whether or not a Node converted it."""
    if isinstance(value, Node):
        return {value.tag: _plain_fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _type_name_fields(coldef: dict[str, Any]) -> Any:
    """The raw fields of a raw ColumnDef's ``typeName``.

    A TypeName field holds bare fields in the JSON, but :func:`_plain` gives a Node that an
    earlier reader converted as ``{"TypeName": fields}``: unwrap it.
    """
    type_name = coldef.get("typeName")
    if type(type_name) is dict and len(type_name) == 1 and "TypeName" in type_name:
        return type_name["TypeName"]
    return type_name


def _plain_fields(node: Any) -> dict[str, Any]:
    """The raw JSON fields of a Node (or of an already raw dict)."""
    if isinstance(node, Node):
        return {key: _plain(value) for key, value in raw_fields(node).items()}
    return node if isinstance(node, dict) else {}


# Statements that rename or move entities in place (the catalog's name indexes go stale).
_RENAMING: frozenset[str] = frozenset({ast.RenameStmt.__name__, ast.AlterObjectSchemaStmt.__name__})


def _do_block_queries(body: str) -> list[str]:
    """SQL statements a DO body runs outside its exception handlers, in order."""
    quote = "$orchestrator$"
    suffix = 0
    while quote in body:  # a dollar-quote tag that cannot clash with the body
        suffix += 1
        quote = f"$orchestrator{suffix}$"
    try:
        tree = pglast.parse_plpgsql(f"DO {quote}{body}{quote}")
    except Exception as exc:
        raise _Unanalysable(f"DO block: {_one_line(exc)}") from exc
    queries: list[str] = []

    def visit(item: Any) -> None:
        if isinstance(item, list):
            for element in item:
                visit(element)
        elif isinstance(item, dict):
            for key, value in item.items():
                if key == "exceptions":
                    continue  # handlers run only when the guarded statement failed
                if key == "PLpgSQL_stmt_execsql":
                    queries.append(str(value["sqlstmt"]["PLpgSQL_expr"]["query"]))
                elif key == "PLpgSQL_stmt_dynexecute":
                    queries.extend(_literal_sql(value.get("query")))
                else:
                    visit(value)

    visit(tree)
    return queries


def _literal_sql(expr: Any) -> list[str]:
    """The SQL of ``EXECUTE '<constant>'``; dynamic strings are beyond static analysis."""
    try:
        text = str(expr["PLpgSQL_expr"]["query"])
        # Rare (EXECUTE in a DO block): pglast's own tree, as the check was written for it.
        select: Any = pglast.parse_sql(f"SELECT {text}")[0].stmt
        value = select.targetList[0].val
        single = len(select.targetList) == 1 and isinstance(value, ast.A_Const)
        if single and isinstance(value.val, ast.String):
            return [str(value.val.sval)]
    except Exception:
        pass  # not a single string constant
    return []
