"""Pydantic's validation errors, phrased for someone editing YAML: one line, key and line.

The first problem in file order, with its dotted key, the line it is on and, for an unknown
key, the nearest allowed spelling.
"""

from __future__ import annotations

import difflib
import types
import typing
from datetime import date, datetime
from typing import Union

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from orchestrator.playbook.model import KeyProblem, Playbook
from orchestrator.redaction import redact

Location = tuple[str | int, ...]


def describe_validation(exc: ValidationError, shown: str, lines: dict[Location, int]) -> str:
    """One line for the first problem in file order, with a count of the others."""
    problems = []
    for order, error in enumerate(exc.errors()):
        loc: Location = tuple(error["loc"])
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, KeyProblem):  # a model-level check: at the key it is about
            loc += cause.key
        # A missing key isn't in the file: point at the mapping that should hold it.
        missing = error["type"] == "missing"
        line = _line_of(loc[:-1] if missing else loc, lines)
        # Report what is written before what is absent: a misspelt key shows up as both an
        # unknown key and a missing one, and the unknown key is the one to fix.
        text = f"{shown}:{line}: {dotted(loc)}: {_problem(error)}"
        problems.append((missing, line, order, text))
    problems.sort()
    message = problems[0][3]
    if len(problems) > 1:
        others = len(problems) - 1
        message += f" (and {others} more problem{'s' if others > 1 else ''})"
    return redact(message)


def _line_of(loc: Location, lines: dict[Location, int]) -> int:
    """The line of ``loc``, or of its nearest ancestor that is written in the file."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def dotted(loc: Location) -> str:
    return ".".join(str(part) for part in loc)


def _problem(error: ErrorDetails) -> str:
    """The human half of a pydantic error, phrased for someone editing YAML."""
    kind = error["type"]
    loc: Location = tuple(error["loc"])
    value = error.get("input")
    if kind == "missing":
        return f"missing required key '{loc[-1]}'"
    if kind == "extra_forbidden":
        return f"unknown key{_suggest(loc)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of keys, got {_yaml_type(value)}"
    if kind == "list_type":
        return f"expected a list, got {_yaml_type(value)}"
    if kind == "string_type":
        # YAML reads 2025-10-21 as a date and 1.10 as a number; quoting keeps the text.
        hint = " (quote it)" if isinstance(value, int | float | date) else ""
        return f"expected a string, got {_described(value)}{hint}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {_described(value)}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, got {_described(value)}"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"must be one of {expected}, got {_short(value)}"
    if kind == "value_error":
        return error["msg"].removeprefix("Value error, ")
    return f"{error['msg'][:1].lower()}{error['msg'][1:]} (got {_short(value)})"


def _suggest(loc: Location) -> str:
    """`` (did you mean 'x'?)`` or `` (allowed: a, b)`` for an unknown key at ``loc``."""
    if not (allowed := _allowed_keys(loc[:-1])):
        return ""
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (allowed: {', '.join(allowed)})"


def _allowed_keys(loc: Location) -> list[str]:
    """The YAML keys the model at ``loc`` accepts, found by walking the model annotations."""
    current: object = Playbook
    for part in loc:
        if isinstance(part, int):
            continue  # list index: the item type was taken when the list field was entered
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = next((f for n, f in current.model_fields.items() if (f.alias or n) == part), None)
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        keys = [f.alias or n for n, f in current.model_fields.items()]
        return [k for k in keys if not (current is Playbook and k == "path")]
    return []


def _model_in(annotation: object) -> object:
    """The model class inside ``list[M]``, ``M | None`` or ``M``."""
    origin = typing.get_origin(annotation)
    if origin in (list, Union, types.UnionType):
        for arg in typing.get_args(annotation):
            inner = _model_in(arg)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return annotation


def _yaml_type(value: object) -> str:
    names = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        date: "a date",
        datetime: "a timestamp",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), f"a {type(value).__name__}")


def _described(value: object) -> str:
    """``a string '5 apples'``; containers by kind only."""
    if isinstance(value, dict | list) or value is None:
        return _yaml_type(value)
    return f"{_yaml_type(value)} {_short(value)}"


def _short(value: object) -> str:
    text = value.isoformat() if isinstance(value, date) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
