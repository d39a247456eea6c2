"""What each statement of a migrations folder changes, derived from its SQL with pglast.

Each migration's statements are read in order by a
:class:`~orchestrator.analysis.statements.StatementReader`, with the shadow's facts about the schema
just before the migration (:mod:`~orchestrator.analysis.shadowfacts`) when the folder's replayed
:class:`~orchestrator.catalog.History` is given. Without it, only what the SQL says.

Pure: SQL text (and a history) in, frozen values out. Bad SQL never raises; the statement
carries the parser's one-line message in ``error``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import pglast

from orchestrator.analysis.changes import Change, FolderAnalysis, MigrationEffects, StatementEffects
from orchestrator.analysis.shadowfacts import MigrationFacts, migration_facts
from orchestrator.analysis.statements import StatementReader
from orchestrator.catalog import History

__all__ = [
    "Change",
    "FolderAnalysis",
    "MigrationEffects",
    "StatementEffects",
    "analyse_migrations",
    "analyse_sql",
]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


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
    """The file line where the statement at character ``offset`` of ``piece`` starts, skipping the
    blank lines and comments before it; ``first_line`` is the line ``piece`` starts on."""
    start = _skip_blanks_and_comments(piece, offset)
    return first_line + piece.count("\n", 0, start)


def analyse_migrations(
    migrations: Sequence[tuple[str, Sequence[str]]],
    history: History | None = None,
    tags: Collection[str] | None = None,
) -> FolderAnalysis:
    """Every statement's changes of ``(tag, statements)``, in journal order; only of the
    migrations named in ``tags`` when it is given (the others are not parsed).

    ``statements`` are the file's pieces split on ``--> statement-breakpoint``, untrimmed (a
    piece may hold several SQL statements; they are numbered one by one). Each statement
    knows the file line it starts on, counted from the pieces' newlines.

    ``history``: the folder replayed on the shadow (one delta per migration, in the same
    order), whose facts each migration's statements are read with.
    """
    facts: Sequence[MigrationFacts | None] = [None] * len(migrations)
    if history is not None:  # one delta per migration, or zip(strict=True) below refuses it
        facts = migration_facts(history)
    results: list[MigrationEffects] = []
    for (tag, pieces), known in zip(migrations, facts, strict=True):
        if tags is not None and tag not in tags:
            continue
        reader = StatementReader(known)
        statements: list[StatementEffects] = []
        first_line = 1
        for piece in pieces:
            piece_line, first_line = first_line, first_line + piece.count("\n")
            if not piece.strip():
                continue
            try:
                parsed = pglast.parse_sql(piece)
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
            for raw in parsed:
                # pglast counts characters; a length of 0 runs to the end of the piece
                start = raw.stmt_location or 0
                text = piece[start : start + raw.stmt_len if raw.stmt_len else None].strip()
                line = _line_of(piece, piece_line, start)
                number = len(statements) + 1
                try:
                    changes = tuple(reader.changes(raw.stmt))
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
