"""Flux, written safely: one builder for every Flux query mlobs sends."""

from __future__ import annotations

from .durations import SECOND_NS

FLUX_DURATION_UNITS = (  # a Flux duration literal's units that mlobs writes, largest first (ns in each)
    ("w", 7 * 86400 * SECOND_NS),
    ("d", 86400 * SECOND_NS),
    ("h", 3600 * SECOND_NS),
    ("m", 60 * SECOND_NS),
    ("s", SECOND_NS),
    ("ms", 1_000_000),
    ("us", 1000),
    ("ns", 1),
)


class FluxError(ValueError):
    """A query that cannot be written: a name its stream lacks, a bad identifier or value."""


def duration(ns: int) -> str:
    """A Flux duration literal of ``ns`` nanoseconds, exactly: 6h, 1h30m, 1s500ms, -6h (whole units only)."""
    if type(ns) is not int or ns == 0:
        raise FluxError(f"ns={ns!r} is invalid: must be a whole number of nanoseconds, not 0")
    parts, rest = [], abs(ns)
    for unit, size in FLUX_DURATION_UNITS:
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return ("-" if ns < 0 else "") + "".join(parts)
