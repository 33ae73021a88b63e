"""What a read backend is asked: select points of one stream, or reduce or count them per group.

Both backends (the local store and InfluxDB) answer the same questions, so the
read client above them is written once and they return the same results for the
same events.  A question names only what the contract defines for its stream:
building one with another name raises at once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Literal, Protocol

from .. import contract as c
from ..durations import duration_ns

Agg = Literal["last", "first", "min", "max", "mean"]
AGGREGATIONS: tuple[Agg, ...] = ("last", "first", "min", "max", "mean")
# Tags that points written before them lack, and the value such a point reads as: a filter
# on a tag of these that takes its value also takes the points without the tag.
ABSENT_TAGS: Mapping[str, str] = MappingProxyType({c.TAG_ATTEMPT: c.FIRST_ATTEMPT})


class ReadError(Exception):
    """A read that cannot be answered: its message says why, in the caller's words."""


class RunNotFound(ReadError, LookupError):
    """No event of that run is in the backend."""


class BackendUnavailable(ReadError):
    """The backend cannot be reached or refused the request (the message names its URL or path)."""


@dataclass(frozen=True)
class Row:
    """One point, its fields pivoted into a row: the exact time, the tag set and the selected fields."""

    time_ns: int
    tags: Mapping[str, str]
    fields: Mapping[str, Any]


@dataclass(frozen=True)
class Select:
    """Points of ``stream`` that have any of ``fields``, filtered by tags and a time range.

    ``among`` keeps points whose tag is one of several values (run ids, log levels).
    Rows come in time order (``desc`` for newest first), or by a numeric field
    (``order_by``, e.g. a run record's ``start_ns``); ``limit`` (a whole number, 1
    or more; None for all) cuts the result.  The time range is ``start_ns <= t <
    stop_ns``: the start is in it, the stop is not.  A filter on a tag of
    :data:`ABSENT_TAGS` that takes the tag's default value (``attempt == "1"``) also
    keeps the points that lack the tag.
    """

    stream: c.Stream
    fields: tuple[str, ...]
    equal: Mapping[str, str] = field(default_factory=dict)
    among: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    start_ns: int | None = None
    stop_ns: int | None = None
    desc: bool = False
    order_by: str | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        where = f"measurement {self.stream.measurement!r}"
        if not self.fields:
            raise ValueError(f"{where}: select at least one field")
        unknown = [f for f in self.fields if f not in self.stream.fields]
        unknown += [t for t in (*self.equal, *self.among) if t not in self.stream.tags]
        if self.order_by is not None and self.order_by not in self.fields:
            unknown.append(self.order_by)
        if unknown:
            raise ValueError(
                f"{where} has no {unknown} (tags {list(self.stream.tags)}, fields {list(self.stream.fields)})"
            )
        if any(not values for values in self.among.values()):
            raise ValueError(f"{where}: an 'among' filter needs at least one value")
        check_limit(self.limit)


@dataclass(frozen=True)
class Reduce:
    """One value per group of ``by`` tags: ``agg`` of field ``value`` over ``select``'s points."""

    select: Select
    by: tuple[str, ...]
    agg: Agg
    value: str = c.FIELD_VALUE

    def __post_init__(self) -> None:
        stream = self.select.stream
        unknown = [t for t in self.by if t not in stream.tags]
        if unknown or self.value not in self.select.fields:
            raise ValueError(f"cannot reduce {stream.measurement!r} by {list(self.by)} over {self.value!r}")
        if self.agg not in AGGREGATIONS:
            raise ValueError(f"agg={self.agg!r} is invalid: must be one of {', '.join(AGGREGATIONS)}")


@dataclass(frozen=True)
class Count:
    """How many of ``select``'s points have field ``value``, per group of ``by`` tags."""

    select: Select
    by: tuple[str, ...]
    value: str

    def __post_init__(self) -> None:
        stream = self.select.stream
        unknown = [t for t in self.by if t not in stream.tags]
        if unknown or self.value not in self.select.fields:
            raise ValueError(f"cannot count {stream.measurement!r} by {list(self.by)} over {self.value!r}")


def check_limit(limit: object) -> int | None:
    """``limit`` as given: None (no limit) or a whole number, 1 or more (0 rows is never asked for)."""
    if limit is not None and (type(limit) is not int or limit < 1):
        raise ValueError(f"limit={limit!r} is invalid: must be a whole number, 1 or more")
    return limit


