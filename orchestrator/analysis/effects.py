"""What each statement of a migrations folder changes, derived from its SQL with pglast.

Each migration's statements are read in order by a
:class:`~orchestrator.analysis.statements.StatementReader`, with the shadow's facts about
the schema just before the migration (:mod:`~orchestrator.analysis.shadowfacts`) when the
folder's replayed :class:`~orchestrator.catalog.History` is given. Without it, only what
the SQL says.

Pure: SQL text (and a history) in, frozen values out. Bad SQL never raises; the statement
carries the parser's one-line message in ``error``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from orchestrator.analysis.changes import (
    Action,
    Change,
    ChangeKind,
    FolderAnalysis,
    MigrationEffects,
    StatementEffects,
)
from orchestrator.analysis.shadowfacts import MigrationFacts, migration_facts
from orchestrator.analysis.statements import StatementReader
from orchestrator.catalog import History
from orchestrator.drizzle.pgjson import Node, parse_json, parse_sql

__all__ = [
    "Action",
    "Change",
    "ChangeKind",
    "FolderAnalysis",
    "MigrationEffects",
    "StatementEffects",
    "analyse_migrations",
    "analyse_sql",
]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _located(piece: str, start: int, length: int) -> tuple[str, int]:
    """The text of the statement at UTF-8 bytes ``[start, start + length)`` of ``piece``
    (``length`` 0: to the end), stripped, and the character offset where it starts.

    libpg_query counts bytes; Python slices characters."""
    if piece.isascii():
        return piece[start : start + length if length else None].strip(), start
    data = piece.encode("utf-8")
    end = start + length if length else len(data)
    offset = len(data[:start].decode("utf-8", errors="ignore"))
    return data[start:end].decode("utf-8", errors="replace").strip(), offset


def _skip_blanks_and_comments(text: str, start: int = 0) -> int:
    """The index of the first character at or after ``start`` that is neither white space
    nor inside a comment (``-- ...`` to the end of the line, ``/* ... */``, nested)."""
    i, n = start, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        else:
            break
    return i


def _line_of(piece: str, first_line: int, offset: int = 0) -> int:
    """The file line where the statement at character ``offset`` of ``piece`` starts,
    skipping the blank lines and comments before it; ``first_line`` is the line ``piece``
    starts on."""
    start = _skip_blanks_and_comments(piece, offset)
    return first_line + piece.count("\n", 0, start)


def _parse_located(sql: str) -> list[tuple[Node, int, int]]:
    """Each statement of ``sql`` with where it starts and its length, in UTF-8 bytes as
    libpg_query counts (length 0: to the end). Raises pglast's ``ParseError``."""
    document, _ = json.JSONDecoder().raw_decode(parse_json(sql))
    places = document.get("stmts", ())
    return [
        (node, int(raw.get("stmt_location", 0)), int(raw.get("stmt_len", 0)))
        for node, raw in zip(parse_sql(sql), places, strict=True)
    ]


def analyse_migrations(
    migrations: Sequence[tuple[str, Sequence[str]]], history: History | None = None
) -> FolderAnalysis:
    """Every statement's changes of ``(tag, statements)``, in journal order.

    ``statements`` are the file's pieces split on ``--> statement-breakpoint``, untrimmed (a
    piece may hold several SQL statements; they are numbered one by one). Each statement
    knows the file line it starts on, counted from the pieces' newlines.

    ``history``: the folder replayed on the shadow (one delta per migration, in the same
    order), whose facts each migration's statements are read with.
    """
    facts: Sequence[MigrationFacts | None] = [None] * len(migrations)
    if history is not None:
        if len(history.deltas) != len(migrations):
            raise ValueError("the history does not replay these migrations")
        facts = migration_facts(history)
    results: list[MigrationEffects] = []
    for (tag, pieces), known in zip(migrations, facts, strict=True):
        reader = StatementReader(known)
        statements: list[StatementEffects] = []
        first_line = 1
        for piece in pieces:
            piece_line, first_line = first_line, first_line + piece.count("\n")
            if not piece.strip():
                continue
            try:
                parsed = _parse_located(piece)
            except Exception as exc:  # pglast.parser.ParseError and friends
                statements.append(
                    StatementEffects(
                        len(statements) + 1,
                        piece.strip(),
                        error=_one_line(exc),
                        line=_line_of(piece, piece_line),
                    )
                )
                continue
            for node, start, length in parsed:
                text, offset = _located(piece, start, length)
                line = _line_of(piece, piece_line, offset)
                number = len(statements) + 1
                try:
                    changes = tuple(reader.changes(node))
                except Exception as exc:  # an exotic statement must not crash the analysis
                    reason = f"could not analyse ({type(exc).__name__}: {_one_line(exc)})"
                    statement = StatementEffects(number, text, error=reason, line=line)
                else:
                    statement = StatementEffects(number, text, changes, line=line)
                statements.append(statement)
        catalog, rewrites = ((), ()) if known is None else (known.changed, known.rewrites)
        results.append(MigrationEffects(tag, tuple(statements), catalog, tuple(sorted(rewrites))))
    return FolderAnalysis(tuple(results))


def analyse_sql(sql: str, *, tag: str = "snippet") -> MigrationEffects:
    """The effects of one SQL text, from the SQL alone (no shadow)."""
    return analyse_migrations([(tag, [sql])]).by_tag(tag)
