"""The deploy playbook: pydantic models of its YAML, duration parsing, and a precise loader.

A playbook says which database to migrate, where the Drizzle migrations live, how to back up,
which branches to merge and how to watch production afterwards. :func:`load_playbook` turns a
YAML file into a :class:`Playbook` or raises one :class:`~orchestrator.errors.UsageError` line
of the form ``<file>:<line>: <dotted.key>: <problem>``, so a typo is found without reading a
traceback. Relative paths in the file are resolved against the playbook's own folder.

The package, one concern a module: ``durations`` (parsing ``5min`` and friends), ``model``
(the pydantic specs), ``loading`` (reading the YAML, with each key's line) and ``messages``
(validation errors phrased as one line) and ``changes`` (what changed between two texts of a
playbook: a run pins the one it started with).
"""

from __future__ import annotations

from orchestrator.playbook.changes import playbook_changes, text_sha256
from orchestrator.playbook.durations import parse_duration
from orchestrator.playbook.loading import load_playbook, parse_playbook, read_playbook_text
from orchestrator.playbook.model import GitHubSpec, HttpCheck, Playbook, ReleaseSpec, RetrySpec

__all__ = [
    "GitHubSpec",
    "HttpCheck",
    "Playbook",
    "ReleaseSpec",
    "RetrySpec",
    "load_playbook",
    "parse_duration",
    "parse_playbook",
    "playbook_changes",
    "read_playbook_text",
    "text_sha256",
]
