"""The replayed history: :class:`HistoryReplay`, the one replay engine, stepping through a folder
statement by statement, and :class:`ObjectModel`, what it says about each migration."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

from orchestrator.drizzle.facts import (
    Fact,
)
from orchestrator.drizzle.journal import Journal
from orchestrator.drizzle.model.names import DEFAULT_SCHEMA, DbObject, Effect, object_names

# The replay's modules (and pglast's node classes under them) are imported when a history is
# replayed, not with this module: a model read from the cache needs none of them, and
# `validate`'s start-up is measured.
if TYPE_CHECKING:
    from orchestrator.drizzle.model.entities import _Table
    from orchestrator.drizzle.pgjson import Node


@dataclass(frozen=True)
class ObjectModel:
    """The replayed history of a folder.

    ``effects[tag]`` is what migration ``tag`` changed, relative to the state just before it
    (the state after every earlier migration of the journal): each object it created, dropped
    or altered, with its fact before and after. Folding the effects of the first k migrations
    gives the modelled schema after them. ``expected[tag]`` is what is still alive at the end
    of the folder and was last created or renamed by ``tag`` (the "creating migration" shown
    by ``inspect``). ``unparsed`` names migrations the model could not read in full.
    """

    expected: Mapping[str, frozenset[DbObject]]
    unparsed: Mapping[str, str]
    effects: Mapping[str, Effect] = field(default_factory=lambda: MappingProxyType({}))
    order: tuple[str, ...] = ()  # the tags, in the order they were replayed
    final: Mapping[DbObject, Fact] = field(default_factory=lambda: MappingProxyType({}))
    touched: frozenset[DbObject] = frozenset()  # every object some effect names

    @functools.cached_property
    def effect_objects(self) -> Mapping[str, tuple[DbObject, ...]]:
        """Each migration's changed objects, sorted: what a report lists for it when applied.

        Computed once per model; ``validate`` asks for it (and :attr:`effect_names`) while the
        server reads the catalog, for it depends on the model alone.
        """
        return MappingProxyType({tag: tuple(sorted(e)) for tag, e in self.effects.items()})

    @functools.cached_property
    def effect_names(self) -> Mapping[str, tuple[str, ...]]:
        """:attr:`effect_objects` as a report prints them (``str`` of each)."""
        return MappingProxyType(
            {tag: object_names(objects) for tag, objects in self.effect_objects.items()}
        )

    def state_after(self, tags: Sequence[str]) -> dict[DbObject, Fact]:
        """The modelled schema after the migrations ``tags`` (journal order), as facts."""
        state: dict[DbObject, Fact] = {}
        for tag in tags:
            for key, (_, after) in self.effects.get(tag, {}).items():
                if after is None:
                    state.pop(key, None)
                else:
                    state[key] = after
        return state

    def state_after_prefix(self, count: int) -> dict[DbObject, Fact]:
        """The modelled schema after the first ``count`` migrations replayed.

        The end state with the last migrations' effects undone: a release is usually a few
        migrations at the end of a long history, so this touches only those.
        """
        state = dict(self.final)
        for tag in reversed(self.order[count:]):
            for key, (before, _) in self.effects[tag].items():
                if before is None:
                    state.pop(key, None)
                else:
                    state[key] = before
        return state


# --------------------------------------------------------------------------------------------
# The one replay engine: stepping through a folder, statement by statement.
# --------------------------------------------------------------------------------------------

# Types that stand for a plain integer type with a sequence default in the catalog.
_SERIAL_TYPE_NAMES = {"serial": "int4", "serial4": "int4", "bigserial": "int8", "serial8": "int8"}
_SERIAL_TYPE_NAMES |= {"smallserial": "int2", "serial2": "int2"}
# Aliases pglast leaves as written; everything standard it already names as pg_catalog does.
_TYPE_ALIASES = {"int": "int4", "integer": "int4", "bigint": "int8", "smallint": "int2"}
_TYPE_ALIASES |= {"decimal": "numeric", "boolean": "bool", "float": "float8", "real": "float4"}


def catalog_type_name(names: Sequence[str], array: bool) -> str:
    """The catalog name (``pg_type.typname``) of a type spelled ``names``; arrays get a ``_``.

    ``serial`` reads as ``int4``, ``integer`` as ``int4``...; an empty name as ``?``.
    """
    base = names[-1].lower() if names else "?"
    base = _SERIAL_TYPE_NAMES.get(base, _TYPE_ALIASES.get(base, base))
    return f"_{base}" if array else base


def _integer_mods(typmods: Sequence[object]) -> tuple[int, ...] | None:
    """The modifiers when every one is a plain integer, else None."""
    if all(type(mod) is int for mod in typmods):
        return tuple(typmods)  # type: ignore[arg-type]
    return None


@dataclass(frozen=True)
class ColumnView:
    """A column of the replayed schema, as a statement about to run finds it.

    ``type_name`` is the catalog name of its type as written (``int4``, ``varchar``,
    ``_text``), ``type_mods`` its modifiers (``(40,)``; ``()`` when unconstrained; ``None``
    when not plain integers); both ``None`` when the folder does not say (a column copied
    from outside it, renamed from outside it, or of ``CREATE TABLE AS``). ``not_null`` and
    ``has_default`` are False when unknown; an identity column counts as having a default.
    """

    type_name: str | None
    type_mods: tuple[int, ...] | None
    not_null: bool
    has_default: bool


@dataclass(frozen=True)
class IndexView:
    """An index of the replayed schema: the relation it is on (if known) and uniqueness."""

    on: tuple[str, str] | None  # (schema, name) of its table or materialized view
    unique: bool


@dataclass(frozen=True)
class TableView:
    """A table of the replayed schema.

    ``known`` is False for a placeholder of a table created outside the folder (an ALTER of
    it was replayed); ``created_here`` is True when the current migration created it.
    """

    schema: str
    name: str
    known: bool
    created_here: bool
    columns: tuple[str, ...]


class HistoryReplay:
    """The folder's history, replayed one statement at a time; the only replay engine.

    Drive it with :meth:`begin` (a migration starts), :meth:`apply` (one parsed statement,
    from :func:`~orchestrator.drizzle.pgjson.parse_sql`), :meth:`end` (the migration's
    effect) and finally :meth:`result`. Between statements, the view methods (:meth:`table`,
    :meth:`column`, :meth:`index`, :meth:`relation_exists`, :meth:`table_is_new`) describe
    the schema as the next statement finds it: ``plan`` and ``lint`` read them before
    applying each statement. Names are the qualified, truncated ones PostgreSQL uses.
    """

    def __init__(self) -> None:
        from orchestrator.drizzle.model.catalog import _Catalog
        from orchestrator.drizzle.model.replay import _Replay
        from orchestrator.drizzle.model.sqltree import _Unanalysable

        self._catalog = _Catalog()
        self._replay = _Replay(self._catalog)
        self._unanalysable = _Unanalysable
        self._state: dict[DbObject, Fact] = {}
        self._effects: dict[str, Effect] = {}
        self._unparsed: dict[str, str] = {}
        self._tags: list[str] = []
        self._schemas_before: set[str] = set()

    # -- stepping --------------------------------------------------------------------------

    def begin(self, tag: str) -> None:
        """Migration ``tag`` starts (journal order)."""
        self._replay.tag = tag
        self._tags.append(tag)
        self._schemas_before = set(self._catalog.schemas) - {DEFAULT_SCHEMA}

    def apply(self, statement: Node, number: int) -> None:
        """Replay one statement of piece ``number`` (1-based); never raises.

        A statement the model cannot analyse marks the migration as unparsed (first reason
        wins) and is otherwise skipped.
        """
        try:
            self._replay.statement(statement)
        except self._unanalysable as exc:
            self._unparsed.setdefault(self._replay.tag, f"statement {number}: {exc}")
        except Exception as exc:  # an exotic statement must not crash `validate`
            from orchestrator.drizzle.model.sqltree import _one_line

            reason = f"could not analyse ({type(exc).__name__}: {_one_line(exc)})"
            self._unparsed.setdefault(self._replay.tag, f"statement {number}: {reason}")

    def unparseable(self, number: int, error: BaseException) -> None:
        """Piece ``number`` of the current migration could not be parsed."""
        from orchestrator.drizzle.model.sqltree import _one_line

        self._unparsed.setdefault(self._replay.tag, f"statement {number}: {_one_line(error)}")

    def end(self) -> Effect:
        """The current migration's effect: what it changed relative to the state before it."""
        from orchestrator.drizzle.model.catalog import _end_migration

        effect = MappingProxyType(_end_migration(self._catalog, self._state, self._schemas_before))
        self._effects[self._replay.tag] = effect
        return effect

    def result(self) -> ObjectModel:
        """The history of every migration replayed so far."""
        evidence = self._catalog.evidence()
        unparsed = self._unparsed
        expected = {
            tag: frozenset() if tag in unparsed else frozenset(evidence.get(tag, ()))
            for tag in self._tags
        }
        touched: set[DbObject] = set()
        for effect in self._effects.values():
            touched.update(effect)
        return ObjectModel(
            expected=MappingProxyType(expected),
            unparsed=MappingProxyType(dict(unparsed)),
            effects=MappingProxyType(dict(self._effects)),
            order=tuple(self._effects),
            final=MappingProxyType(self._state),
            touched=frozenset(touched),
        )

    # -- views of the schema as the next statement finds it -------------------------------

    def relation_exists(self, schema: str, name: str) -> bool:
        """Whether the folder knows a relation (table, view, index, key) called that.

        A placeholder for a table created outside the folder does not count: IF NOT EXISTS
        of it cannot be judged.
        """
        catalog = self._catalog
        if not catalog.relation_name_taken(schema, name):
            return False
        table = catalog.table(schema, name)
        return table is None or not table.phantom

    def table_is_new(self, schema: str, name: str) -> bool:
        """Whether the current migration created the table (so it is empty, known to no code)."""
        table = self._catalog.table(schema, name)
        return table is not None and self._created_here(table)

    def _created_here(self, table: _Table) -> bool:
        return not table.phantom and self._catalog.before.get(table, False) is None

    def table(self, schema: str, name: str) -> TableView | None:
        """The table, if the replayed history holds one (known, or a placeholder)."""
        table = self._catalog.table(schema, name)
        if table is None:
            return None
        columns = tuple(c.name for c in self._catalog.columns_of(table))
        return TableView(schema, name, not table.phantom, self._created_here(table), columns)

    def column(self, schema: str, table: str, name: str) -> ColumnView | None:
        """The column, if the replayed history holds it."""
        found = self._catalog.table(schema, table)
        column = None if found is None else self._catalog.column(found, name)
        if column is None or column.phantom:
            return None
        written = column.written
        type_name = mods = None
        if written is not None:
            type_name = catalog_type_name(written.names, column.array)
            mods = _integer_mods(written.typmods)
        has_default = column.default is not None or column.identity
        return ColumnView(type_name, mods, column.not_null is True, has_default)

    def index(self, schema: str, name: str) -> IndexView | None:
        """The index, if the replayed history holds it."""
        index = self._catalog.index(schema, name)
        if index is None or index.phantom:
            return None
        on = None if index.on is None else (index.on.schema, index.on.name)
        return IndexView(on, index.unique is True)


