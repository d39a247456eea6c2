"""Whether a data statement can run twice without changing the data twice.

A migration applied by hand and then again by the migrator runs its INSERTs and UPDATEs
twice. Read from the statement's parse tree alone (pure): lint's ``not-rerunnable`` rule and
the plan's rerun column use these answers.
"""

from __future__ import annotations

from typing import Any

from pglast import ast
from pglast.enums import BoolExprType, SubLinkType
from pglast.visitors import Visitor


def insert_skips_existing_rows(insert: Any) -> bool:
    """True when an INSERT skips rows already there: ON CONFLICT, or INSERT ... SELECT ... WHERE NOT
    EXISTS (...). Run twice, any other INSERT adds its rows twice (or fails on a key)."""
    select = insert.selectStmt
    where = select.whereClause if isinstance(select, ast.SelectStmt) else None
    return insert.onConflictClause is not None or any(
        node.boolop == BoolExprType.NOT_EXPR
        and any(
            isinstance(arg, ast.SubLink) and arg.subLinkType == SubLinkType.EXISTS_SUBLINK
            for arg in node.args or ()
        )
        for node in _nodes(where, ast.BoolExpr)
    )


def update_reads_what_it_sets(update: Any) -> bool:
    """True when an UPDATE sets a column from an expression reading that same column:
    ``SET n = n + 1`` compounds when run twice; ``SET n = 0`` does not."""
    for target in update.targetList or ():
        for ref in _nodes(target.val, ast.ColumnRef):
            fields = [f for f in ref.fields or () if isinstance(f, ast.String)]
            if fields and fields[-1].sval == target.name:
                return True
    return False


class _Collect(Visitor):
    """Every node of one class below a node (pglast's traversal)."""

    def __init__(self, kind: type[ast.Node]) -> None:
        self.kind = kind
        self.found: list[Any] = []

    def visit(self, ancestors: Any, node: ast.Node) -> None:
        if isinstance(node, self.kind):
            self.found.append(node)


def _nodes(node: Any, kind: type[ast.Node]) -> list[Any]:
    """The nodes of class ``kind`` in the tree below ``node`` (which may be None)."""
    if node is None:
        return []
    collect = _Collect(kind)
    collect(node)
    return collect.found
