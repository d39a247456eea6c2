"""Whether a data statement can run twice without changing the data twice.

A migration applied by hand and then again by the migrator runs its INSERTs and UPDATEs
twice. Read from the statement's parse tree alone (pure): lint's ``not-rerunnable`` rule and
the plan's rerun column use these answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from orchestrator.drizzle.pgjson import Node, walk


def insert_skips_existing_rows(insert: Any) -> bool:
    """True when an INSERT skips rows already there: ON CONFLICT, or INSERT ... SELECT ...
    WHERE NOT EXISTS (...). Run twice, any other INSERT adds its rows twice (or fails on a
    key)."""
    select = insert.selectStmt
    where = select.whereClause if _is(select, "SelectStmt") else None
    return insert.onConflictClause is not None or _has_not_exists(where)


def update_reads_what_it_sets(update: Any) -> bool:
    """True when an UPDATE sets a column from an expression reading that same column:
    ``SET n = n + 1`` compounds when run twice; ``SET n = 0`` does not."""
    for target in update.targetList or ():
        name = str(target.name)
        for ref in _column_refs(target.val):
            fields = [f for f in ref.fields or () if _is(f, "String")]
            if fields and str(fields[-1].sval) == name:
                return True
    return False


def _has_not_exists(where: Any) -> bool:
    """True when a WHERE clause holds ``NOT EXISTS (subquery)``."""
    for node in walk(where):
        if node.tag == "BoolExpr" and node.boolop == "NOT_EXPR":
            for arg in node.args or ():
                if _is(arg, "SubLink") and arg.subLinkType == "EXISTS_SUBLINK":
                    return True
    return False


def _column_refs(node: Any) -> Iterator[Any]:
    return (sub for sub in walk(node) if sub.tag == "ColumnRef")


def _is(node: Any, tag: str) -> bool:
    return isinstance(node, Node) and node.tag == tag
