"""Durations, one grammar for all of mlobs: the read API's and the CLI's ``since``/``until``,
the exporter's configuration (``max_duration``, ``idle_expiry``...) and a dashboard query's
``since``.

A duration is one or more parts, each a number and a unit, the units largest first and
each at most once::

    duration = part { part }
    part     = number unit
    number   = digit { digit } [ "." digit { digit } ]
    unit     = "w" | "d" | "h" | "m" | "s"     (a week of 7 days, a day of 24 hours, ...)

so ``30m``, ``6h``, ``1h30m``, ``1.5d``, ``2w``, ``1w2d12h`` and ``8.2s`` are durations,
and ``90`` (no unit), ``1m1h`` (smaller unit first), ``1h1h``, ``1 h``, ``-1h``, ``.5h``,
``1e3s``, ``1H`` and ``1y`` are not.  White space around it is ignored.  The value is
exact, in whole nanoseconds: ``8.2s`` is 8,200,000,000 ns, and a fraction of a
nanosecond is dropped (``0.0000000015s`` is 1 ns).  ``0s`` is a duration of 0: a caller
that needs more refuses it itself, naming its own bound.

:data:`PATTERN` is the same grammar as a regular expression that Python, RE2 (Helm's
JSON schema checks) and ECMAScript read alike, for a schema to say what is accepted.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Final

SECOND_NS: Final = 1_000_000_000
UNITS: Final = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}  # seconds in each unit, largest first
EXAMPLES: Final = "30m, 1h30m, 1.5d or 2w"
GRAMMAR: Final = "a number and a unit (w, d, h, m or s) per part, largest unit first, each at most once"

_NUMBER = "[0-9]+(?:[.][0-9]+)?"
# At least one part: an alternation over which unit comes first (no look-ahead, which RE2 lacks).
PATTERN: Final = "|".join(
    f"{_NUMBER}{unit}" + "".join(f"(?:{_NUMBER}{later})?" for later in list(UNITS)[i + 1 :])
    for i, unit in enumerate(UNITS)
)
_PATTERN = re.compile(PATTERN)
_PART = re.compile(f"({_NUMBER})([{''.join(UNITS)}])")


def duration_ns(text: str) -> int | None:
    """Nanoseconds of ``text`` when it is a duration (white space around it ignored), else None."""
    stripped = text.strip()
    if not _PATTERN.fullmatch(stripped):
        return None
    exact = sum(Fraction(number) * UNITS[unit] for number, unit in _PART.findall(stripped))
    return int(exact * SECOND_NS)  # a fraction of a nanosecond is dropped


def parse_ns(arg: str, value: object) -> int:
    """Nanoseconds of the duration ``value`` (a string); ValueError naming ``arg`` and ``value``."""
    ns = duration_ns(value) if isinstance(value, str) else None
    if ns is None:
        raise ValueError(f"{arg}={value!r} is invalid: must be a duration such as {EXAMPLES} ({GRAMMAR})")
    return ns
