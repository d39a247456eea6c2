"""The values a drizzle config file sets, read without running node. Pure.

``drizzle.config.ts`` / ``.js`` are programs; we read only what is written as a literal in the
object handed to ``defineConfig({...})`` (or ``export default {...}``, ``module.exports = {...}``,
or a ``const`` that one of those names): strings, numbers, booleans and nested objects. Anything
else (``process.env.X ?? "y"``, a function call) is an :class:`Expression`, which ``init`` asks
about or leaves as a commented line. ``drizzle.config.json`` is plain JSON.

A key that is not written at all is ``None``: it has drizzle-kit's default (``out:
drizzle``, ``migrations.table: __drizzle_migrations``, ``migrations.schema: drizzle`` for
PostgreSQL), unless the object holds a spread (``...base``), which may set any key: then the
key is the spread, an :class:`Expression`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

DRIZZLE_DEFAULTS = {
    "out": "drizzle",
    "migrations.table": "__drizzle_migrations",
    "migrations.schema": "drizzle",
}


@dataclass(frozen=True)
class Expression:
    """A value that is not a literal; ``source`` is its text as written."""

    source: str


@dataclass(frozen=True)
class EnvRef:
    """``process.env.NAME`` (with or without a trailing ``!``): read from the environment."""

    name: str


Value = str | Expression
Literal = Any  # str, int, float, bool, None, dict[str, Literal], Expression, EnvRef


@dataclass(frozen=True)
class DrizzleConfig:
    """What the config says about migrations: each value a string, an :class:`Expression`
    we could not read, or None (not written: drizzle-kit's default). ``url_env``: the
    environment variable ``dbCredentials.url`` reads, when it is ``process.env.NAME``."""

    out: Value | None = None
    table: Value | None = None
    schema: Value | None = None
    url_env: str | None = None
    dialect: str | None = None


class ConfigUnreadable(ValueError):
    """The file holds no object literal we can find."""


# ----------------------------------------------------------------------------- tokens

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>//[^\n]*|/\*.*?\*/)
  | (?P<string>"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')
  | (?P<template>`(?:\\.|[^`\\])*`)
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<name>[A-Za-z_$][A-Za-z0-9_$]*)
  | (?P<punct>\.\.\.|\?\?|\?\.|=>|[{}()\[\],:;.=!?<>|&+*/%-])
    """,
    re.VERBOSE | re.DOTALL,
)


_UNESCAPE = re.compile(r"\\(.)")  # \" -> ", \\ -> \ (paths and names need no more)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str


def _tokens(source: str) -> list[_Token]:
    found: list[_Token] = []
    position = 0
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None:
            found.append(_Token("other", source[position]))
            position += 1
            continue
        position = match.end()
        kind = match.lastgroup or "other"
        if kind not in ("space", "comment"):
            found.append(_Token(kind, match.group()))
    return found


def _string_value(token: _Token) -> str | None:
    """A quoted string's value; a template literal's when it has no ``${...}``."""
    if token.kind == "string":
        return _UNESCAPE.sub(r"\1", token.text[1:-1])
    if token.kind == "template" and "${" not in token.text:
        return token.text[1:-1]
    return None


# ----------------------------------------------------------------------------- parsing


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens

    def object_at(self, start: int) -> tuple[dict[str, Literal], int]:
        """The object literal whose ``{`` is at ``start``; returns it and the index after
        its ``}``."""
        result: dict[str, Literal] = {}
        i = start + 1
        while i < len(self.tokens):
            token = self.tokens[i]
            if token.text == "}":
                return result, i + 1
            if token.text == ",":
                i += 1
                continue
            if token.text == "...":  # a spread may set any key, those written before it too
                end = self._skip_value(i + 1)
                result = {"...": Expression("..." + self._text(i + 1, end))}
                i = end
                continue
            key = _string_value(token) if token.kind in ("string", "template") else token.text
            if (
                i + 1 < len(self.tokens)
                and self.tokens[i + 1].text == ":"
                and key is not None
                and token.kind in ("name", "string", "template", "number")
            ):
                value, i = self.value_at(i + 2)
                result[key] = value
            else:  # a shorthand property or a method: not a literal
                end = self._skip_value(i)
                if key is not None:
                    result[key] = Expression(self._text(i, end))
                i = end
        raise ConfigUnreadable("an object literal is not closed")

    def value_at(self, start: int) -> tuple[Literal, int]:
        """The value starting at ``start`` and the index after it (before its ``,``)."""
        end = self._skip_value(start)
        first = self.tokens[start] if start < len(self.tokens) else _Token("other", "")
        if first.text == "{":
            value, after = self.object_at(start)
            if after == end:
                return value, end
        elif end == start + 1:
            if (text := _string_value(first)) is not None:
                return text, end
            if first.kind == "number":
                return float(first.text) if "." in first.text else int(first.text), end
            if first.text in ("true", "false"):
                return first.text == "true", end
        if (env := self._env_ref(start, end)) is not None:
            return EnvRef(env), end
        return Expression(self._text(start, end)), end

    def _env_ref(self, start: int, end: int) -> str | None:
        texts = [t.text for t in self.tokens[start:end]]
        if texts[-2:-1] == ["as"]:  # TypeScript's `process.env.X as string`
            texts = texts[:-2]
        if texts and texts[-1] == "!":
            texts = texts[:-1]
        if len(texts) == 5 and texts[:4] == ["process", ".", "env", "."]:
            return texts[4]
        if len(texts) == 6 and texts[:4] == ["process", ".", "env", "["] and texts[5] == "]":
            return _string_value(self.tokens[start + 4])
        return None

    def _skip_value(self, start: int) -> int:
        """The index of the ``,`` or closing bracket that ends the value at ``start``."""
        depth = 0
        i = start
        while i < len(self.tokens):
            text = self.tokens[i].text
            if text in ("{", "(", "["):
                depth += 1
            elif text in ("}", ")", "]"):
                if depth == 0:
                    return i
                depth -= 1
            elif text == "," and depth == 0:
                return i
            i += 1
        return i

    def _text(self, start: int, end: int) -> str:
        return " ".join(t.text for t in self.tokens[start:end]).replace(" . ", ".")


