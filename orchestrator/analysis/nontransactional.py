"""Which statements of a release cannot run inside the migration transaction (pure).

drizzle's migrator (and ours, by default) applies every pending migration in one
transaction. PostgreSQL refuses some statements there:

- ``CREATE INDEX CONCURRENTLY``, ``DROP INDEX CONCURRENTLY``, ``REINDEX ... CONCURRENTLY``
  ("cannot run inside a transaction block");
- ``ALTER TYPE ... ADD VALUE`` is accepted, but the new value cannot be *used* before the
  transaction commits ("unsafe use of new value"), so it fails when a later statement of the
  same release (the same migration or a later pending one) uses the value.

A migration holding such a statement is *non-transactional*: with ``--allow-concurrent`` it
runs statement by statement in autocommit (:mod:`orchestrator.db.concurrent`); without it,
``lint`` reports an error and ``migrate`` refuses before changing anything.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.analysis.changes import Change, MigrationEffects, StatementEffects
from orchestrator.analysis.effects import analyse_migrations

# Cheap text filter: only migrations matching it are parsed.
_CANDIDATE = re.compile(r"\bconcurrently\b|\badd\s+value\b", re.IGNORECASE)


@dataclass(frozen=True)
class NonTransactional:
    """One statement that cannot run inside the migration transaction, and why."""

    tag: str
    statement: int  # 1-based among the migration's statements
    line: int  # 1-based line of ``<tag>.sql``
    sql: str
    reason: str
    kind: str = "concurrently"  # or "enum_value": ADD VALUE used later in the release

    @property
    def location(self) -> str:
        """``<tag>.sql:<line>``."""
        return f"{self.tag}.sql:{self.line}"


def enum_value_of(change: Change) -> str | None:
    """The label an ``add_enum_value`` change adds (None for other changes)."""
    if change.kind != "add_enum_value":
        return None
    # target is "enum_value <schema>.<enum>.<label>"; the label may itself hold dots
    parts = change.target.split(" ", 1)[-1].split(".", 2)
    return parts[2] if len(parts) == 3 else None


def _quoted(label: str) -> str:
    return "'" + label.replace("'", "''") + "'"


def _concurrent_reason(change: Change) -> str | None:
    if not change.concurrently:
        return None
    verbs = {"create_index": "CREATE INDEX", "drop_index": "DROP INDEX", "reindex": "REINDEX"}
    verb = verbs.get(change.effective_kind)
    return f"{verb} CONCURRENTLY ({change.target})" if verb else None


def nontransactional_statements(
    release: Sequence[tuple[str, Sequence[str]]],
) -> list[NonTransactional]:
    """The statements of ``release`` (``(tag, pieces)`` in journal order, as applied together)
    that cannot run inside one transaction, in order. Only the migrations whose text says
    CONCURRENTLY or ADD VALUE are parsed."""
    texts = ["\n".join(pieces) for _, pieces in release]
    candidates = {
        tag for (tag, _), text in zip(release, texts, strict=True) if _CANDIDATE.search(text)
    }
    read = {m.tag: m for m in analyse_migrations(release, tags=candidates).migrations}
    return _found(
        [(tag, read.get(tag), text) for (tag, _), text in zip(release, texts, strict=True)]
    )


def nontransactional_in(migrations: Sequence[MigrationEffects]) -> list[NonTransactional]:
    """:func:`nontransactional_statements` of migrations already analysed."""
    return _found([(m.tag, m, "\n".join(s.sql for s in m.statements)) for m in migrations])


# (tag, its effects when they were read, its text)
_Release = Sequence[tuple[str, MigrationEffects | None, str]]


def _found(release: _Release) -> list[NonTransactional]:
    """The non-transactional statements of the migrations of ``release`` that were read."""
    found: list[NonTransactional] = []
    for index, (tag, effects, _) in enumerate(release):
        if effects is None:
            continue
        for position, statement in enumerate(effects.statements):
            for change in statement.changes:
                reason = _concurrent_reason(change)
                label = enum_value_of(change)
                kind = "concurrently"
                if reason is None and label is not None:
                    kind = "enum_value"
                    user = _first_use(label, effects, position, release[index + 1 :])
                    if user is not None:
                        reason = (
                            f"ALTER TYPE ... ADD VALUE {_quoted(label)}, used by {user} "
                            "before the transaction could commit"
                        )
                if reason is not None:
                    found.append(
                        NonTransactional(
                            tag, statement.number, statement.line, statement.sql, reason, kind
                        )
                    )
                    break
    return found


def _first_use(label: str, effects: MigrationEffects, position: int, later: _Release) -> str | None:
    """Where ``label`` is used after statement ``position`` of ``effects``, or in a ``later``
    migration: ``<tag>.sql:<line>`` or ``<tag>.sql`` (a quoted literal in the text: best effort)."""
    literal = _quoted(label)
    for statement in effects.statements[position + 1 :]:
        if literal in statement.sql:
            return f"{effects.tag}.sql:{statement.line}"
    for tag, _, text in later:
        if literal in text:
            return f"{tag}.sql"
    return None


def refusal(found: NonTransactional) -> str:
    """What ``migrate`` (and the deploy's migrate step) says when it refuses a release that
    holds ``found`` without ``--allow-concurrent``; the rehearsal predicts the same words."""
    return (
        f"{found.location}: {found.reason} cannot run inside the migration transaction; "
        f"pass --allow-concurrent (playbook: migrations.concurrent: true) to run "
        f"{found.tag} outside a transaction, statement by statement; nothing was changed"
    )


def probe_sql(statement: str) -> str | None:
    """A read-only query that resolves what a non-transactional ``statement`` names, without
    running it (for a rehearsal that must not build an index on production); None when there
    is nothing to resolve that way.

    - ``CREATE INDEX``: ``SELECT <each element> FROM <table> WHERE (<predicate>) AND false``:
      the table, the columns, the expressions and a partial index's predicate must resolve,
      and no row is read;
    - ``ALTER TYPE ... ADD VALUE``: ``SELECT NULL::<type>``: the type must exist;
    - ``DROP INDEX`` / ``REINDEX`` of a named index: ``SELECT '<index>'::regclass`` (not for
      ``DROP INDEX IF EXISTS``).
    """
    from pglast import ast, parse_sql
    from pglast.stream import RawStream

    try:
        parsed = parse_sql(statement)
    except Exception:  # pglast.parser.ParseError: the folder was refused; nothing to probe
        return None
    if len(parsed) != 1:
        return None
    node = parsed[0].stmt

    def stream(part: Any) -> str:
        return str(RawStream()(part))  # a new stream each time: one keeps what it printed

    if isinstance(node, ast.IndexStmt):
        elements = [
            stream(p.expr) if p.expr is not None else _quote_ident(str(p.name))
            for p in node.indexParams or ()
        ]
        where = f"({stream(node.whereClause)}) AND false" if node.whereClause else "false"
        columns = ", ".join(f"({e})" for e in elements) or "1"
        return f"SELECT {columns} FROM {stream(node.relation)} WHERE {where}"
    if isinstance(node, ast.AlterEnumStmt) and node.newVal is not None:
        return f"SELECT NULL::{'.'.join(_quote_ident(n.sval) for n in node.typeName or ())}"
    if isinstance(node, ast.DropStmt) and not node.missing_ok and node.objects:
        names = [".".join(_quote_ident(n.sval) for n in obj) for obj in node.objects]
        return "SELECT " + ", ".join(f"{_quoted(name)}::regclass" for name in names)
    if isinstance(node, ast.ReindexStmt) and node.relation is not None:
        return f"SELECT {_quoted(stream(node.relation))}::regclass"
    return None


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def catalog_checked(statement: StatementEffects) -> bool:
    """Whether the non-transactional runner checks the catalog before ``statement`` (and skips
    it when its effect is there): a lone index build or drop, or a lone ``ADD VALUE``."""
    if statement.error is not None or len(statement.changes) != 1:
        return False
    change = statement.changes[0]
    if change.effective_kind in ("create_index", "drop_index"):
        return len(change.target.split(" ", 1)[-1].split(".", 1)) == 2
    return enum_value_of(change) is not None
