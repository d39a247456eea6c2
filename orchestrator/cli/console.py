"""Where the CLI writes: rich consoles for people, plain JSON for programs.

Only the CLI prints. JSON and plain lines pass through :func:`orchestrator.redaction.shown`:
masked as a run's record and audit trail are.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from orchestrator.errors import DatabaseError, ExitCode

if TYPE_CHECKING:
    from rich.console import Console

    out: Console  # stdout, for people
    err: Console  # stderr: progress, warnings, errors


def __getattr__(name: str) -> Any:
    """``out`` and ``err``, made on first use: importing rich costs 40 ms, and a command
    writing only JSON (``validate --json`` on a large folder) never needs it."""
    if name not in ("out", "err"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from rich.console import Console

    console = Console(stderr=name == "err", soft_wrap=True)
    globals()[name] = console
    return console


def _console(name: str) -> Console:
    """``out`` or ``err`` from inside this module (its own globals skip ``__getattr__``)."""
    console: Console = globals().get(name) or __getattr__(name)
    return console


_warnings: list[str] = []
_documents: list[None] = []  # one entry per JSON document printed


def warn(message: str) -> None:
    """A warning about the migrations folder: on stderr now, and in the JSON document."""
    _warnings.append(message)
    _console("err").print(f"warning: {message}", markup=False, highlight=False)


def forget() -> None:
    """Start a command with no warnings and no document printed (several commands may run
    in one process)."""
    _warnings.clear()
    _documents.clear()


def print_json(document: dict[str, Any]) -> None:
    """One JSON document on stdout, secrets redacted, with this command's warnings.

    Indented for a person at a terminal; compact for a program reading a pipe (the C encoder
    only serves compact output, and a report of a large folder runs to megabytes).
    """
    from orchestrator.redaction import redact, shown

    if _warnings:
        document = {**document, "journal_warnings": list(_warnings)}

    indent = 2 if sys.stdout.isatty() else None
    text = json.dumps(document, indent=indent, default=str)
    masking = shown()
    # A secret known by value (as JSON spells it) is masked field by field, as in state.json;
    # a report of megabytes without one is not walked value by value.
    if any(json.dumps(secret)[1:-1] in text for secret in masking.literals):
        text = json.dumps(masking.value(document), indent=indent, default=str)
    sys.stdout.write(redact(text) + "\n")  # redact(): for what default=str renders too
    _documents.append(None)


def print_error(message: str, code: ExitCode, failure: BaseException) -> None:
    """A failed command's JSON document, unless it printed one: shaped as validate's when it
    cannot tell (status ERROR, the ``message`` its one finding), with the exit ``code``."""
    from orchestrator.validation import error_report

    if not _documents:
        kind = "database_error" if isinstance(failure, DatabaseError) else code.name.lower()
        print_json({**error_report(message, kind).to_json(), "exit_code": int(code)})


def print_lines(lines: list[str]) -> None:
    """Plain lines on stdout (no rich markup: they may contain brackets), secrets masked."""
    from orchestrator.redaction import shown

    masking = shown()
    for line in lines:
        _console("out").print(masking.text(line), markup=False, highlight=False)


def interactive() -> bool:
    """True when a person is at a terminal to answer questions."""
    return sys.stdin.isatty() and sys.stdout.isatty()


class LiveLine:
    """One line on the terminal that progress rewrites in place; events print below it."""

    active = False

    @classmethod
    def show(cls, line: str) -> None:
        """Replace the live line."""
        sys.stderr.write("\r\x1b[2K" + line)
        sys.stderr.flush()
        cls.active = True

    @classmethod
    def close(cls) -> None:
        """End the live line so the next output starts on a fresh line."""
        if cls.active:
            sys.stderr.write("\n")
            cls.active = False
