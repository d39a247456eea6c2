"""What each statement of a migrations folder changes, derived from its SQL with pglast.

There is one replay engine, the history model's (:class:`~orchestrator.drizzle.model.
HistoryReplay`, the one ``validate``, ``migrate``, ``repair`` and ``inspect`` use). This
module drives it statement by statement: :class:`~orchestrator.analysis.statements.
StatementReader` reads each statement's changes from the schema as the replay holds it just
*before* the statement (does the table exist, was it created earlier in the same migration,
the column's type, nullability and default, whether an IF NOT EXISTS object is already
there), then the statement is applied. Nothing here keeps a schema of its own.

Everything here is pure: SQL text in, frozen values out. Bad SQL never raises; the statement
carries the parser's one-line message in ``error``.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.analysis.changes import (
    Action,
    Change,
    ChangeKind,
    FolderAnalysis,
    MigrationEffects,
    StatementEffects,
)
from orchestrator.analysis.statements import StatementReader, column_type_of, type_name_of
from orchestrator.drizzle.model import HistoryReplay, parse_located

__all__ = [
    "Action",
    "Change",
    "ChangeKind",
    "FolderAnalysis",
    "MigrationEffects",
    "StatementEffects",
    "analyse_migrations",
    "analyse_sql",
    "column_type_of",
    "type_name_of",
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


def analyse_migrations(
    migrations: Sequence[tuple[str, Sequence[str]]], history: HistoryReplay | None = None
) -> FolderAnalysis:
    """Replay ``(tag, statements)`` in journal order and return every statement's changes.

    ``statements`` are the file's pieces split on ``--> statement-breakpoint``, untrimmed (a
    piece may hold several SQL statements; they are numbered one by one). Each statement
    knows the file line it starts on, counted from the pieces' newlines. Each statement's
    changes are read from the history replay just before it is applied to it.

    ``history`` is the replay to drive (a new one by default): afterwards it holds the whole
    folder, its :meth:`~HistoryReplay.result` being :func:`build_object_model`'s.
    """
    history = HistoryReplay() if history is None else history
    reader = StatementReader(history)
    results: list[MigrationEffects] = []
    for tag, pieces in migrations:
        history.begin(tag)
        statements: list[StatementEffects] = []
        first_line = 1
        for piece_number, piece in enumerate(pieces, start=1):
            piece_line, first_line = first_line, first_line + piece.count("\n")
            if not piece.strip():
                continue
            try:
                parsed = parse_located(piece)
            except Exception as exc:  # pglast.parser.ParseError and friends
                history.unparseable(piece_number, exc)
                statements.append(
                    StatementEffects(
                        len(statements) + 1,
                        piece.strip(),
                        error=_one_line(exc),
                        line=_line_of(piece, piece_line),
                    )
                )
                continue
            for node, reading, start, length in parsed:
                text, offset = _located(piece, start, length)
                line = _line_of(piece, piece_line, offset)
                number = len(statements) + 1
                try:
                    changes = tuple(reader.changes(reading))
                except Exception as exc:  # an exotic statement must not crash the analysis
                    reason = f"could not analyse ({type(exc).__name__}: {_one_line(exc)})"
                    statement = StatementEffects(number, text, error=reason, line=line)
                else:
                    statement = StatementEffects(number, text, changes, line=line)
                statements.append(statement)
                history.apply(node, piece_number)
        history.end()
        results.append(MigrationEffects(tag, tuple(statements)))
    return FolderAnalysis(tuple(results))


def analyse_sql(sql: str, *, tag: str = "snippet", before: str = "") -> MigrationEffects:
    """The effects of one SQL text (pieces split on ``;``-terminated statements by pglast).

    ``before`` is SQL replayed first as an earlier migration, to set up existing tables.
    Convenient for tests and for linting a single file.
    """
    folder = [("before", [before]), (tag, [sql])] if before else [(tag, [sql])]
    return analyse_migrations(folder).by_tag(tag)
