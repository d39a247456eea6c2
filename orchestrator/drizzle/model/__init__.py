"""The database objects each Drizzle migration leaves behind, derived from its SQL with pglast.

``orchestrator validate`` needs, for every migration, a set of objects whose presence in the
database proves the migration ran. Nothing here is a hand-written list: the folder's SQL is
parsed with pglast and replayed, in journal order, against a small in-memory model of the
PostgreSQL catalog (schemas, tables, columns, constraints, indexes, views, enums). The model
follows PostgreSQL's own rules closely enough that later drops and renames are accounted for:

* a CREATE adds objects owned by the creating migration;
* a DROP removes the object and what depends on it (the table's columns, constraints and
  indexes; an enum's values; a schema's contents; cross-object dependents only with CASCADE,
  as PostgreSQL does);
* a RENAME / SET SCHEMA moves the objects whose identity changed to the renaming migration,
  because only their presence under the new name proves the rename ran. Objects whose
  identity does not change (an index of a renamed table keeps its name and schema) keep their
  creator.

The result is pure data: ``expected[tag]`` is what is still alive at the end of the folder and
was last created or renamed by ``tag``. Bad SQL never raises; it is reported in ``unparsed``.

One engine serves every command: ``validate``, ``migrate``'s pre-checks, ``repair`` and
``inspect`` read the :class:`ObjectModel` that :func:`build_object_model` returns; ``plan``
and ``lint`` (``orchestrator.analysis.effects``) drive the same :class:`HistoryReplay` one
statement at a time and read its views before applying each statement.

Modules: ``names`` (DbObject, identifier truncation), ``entities`` (the catalog's rows and
their facts), ``catalog`` (lookups, drop and rename rules, a migration's effect),
``sqltree`` (parse-tree helpers), ``creating`` and ``replay`` (the statement handlers),
``history`` (HistoryReplay, ObjectModel, build_object_model).
"""

from orchestrator.drizzle.model.history import (
    ColumnView,
    HistoryReplay,
    IndexView,
    Located,
    ObjectModel,
    TableView,
    build_object_model,
    catalog_type_name,
    journal_model,
    parse_located,
)
from orchestrator.drizzle.model.names import (
    NAMEDATALEN,
    DbObject,
    Effect,
    ObjectKind,
    object_names,
    truncate_identifier,
)

__all__ = [
    "NAMEDATALEN",
    "ColumnView",
    "DbObject",
    "Effect",
    "HistoryReplay",
    "IndexView",
    "Located",
    "ObjectKind",
    "ObjectModel",
    "TableView",
    "build_object_model",
    "catalog_type_name",
    "journal_model",
    "object_names",
    "parse_located",
    "truncate_identifier",
]