def _config_object(tokens: list[_Token]) -> int:
    """The index of the ``{`` of the exported config object."""
    texts = [t.text for t in tokens]
    for i in range(len(texts)):
        exported = texts[i : i + 2] == ["export", "default"]
        module = texts[i : i + 4] == ["module", ".", "exports", "="]
        if not (exported or module):
            continue
        j = i + (2 if exported else 4)
        while j < len(texts) and texts[j] in ("(", "defineConfig"):  # defineConfig(config)
            j += 1
        if j < len(texts) and texts[j] == "{":
            return j
        if j < len(texts) and tokens[j].kind == "name":
            named = _const_object(texts, texts[j])
            if named is not None:
                return named
    raise ConfigUnreadable("no defineConfig({...}) or exported object literal found")


def _const_object(texts: list[str], name: str) -> int | None:
    """The ``{`` of ``const NAME[: Type] = {`` (also ``let``/``var``), or None."""
    for i in range(len(texts) - 1):
        if texts[i] in ("const", "let", "var") and texts[i + 1] == name:
            j = i + 2
            while j < len(texts) and texts[j] not in ("=", ";"):
                j += 1
            if texts[j : j + 2] == ["=", "{"]:
                return j + 1
            if texts[j : j + 4] == ["=", "defineConfig", "(", "{"]:
                return j + 3
    return None


def read_object(source: str, *, json_file: bool = False) -> dict[str, Literal]:
    """The config object a drizzle config file exports, as literals and expressions; a
    spread is kept under the key ``...`` (the keys written before it are dropped)."""
    if json_file:
        try:
            data = json.loads(source)
        except ValueError as exc:
            raise ConfigUnreadable(f"not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigUnreadable("the JSON is not an object")
        return data
    tokens = _tokens(source)
    return _Parser(tokens).object_at(_config_object(tokens))[0]


def parse_drizzle_config(source: str, *, json_file: bool = False) -> DrizzleConfig:
    """What a drizzle config sets for the migrations (None where it sets nothing);
    :class:`ConfigUnreadable` when the file holds no config object we can find."""
    config = read_object(source, json_file=json_file)
    migrations = config.get("migrations", config.get("...", {}))
    if not isinstance(migrations, dict):  # an expression or a spread: either key is its
        migrations = {"...": Expression(_describe(migrations))}
    credentials = config.get("dbCredentials")
    url = credentials.get("url") if isinstance(credentials, dict) else None
    dialect = config.get("dialect")
    return DrizzleConfig(
        out=_value(config, "out"),
        table=_value(migrations, "table"),
        schema=_value(migrations, "schema"),
        url_env=url.name if isinstance(url, EnvRef) else None,
        dialect=dialect if isinstance(dialect, str) else None,
    )


def _value(config: dict[str, Literal], key: str) -> Value | None:
    """``config[key]`` as written, else the spread that may set it, else None."""
    if key not in config and "..." not in config:
        return None  # not written: drizzle-kit's default
    value = config.get(key, config.get("..."))
    return value if isinstance(value, str) and value else Expression(_describe(value))


def _describe(value: Literal) -> str:
    if isinstance(value, Expression):
        return value.source
    if isinstance(value, EnvRef):
        return f"process.env.{value.name}"
    return json.dumps(value)