def journal_model(journal: Journal, *, environ: Mapping[str, str] | None = None) -> ObjectModel:
    """:func:`build_object_model` of every migration of ``journal``.

    A large folder's model comes from the on-disk cache when an earlier run stored it
    (:mod:`orchestrator.drizzle.model.cache`; ``environ`` says where, ``os.environ`` by
    default): it depends only on the migrations' SQL, which their hashes name.
    """
    import os

    from orchestrator.drizzle.model import cache  # imports this module

    return cache.cached_model(
        [(m.tag, m.hash, m.sql) for m in journal.migrations],
        lambda: build_object_model([(m.tag, m.statements) for m in journal.migrations]),
        directory=cache.cache_directory(os.environ if environ is None else environ),
    )


def build_object_model(migrations: Sequence[tuple[str, Sequence[str]]]) -> ObjectModel:
    """Replay the folder's SQL in journal order and say what proves each migration applied.

    ``migrations`` is ``(tag, statements)`` in journal order, ``statements`` being the file
    split on ``--> statement-breakpoint``. Every tag gets an entry in ``expected`` (maybe
    empty). A migration pglast cannot parse (or analyse) gets an empty set and a one-line
    reason in ``unparsed``; its parseable statements are still replayed so that later
    migrations' drops and renames are modelled as well as possible.
    """
    from orchestrator.drizzle.pgjson import parse_sql

    history = HistoryReplay()
    for tag, statements in migrations:
        history.begin(tag)
        for number, text in enumerate(statements, start=1):
            try:
                parsed = parse_sql(text)
            except Exception as exc:  # pglast.parser.ParseError, and anything else
                history.unparseable(number, exc)
                continue
            for statement in parsed:
                history.apply(statement, number)
        history.end()
    return history.result()


