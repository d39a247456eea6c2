"""What changed between two texts of a playbook, key by key (pure).

A run pins the playbook it started with (its text and sha256); ``resume`` compares the file
with it and, when they differ, names each key that changed, e.g.
``git.target: 'main' -> 'prod'``, instead of walking the rest of the run with other settings.
"""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

_ABSENT = object()


def text_sha256(text: str) -> str:
    """The sha256 of a playbook's text (UTF-8), in hex."""
    return hashlib.sha256(text.encode()).hexdigest()


def playbook_changes(pinned: str, now: str) -> list[str]:
    """One line per key whose value differs between the ``pinned`` and the ``now`` text, in
    the order of the keys (dotted; list items by index). Comments and layout are not
    changes; a text that is not a YAML mapping is compared as a whole."""
    before, after = _data(pinned), _data(now)
    if before is _ABSENT or after is _ABSENT:
        return [] if pinned == now else ["the file is no longer a valid YAML mapping"]
    lines: list[str] = []
    _compare(before, after, "", lines)
    return lines


def _data(text: str) -> Any:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return _ABSENT
    return data if isinstance(data, dict) else _ABSENT


def _compare(before: Any, after: Any, where: str, lines: list[str]) -> None:
    if isinstance(before, dict) and isinstance(after, dict):
        for key in [*before, *(k for k in after if k not in before)]:
            inner = f"{where}.{key}" if where else str(key)
            _compare(before.get(key, _ABSENT), after.get(key, _ABSENT), inner, lines)
        return
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for index, (old, new) in enumerate(zip(before, after, strict=True)):
            _compare(old, new, f"{where}[{index}]", lines)
        return
    if before != after or type(before) is not type(after):
        lines.append(f"{where}: {_shown(before)} -> {_shown(after)}")


def _shown(value: Any) -> str:
    if value is _ABSENT:
        return "(absent)"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