class Backend(Protocol):
    """A store of the contract's points that answers :class:`Select`, :class:`Reduce` and :class:`Count`."""

    def describe(self) -> str:
        """Where it reads, for messages: "the local store /path" or "InfluxDB at URL"."""
        ...

    def select(self, query: Select) -> Iterator[Row]:
        """The rows, streamed: the backend never holds all of them."""
        ...

    def reduce(self, query: Reduce) -> Iterator[tuple[dict[str, str], Any]]:
        """(group tags, reduced value) per group that has points."""
        ...

    def count(self, query: Count) -> Iterator[tuple[dict[str, str], int]]:
        """(group tags, number of points) per group that has points."""
        ...

    def close(self) -> None: ...


# ---- time arguments ---------------------------------------------------------------------------------

_INT64 = (-(2**63), 2**63 - 1)
# The fraction of a second in an ISO 8601 time: datetime keeps microseconds, InfluxDB prints nanoseconds.
_FRACTION = re.compile(r"(?<=:\d\d)[.,](\d+)")


def time_arg(arg: str, value: datetime | str | int | None, now_ns: int | None = None) -> int | None:
    """Unix nanoseconds of a time argument: a datetime, an ISO 8601 time, a duration ago, or ns.

    A duration such as ``30m``, ``2h``, ``1h30m``, ``1.5d`` or ``2w`` means that long
    before now, exactly (``8.2s`` is 8,200,000,000 ns; the grammar is
    :mod:`pipeline_sdk.durations`).  An ISO 8601 time without a zone (``2026-11-22T10:00:00``,
    ``2026-11-22``) is UTC, the zone the CLI prints times in, and its fraction of a second
    is read to the nanosecond (``10:00:00.123456789Z``, as InfluxDB prints times; digits
    past the ninth are dropped).  A datetime must carry its time zone: a naive one is
    ambiguous (local time? UTC?) and is refused.  The time must fit in int64 nanoseconds,
    as InfluxDB's times do (1677-09-21 to 2262-04-11).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"{arg} must be a datetime, a string or nanoseconds, got bool")
    if isinstance(value, int):
        ns = value
    elif isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"{arg}={value!r} is invalid: a datetime without a time zone is ambiguous; "
                "give it one, e.g. datetime(..., tzinfo=datetime.UTC)"
            )
        ns = _datetime_ns(value)
    elif isinstance(value, str):
        ns = _text_ns(arg, value, now_ns)
    else:
        raise TypeError(f"{arg} must be a datetime, a string or nanoseconds, got {type(value).__name__}")
    if not _INT64[0] <= ns <= _INT64[1]:
        raise ValueError(
            f"{arg}={value!r} is invalid: nanoseconds must be within the int64 range "
            f"({format_ns(_INT64[0])} to {format_ns(_INT64[1])})"
        )
    return ns


def _text_ns(arg: str, value: str, now_ns: int | None) -> int:
    text = value.strip()
    ago = duration_ns(text)
    if ago is not None:
        return (now_ns if now_ns is not None else time.time_ns()) - ago
    fraction, nanos = _FRACTION.search(text), 0
    if fraction is not None:
        nanos = int(fraction.group(1)[:9].ljust(9, "0"))
        text = text[: fraction.start()] + text[fraction.end() :]
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        pass
    else:
        return _datetime_ns(parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)) + nanos
    raise ValueError(
        f"{arg}={value!r} is invalid: must be an ISO 8601 time (2026-11-22T10:00:00Z), "
        "a duration before now (30m, 2h, 7d) or a datetime"
    )


def time_range(
    since: datetime | str | int | None, until: datetime | str | int | None
) -> tuple[int | None, int | None]:
    """(start, stop) in ns from ``since`` (included) and ``until`` (excluded); ValueError when empty."""
    now = time.time_ns()
    start, stop = time_arg("since", since, now), time_arg("until", until, now)
    if start is not None and stop is not None and start >= stop:
        raise ValueError(
            f"bad time range: since ({format_ns(start)}) is not before until ({format_ns(stop)})"
        )
    return start, stop


def _datetime_ns(value: datetime) -> int:
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta // timedelta(microseconds=1)) * 1000


def ns_datetime(ns: int) -> datetime:
    """A UTC datetime of Unix nanoseconds (to the microsecond, as datetime holds)."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)


def format_ns(ns: int) -> str:
    """ISO 8601 in UTC with the nanoseconds, e.g. 2026-11-22T10:15:03.123456789Z."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"
