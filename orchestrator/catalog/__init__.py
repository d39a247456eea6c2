"""The catalog as plain values: what a database holds, and how two catalogs differ.

Pure: nothing here reads a database. :mod:`orchestrator.db.catalog_reader` fills a
:class:`CatalogSnapshot` from PostgreSQL (production or the shadow database, one reader for
both); :mod:`orchestrator.shadow` replays a migrations folder and keeps a :class:`History`
of what each migration changed; :mod:`orchestrator.validation` compares the two.
"""

from orchestrator.catalog.difference import Change, Difference, delta, differences, fold
from orchestrator.catalog.history import History, ReplayFailure
from orchestrator.catalog.snapshot import (
    CatalogSnapshot,
    Objects,
    Properties,
    TrackingRow,
    properties,
)

__all__ = [
    "CatalogSnapshot",
    "Change",
    "Difference",
    "History",
    "Objects",
    "Properties",
    "ReplayFailure",
    "TrackingRow",
    "delta",
    "differences",
    "fold",
    "properties",
]