class Located(NamedTuple):
    """One statement of a parsed SQL text, with its place in the text."""

    statement: Node  # for :meth:`HistoryReplay.apply`
    reading: Node  # the same statement, for other readers (see parse_located)
    start: int  # in UTF-8 bytes, as libpg_query counts
    length: int  # in UTF-8 bytes; 0: to the end of the text


# Statements the replay reads from the raw JSON, whose fast paths a Node read would defeat.
_READ_RAW = frozenset({"CreateStmt", "IndexStmt", "AlterTableStmt"})


def parse_located(sql: str) -> list[Located]:
    """:func:`~orchestrator.drizzle.pgjson.parse_sql` with each statement's place in ``sql``.

    Reading a statement through its Nodes converts its JSON in place, which sends the
    replay's fast paths to the general ones: each statement the replay reads raw also comes
    as a second tree (``reading``) for whoever reads it before :meth:`HistoryReplay.apply`.
    The parse is libpg_query's cached one, decoded twice. Raises pglast's ``ParseError``
    like ``parse_sql``.
    """
    from orchestrator.drizzle.pgjson import parse_json, parse_sql, wrap

    statements = parse_sql(sql)
    document, _ = _JSON.raw_decode(parse_json(sql))
    located = []
    for statement, raw in zip(statements, document.get("stmts", ()), strict=True):
        reading = statement
        if statement.tag in _READ_RAW:
            reading = wrap(statement.tag, raw["stmt"][statement.tag])
        start, length = raw.get("stmt_location", 0), raw.get("stmt_len", 0)
        located.append(Located(statement, reading, int(start), int(length)))
    return located


_JSON = json.JSONDecoder()
