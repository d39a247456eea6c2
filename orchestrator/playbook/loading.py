"""Loading a playbook file: read, parse the YAML, note each key's line, validate.

Every problem becomes a single-line :class:`~orchestrator.errors.UsageError` of the form
``<file>:<line>: <dotted.key>: <problem>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from orchestrator.errors import UsageError
from orchestrator.playbook.messages import Location, describe_validation, dotted
from orchestrator.playbook.model import Playbook


def load_playbook(path: Path) -> Playbook:
    """Read, parse and validate the playbook at ``path``."""
    return parse_playbook(read_playbook_text(path), path)


def parse_playbook(text: str, path: Path) -> Playbook:
    """Parse and validate playbook ``text`` as if read from ``path`` (its relative paths are
    resolved against ``path``'s folder): a run's pinned playbook, or the file's."""
    shown = str(path)
    data, lines = _compose(text, shown)
    if "path" in data:
        # `path` is where the playbook was read from; the file cannot claim another.
        raise UsageError(f"{shown}:{lines[('path',)]}: path: unknown key (set by the loader)")
    try:
        return Playbook.model_validate({**data, "path": path})
    except ValidationError as exc:
        raise UsageError(describe_validation(exc, shown, lines)) from None


def read_playbook_text(path: Path) -> str:
    """The playbook file's text as the loader reads it (UsageError when unreadable): what a
    run pins at its start."""
    shown = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{shown}: no such playbook file") from None
    except IsADirectoryError:
        raise UsageError(f"{shown}: is a directory, not a playbook file") from None
    except OSError as exc:
        raise UsageError(f"{shown}: cannot read the playbook: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UsageError(f"{shown}:{line}: not UTF-8 text (byte {exc.start})") from None


def _compose(text: str, shown: str) -> tuple[dict[str, Any], dict[Location, int]]:
    """The document's mapping (tags such as ``!!timestamp`` resolved), and the 1-based line of
    every key and list item in it (``()``: the top level)."""
    loader = yaml.SafeLoader(text)
    try:
        if (root := loader.get_single_node()) is None:
            raise UsageError(f"{shown}:1: empty playbook; expected a mapping of keys")
        if not isinstance(root, yaml.MappingNode):
            raise UsageError(
                f"{shown}:{root.start_mark.line + 1}: top level must be a mapping of keys, "
                f"got {_node_kind(root)}"
            )
        lines: dict[Location, int] = {(): root.start_mark.line + 1}
        _index_lines(root, (), lines, shown)
        # Built from the same nodes, after the duplicate keys they would hide are refused.
        return loader.construct_document(root), lines
    except yaml.MarkedYAMLError as exc:
        raise UsageError(_yaml_error(exc, shown)) from None
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: a date or number Python refuses
        # Python's advice after a ";" (sys.set_int_max_str_digits()) is not the user's.
        raise UsageError(f"{shown}: invalid YAML: {_one_line(str(exc).split(';')[0])}") from None
    except RecursionError:  # the value holds itself (an alias in its anchor) or nests too deep
        problem = "nested too deeply (an alias inside its own anchor?)"
        raise UsageError(f"{shown}: invalid YAML: {problem}") from None


def _index_lines(node: yaml.Node, here: Location, lines: dict[Location, int], shown: str) -> None:
    """Record each key's line under its dotted location; refuse duplicated keys."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                line = key_node.start_mark.line + 1
                raise UsageError(
                    f"{shown}:{line}: {dotted(here) or '(top level)'}: keys must be plain names"
                )
            location = (*here, str(key_node.value))
            if location in lines:
                raise UsageError(
                    f"{shown}:{key_node.start_mark.line + 1}: {dotted(location)}: "
                    f"duplicate key (first set on line {lines[location]})"
                )
            lines[location] = key_node.start_mark.line + 1
            _index_lines(value_node, location, lines, shown)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            location = (*here, index)
            lines[location] = item.start_mark.line + 1
            _index_lines(item, location, lines, shown)


def _yaml_error(exc: yaml.MarkedYAMLError, shown: str) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"{shown}:{mark.line + 1}" if mark is not None else shown
    problem = exc.problem or exc.context or "unparseable"
    if "'\\t'" in problem:  # PyYAML spells a tab as '\t': say what to do about it
        problem = problem.replace("character '\\t'", "a tab") + "; indent with spaces"
    context = f" ({_one_line(exc.context)})" if exc.context and exc.problem else ""
    return f"{where}: invalid YAML: {_one_line(problem)}{context}"


def _node_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.ScalarNode):
        return "a single value"
    return "something else"


def _one_line(text: str) -> str:
    return " ".join(text.split())
