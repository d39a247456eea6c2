"""Durations as a playbook writes them (``500ms``, ``5min``, ``1h30m``), parsed to seconds."""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

DURATION_HINT = "use e.g. 500ms, 30s, 5min, 1h"
# Longer is a typo: within PostgreSQL's longest timeout (2^31-1 ms) and any timer's reach.
MAX_DURATION_S = 24 * 86400.0

# Unit spellings and their length in seconds. The regex tries the longest spellings first, so
# "min" wins over "m" and "ms" over "m".
_UNITS: dict[str, float] = {
    spelling: seconds
    for spellings, seconds in (
        (("ms", "msec"), 0.001),
        (("s", "sec", "secs", "second", "seconds"), 1.0),
        (("m", "min", "mins", "minute", "minutes"), 60.0),
        (("h", "hr", "hrs", "hour", "hours"), 3600.0),
    )
    for spelling in spellings
}
_UNIT_ALTERNATION = "|".join(sorted(map(re.escape, _UNITS), key=len, reverse=True))
_COMPONENT = re.compile(rf"\s*(\d+(?:\.\d+)?|\.\d+)\s*({_UNIT_ALTERNATION})(?![a-z])", re.I)
_BARE_NUMBER = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*")


def parse_duration(value: str | int | float, *, unit_required: bool = False) -> float:
    """Seconds in a duration: ``500ms``, ``5s``, ``5sec``, ``15m``, ``5min``, ``1h``, ``1h30m``.

    A bare number (YAML int/float, or a string like ``"30"``) means seconds, but
    ``unit_required`` refuses one other than 0: a lock or statement timeout, which PostgreSQL
    reads bare as milliseconds. Components of a compound duration go from larger to smaller
    units (``1h30m``, not ``30m1h``). Negative, unparseable values or over 24 days raise
    :class:`ValueError` with a one-line explanation.
    """
    # bool is an int subclass; YAML turns `yes`/`on` into True, which is never a duration.
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r} ({DURATION_HINT})")
    if isinstance(value, str) and value.strip().startswith("-"):
        raise ValueError(f"invalid duration {value!r} (must not be negative)")
    compound = isinstance(value, str) and not _BARE_NUMBER.fullmatch(value)
    try:
        seconds = _parse_compound(str(value)) if compound else float(value)
    except OverflowError:  # an int too large for a float: too long a duration too
        seconds = math.inf
    if not 0 <= seconds <= MAX_DURATION_S:  # nan too
        raise ValueError(f"invalid duration {value!r} (0 to 24 days)")
    if unit_required and seconds and not compound:
        shown = str(value).strip()
        raise ValueError(f"{shown} needs a unit: {shown}ms (as PostgreSQL reads it) or {shown}s?")
    return seconds


def _parse_compound(text: str) -> float:
    """Sum of the ``<number><unit>`` components of ``text``, each unit smaller than the last."""
    total = 0.0
    position = 0
    last_unit = math.inf
    while position < len(text):
        if not text[position:].strip():
            break
        if not (match := _COMPONENT.match(text, position)):
            raise ValueError(f"invalid duration {text!r} ({DURATION_HINT})")
        unit = _UNITS[match.group(2).lower()]
        if unit >= last_unit:
            raise ValueError(f"invalid duration {text!r} (put larger units first, e.g. 1h30m)")
        last_unit = unit
        total += float(match.group(1)) * unit
        position = match.end()
    if math.isinf(last_unit):  # nothing matched: empty or blank string
        raise ValueError(f"invalid duration {text!r} ({DURATION_HINT})")
    return total


def _duration(value: object, *, unit_required: bool = False) -> object:
    """Pydantic pre-validator: durations arrive as YAML strings, ints or floats."""
    if isinstance(value, str | int | float):
        return parse_duration(value, unit_required=unit_required)
    return value  # let pydantic report the wrong type


def _positive_duration(value: object, *, unit_required: bool = False) -> object:
    seconds = _duration(value, unit_required=unit_required)
    if isinstance(seconds, float) and seconds <= 0:
        raise ValueError(f"duration must be greater than zero (got {value!r})")
    return seconds


# Seconds, written in the YAML as a duration; zero is allowed (e.g. no initial backoff).
Duration = Annotated[float, BeforeValidator(_duration)]
# Seconds, strictly positive: timeouts, windows and intervals.
PositiveDuration = Annotated[float, BeforeValidator(_positive_duration)]
# A PositiveDuration PostgreSQL also reads (a lock or statement timeout): written with its unit
# (parse_duration's unit_required), by dumps too.
ServerTimeout = Annotated[
    float,
    BeforeValidator(lambda value: _positive_duration(value, unit_required=True)),
    PlainSerializer(lambda seconds: f"{seconds!r}s"),
]
