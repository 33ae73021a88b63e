"""What a read backend is asked (``pipeline_sdk.read.query``), value by value, without a backend.

The questions (:class:`Select`, :class:`Reduce`) refuse what their stream does not
define; the time arguments turn into exact Unix nanoseconds.  tests/test_read.py and
tests/test_read_influx.py then ask both backends the same questions end to end.  (One
module's questions and time arguments, value by value: a little over 400 lines.)
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any, get_type_hints

import pytest

from pipeline_sdk import contract as c
from pipeline_sdk.read import query
from pipeline_sdk.read.query import (
    ABSENT_TAGS,
    AGGREGATIONS,
    Count,
    Reduce,
    Row,
    Select,
    check_limit,
    format_ns,
    ns_datetime,
    time_arg,
    time_range,
)

NOW = 1_795_000_000_123_456_789  # a "now" with nanoseconds, so nothing rounds by accident
SECOND = 1_000_000_000
T_10H = 1_795_341_600 * SECOND  # 2026-11-22T10:00:00Z

OUTSIDE_INT64 = (
    "nanoseconds must be within the int64 range "
    "(1677-09-21T00:12:43.145224192Z to 2262-04-11T23:47:16.854775807Z)"
)
LOG_COLUMNS = (
    "(tags ['run_id', 'pipeline', 'step', 'attempt', 'level'], fields ['message', 'logger', 'extra'])"
)


# ---- the annotations resolve (as typing.get_type_hints and runtime type checkers read them) -----------


def test_every_annotation_in_the_module_resolves() -> None:
    defined = [v for v in vars(query).values() if getattr(v, "__module__", None) == query.__name__]
    assert len(defined) >= 12
    for obj in defined:
        get_type_hints(obj)
        for member in vars(obj).values() if inspect.isclass(obj) else ():
            if inspect.isfunction(member):
                get_type_hints(member)
    time_value = datetime | str | int | None
    assert get_type_hints(time_arg) == {
        "arg": str,
        "value": time_value,
        "now_ns": int | None,
        "return": int | None,
    }
    assert get_type_hints(time_range) == {
        "since": time_value,
        "until": time_value,
        "return": tuple[int | None, int | None],
    }
    assert get_type_hints(check_limit) == {"limit": object, "return": int | None}
    hints = get_type_hints(Select)
    assert (hints["start_ns"], hints["stop_ns"], hints["order_by"], hints["limit"]) == (
        int | None,
        int | None,
        str | None,
        int | None,
    )
    assert hints["among"] == Mapping[str, tuple[str, ...]]
    assert get_type_hints(query.Backend.select) == {"query": Select, "return": Iterator[Row]}


# ---- questions --------------------------------------------------------------------------------------------


def test_a_select_keeps_what_it_was_given_and_defaults_to_everything_in_time_order() -> None:
    select = Select(c.LOG, (c.FIELD_MESSAGE,))
    assert (select.equal, select.among, select.start_ns, select.stop_ns) == ({}, {}, None, None)
    assert (select.desc, select.order_by, select.limit) == (False, None, None)
    full = Select(
        c.LIST_METRIC,
        (c.FIELD_VALUE, c.FIELD_INDEX),
        equal={c.TAG_NAME: "loss"},
        among={c.TAG_RUN_ID: ("a", "b")},
        start_ns=-5,
        stop_ns=7,
        desc=True,
        order_by=c.FIELD_INDEX,
        limit=1,
    )
    assert (full.start_ns, full.stop_ns, full.desc, full.order_by, full.limit) == (
        -5,
        7,
        True,
        c.FIELD_INDEX,
        1,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        full.limit = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fields": ()}, "measurement 'log': select at least one field"),
        ({"fields": ("value",)}, f"measurement 'log' has no ['value'] {LOG_COLUMNS}"),
        ({"equal": {"name": "x"}}, f"measurement 'log' has no ['name'] {LOG_COLUMNS}"),
        ({"among": {"host": ("x",)}}, f"measurement 'log' has no ['host'] {LOG_COLUMNS}"),
        ({"order_by": "time"}, f"measurement 'log' has no ['time'] {LOG_COLUMNS}"),
        ({"order_by": c.FIELD_LOGGER}, f"measurement 'log' has no ['logger'] {LOG_COLUMNS}"),
        (
            {"fields": ("value", c.FIELD_MESSAGE), "equal": {"name": "x"}, "order_by": "index"},
            f"measurement 'log' has no ['value', 'name', 'index'] {LOG_COLUMNS}",
        ),
        ({"among": {c.TAG_LEVEL: ()}}, "measurement 'log': an 'among' filter needs at least one value"),
        (
            {"among": {c.TAG_LEVEL: ("INFO",), c.TAG_RUN_ID: ()}},
            "measurement 'log': an 'among' filter needs at least one value",
        ),
        ({"limit": 0}, "limit=0 is invalid: must be a whole number, 1 or more"),
    ],
)
def test_a_select_refuses_what_its_stream_does_not_define(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"fields": (c.FIELD_MESSAGE,), **kwargs}
    with pytest.raises(ValueError) as info:
        Select(c.LOG, **args)
    assert str(info.value) == message


def test_a_select_orders_by_a_selected_field() -> None:
    select = Select(c.LOG, (c.FIELD_MESSAGE, c.FIELD_LOGGER), order_by=c.FIELD_LOGGER)
    assert select.order_by == c.FIELD_LOGGER
    assert Select(c.LOG, (c.FIELD_MESSAGE,), among={c.TAG_LEVEL: ("INFO",)}).among == {c.TAG_LEVEL: ("INFO",)}


def test_a_reduce_names_what_it_cannot_reduce() -> None:
    select = Select(c.LIST_METRIC, (c.FIELD_VALUE, c.FIELD_INDEX))
    for agg in AGGREGATIONS:
        assert Reduce(select, (c.TAG_RUN_ID, c.TAG_NAME), agg).value == c.FIELD_VALUE
    reduce = Reduce(select, (), "max", c.FIELD_INDEX)
    assert (reduce.select, reduce.by, reduce.agg, reduce.value) == (select, (), "max", c.FIELD_INDEX)
    with pytest.raises(dataclasses.FrozenInstanceError):
        reduce.agg = "min"  # type: ignore[misc]
    refusals = [
        ((select, ("level",), "last"), "cannot reduce 'list_metric' by ['level'] over 'value'"),
        (
            (select, (c.TAG_NAME,), "last", c.FIELD_MESSAGE),
            "cannot reduce 'list_metric' by ['name'] over 'message'",
        ),
        (
            (Select(c.LIST_METRIC, (c.FIELD_INDEX,)), (c.TAG_NAME,), "last"),
            "cannot reduce 'list_metric' by ['name'] over 'value'",
        ),
        (
            (select, (c.TAG_NAME,), "median"),
            "agg='median' is invalid: must be one of last, first, min, max, mean",
        ),
    ]
    for args, message in refusals:
        with pytest.raises(ValueError) as info:
            Reduce(*args)  # type: ignore[arg-type]
        assert str(info.value) == message
    assert AGGREGATIONS == ("last", "first", "min", "max", "mean")


def test_a_count_names_what_it_cannot_count() -> None:
    select = Select(c.LIST_METRIC, (c.FIELD_VALUE, c.FIELD_INDEX))
    count = Count(select, (c.TAG_RUN_ID, c.TAG_ATTEMPT), c.FIELD_INDEX)
    assert (count.select, count.by, count.value) == (select, (c.TAG_RUN_ID, c.TAG_ATTEMPT), c.FIELD_INDEX)
    with pytest.raises(dataclasses.FrozenInstanceError):
        count.value = c.FIELD_VALUE  # type: ignore[misc]
    for by, value, message in (
        (("level",), c.FIELD_VALUE, "cannot count 'list_metric' by ['level'] over 'value'"),
        ((c.TAG_NAME,), c.FIELD_MESSAGE, "cannot count 'list_metric' by ['name'] over 'message'"),
        ((), "extra", "cannot count 'list_metric' by [] over 'extra'"),
    ):
        with pytest.raises(ValueError) as info:
            Count(select, by, value)
        assert str(info.value) == message


def test_the_tags_older_points_lack_read_as_the_first_attempt() -> None:
    assert dict(ABSENT_TAGS) == {c.TAG_ATTEMPT: c.FIRST_ATTEMPT} == {"attempt": "1"}
    with pytest.raises(TypeError):
        ABSENT_TAGS["level"] = "INFO"  # type: ignore[index]


def test_a_limit_is_none_or_a_whole_number_from_one() -> None:
    for limit in (None, 1, 2, 10**12):
        assert check_limit(limit) == limit
    for bad in (0, -1, True, False, 1.0, "3", 2.5):
        with pytest.raises(ValueError) as info:
            check_limit(bad)
        assert str(info.value) == f"limit={bad!r} is invalid: must be a whole number, 1 or more"


def test_a_row_is_a_frozen_point() -> None:
    row = Row(5, {c.TAG_RUN_ID: "r"}, {c.FIELD_VALUE: 1.0})
    assert (row.time_ns, row.tags, row.fields) == (5, {c.TAG_RUN_ID: "r"}, {c.FIELD_VALUE: 1.0})
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.time_ns = 6  # type: ignore[misc]


# ---- time arguments ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ago"),
    [
        ("1s", SECOND),
        ("1m", 60 * SECOND),
        ("1h", 3600 * SECOND),
        ("1d", 86400 * SECOND),
        ("1w", 604800 * SECOND),
        ("3s", 3 * SECOND),
        ("2w", 2 * 604800 * SECOND),
        ("1.5m", 90 * SECOND),
        ("0.001s", 1_000_000),
        ("0.000000001s", 1),
        ("0.0000000015s", 1),  # whole nanoseconds, rounded towards "now"
        ("10d", 864_000 * SECOND),
        ("\t7d\n", 7 * 86400 * SECOND),
    ],
)
def test_each_duration_unit_exactly(text: str, ago: int) -> None:
    got = time_arg("since", text, NOW)
    assert got == NOW - ago and type(got) is int


def test_a_duration_reaches_exactly_the_lowest_nanosecond() -> None:
    lowest = -(2**63)
    assert time_arg("since", "1s", lowest + SECOND) == lowest
    with pytest.raises(ValueError) as info:
        time_arg("since", "1s", lowest + SECOND - 1)
    assert str(info.value) == f"since='1s' is invalid: {OUTSIDE_INT64}"


def test_a_duration_counts_back_from_the_clock_when_no_now_is_given() -> None:
    before = time.time_ns()
    got = time_arg("since", "1h")
    after = time.time_ns()
    assert got is not None and before - 3600 * SECOND <= got <= after - 3600 * SECOND


@pytest.mark.parametrize(
    ("value", "ns"),
    [
        (datetime(2026, 11, 22, 10, tzinfo=UTC), T_10H),
        (datetime(2026, 11, 22, 15, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))), T_10H),
        (datetime(2026, 11, 22, 10, 0, 0, 1, tzinfo=UTC), T_10H + 1000),
        (datetime(1970, 1, 1, tzinfo=UTC), 0),
        (datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC), SECOND),
        (datetime(1970, 1, 2, tzinfo=UTC), 86400 * SECOND),
        (datetime(1971, 1, 1, tzinfo=UTC), 365 * 86400 * SECOND),
        (datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), -1000),
        ("2026-11-22T10:00:00Z", T_10H),
        (" 2026-11-22T10:00:00Z ", T_10H),
        ("2026-11-22T10:00:00.000001Z", T_10H + 1000),
        ("2026-11-22T05:00:00-05:00", T_10H),
        ("2026-11-22T10:00:00.123456789Z", T_10H + 123_456_789),  # as InfluxDB prints times
        ("2026-11-22T10:00:00,5", T_10H + 500_000_000),
        ("2026-11-22T10:00:00.0000000019Z", T_10H + 1),  # past the ninth digit: dropped
        ("2026-11-22T11:00:00.000000007+01:00", T_10H + 7),
        ("1969-12-31T23:59:59.999999999Z", -1),
        ("2262-04-11T23:47:16.854775807Z", 2**63 - 1),
        ("1677-09-21T00:12:43.145224192Z", -(2**63)),
        ("2026-11-22T10:00:00", T_10H),
        ("2026-11-22", T_10H - 10 * 3600 * SECOND),
        (0, 0),
        (-1, -1),
        (2**63 - 1, 2**63 - 1),
        (-(2**63), -(2**63)),
    ],
)
def test_times_in_exact_nanoseconds(value: Any, ns: int) -> None:
    got = time_arg("until", value, NOW)
    assert got == ns and type(got) is int


class NoOffset(tzinfo):
    """A time zone that does not know its offset (``utcoffset`` is None): as ambiguous as none."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None

    def __repr__(self) -> str:
        return "NoOffset()"


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (
            datetime(2026, 11, 22, 10),
            ValueError,
            "until=datetime.datetime(2026, 11, 22, 10, 0) is invalid: a datetime without a time zone is "
            "ambiguous; give it one, e.g. datetime(..., tzinfo=datetime.UTC)",
        ),
        (
            datetime(2026, 11, 22, 10, tzinfo=NoOffset()),
            ValueError,
            "until=datetime.datetime(2026, 11, 22, 10, 0, tzinfo=NoOffset()) is invalid: a datetime "
            "without a time zone is ambiguous; give it one, e.g. datetime(..., tzinfo=datetime.UTC)",
        ),
        (2**63, ValueError, f"until={2**63} is invalid: {OUTSIDE_INT64}"),
        (-(2**63) - 1, ValueError, f"until={-(2**63) - 1} is invalid: {OUTSIDE_INT64}"),
        (
            "2262-04-11T23:47:16.854775808Z",
            ValueError,
            f"until='2262-04-11T23:47:16.854775808Z' is invalid: {OUTSIDE_INT64}",
        ),
        (
            "1677-09-21T00:12:43.145224191Z",
            ValueError,
            f"until='1677-09-21T00:12:43.145224191Z' is invalid: {OUTSIDE_INT64}",
        ),
        ("2300-01-01", ValueError, f"until='2300-01-01' is invalid: {OUTSIDE_INT64}"),
        (
            datetime(2300, 1, 1, tzinfo=UTC),
            ValueError,
            "until=datetime.datetime(2300, 1, 1, 0, 0, tzinfo=datetime.timezone.utc) is invalid: "
            + OUTSIDE_INT64,
        ),
        ("300y", ValueError, "until='300y' is invalid: must be an ISO 8601 time"),
        ("20000w", ValueError, f"until='20000w' is invalid: {OUTSIDE_INT64}"),
        (True, TypeError, "until must be a datetime, a string or nanoseconds, got bool"),
        (False, TypeError, "until must be a datetime, a string or nanoseconds, got bool"),
        (1.0, TypeError, "until must be a datetime, a string or nanoseconds, got float"),
        ([1], TypeError, "until must be a datetime, a string or nanoseconds, got list"),
        (
            "tomorrow",
            ValueError,
            "until='tomorrow' is invalid: must be an ISO 8601 time (2026-11-22T10:00:00Z), "
            "a duration before now (30m, 2h, 7d) or a datetime",
        ),
        ("1y", ValueError, "until='1y' is invalid: must be an ISO 8601 time"),
        ("1 h", ValueError, "until='1 h' is invalid: must be an ISO 8601 time"),
        ("h", ValueError, "until='h' is invalid: must be an ISO 8601 time"),
        ("", ValueError, "until='' is invalid: must be an ISO 8601 time"),
    ],
)
def test_a_time_argument_is_refused_naming_itself(value: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        time_arg("until", value, NOW)
    assert type(info.value) is error and str(info.value).startswith(message)
    assert time_arg("until", None, NOW) is None


def test_a_time_range_is_half_open_and_reads_both_ends_against_one_now() -> None:
    assert time_range(None, None) == (None, None)
    assert time_range(10, None) == (10, None) and time_range(None, 10) == (None, 10)
    assert time_range(-(2**63), 2**63 - 1) == (-(2**63), 2**63 - 1)
    assert time_range(10, 11) == (10, 11)
    start, stop = time_range("2h", "1h")
    assert start is not None and stop is not None and stop - start == 3600 * SECOND, "one now for both"
    for since, until in ((10, 10), (11, 10)):
        with pytest.raises(ValueError) as info:
            time_range(since, until)
        assert str(info.value) == (
            f"bad time range: since (1970-01-01T00:00:00.0000000{since}Z) is not before "
            f"until (1970-01-01T00:00:00.0000000{until}Z)"
        )
    with pytest.raises(ValueError, match=r"^since='soon' is invalid"):
        time_range("soon", None)
    with pytest.raises(ValueError, match=r"^until='soon' is invalid"):
        time_range(None, "soon")


@pytest.mark.parametrize(
    ("ns", "text", "as_datetime"),
    [
        (0, "1970-01-01T00:00:00.000000000Z", datetime(1970, 1, 1, tzinfo=UTC)),
        (1, "1970-01-01T00:00:00.000000001Z", datetime(1970, 1, 1, tzinfo=UTC)),
        (999, "1970-01-01T00:00:00.000000999Z", datetime(1970, 1, 1, tzinfo=UTC)),
        (1_999, "1970-01-01T00:00:00.000001999Z", datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC)),
        (SECOND, "1970-01-01T00:00:01.000000000Z", datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)),
        (-1, "1969-12-31T23:59:59.999999999Z", datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)),
        (
            T_10H + 123_456_789,
            "2026-11-22T10:00:00.123456789Z",
            datetime(2026, 11, 22, 10, 0, 0, 123_456, tzinfo=UTC),
        ),
    ],
)
def test_nanoseconds_print_exactly_and_floor_to_a_datetime(ns: int, text: str, as_datetime: datetime) -> None:
    assert format_ns(ns) == text
    assert ns_datetime(ns) == as_datetime and ns_datetime(ns).tzinfo is UTC
    assert time_arg("since", text) == ns, "a printed time reads back exactly"
