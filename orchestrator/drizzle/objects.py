"""The history model of a migrations folder (kept importable here; it lives in
:mod:`orchestrator.drizzle.model`, the one replay engine every command uses)."""

from __future__ import annotations

from orchestrator.drizzle.model import (
    NAMEDATALEN,
    ColumnView,
    DbObject,
    Effect,
    HistoryReplay,
    IndexView,
    Located,
    ObjectKind,
    ObjectModel,
    TableView,
    build_object_model,
    catalog_type_name,
    journal_model,
    parse_located,
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
    "parse_located",
    "truncate_identifier",
]
