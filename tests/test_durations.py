"""One duration grammar (``pipeline_sdk.durations``) for the read API, the CLI, the exporter's
configuration and the dashboards' queries: values pinned, boundaries, and each caller taking
the same text to the same length."""

from __future__ import annotations

import re
from typing import Any

import pytest

from dashboards.flux import select
from exporters.pipeline_exporter.config import ConfigError, ExporterConfig, Limits
from pipeline_sdk import contract as c
from pipeline_sdk.durations import PATTERN, UNITS, duration_ns, parse_ns
from pipeline_sdk.read.query import time_arg

S = 1_000_000_000
NOW = 1_795_000_000_123_456_789


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0s", 0),
        ("1s", S),
        ("59s", 59 * S),
        ("1m", 60 * S),
        ("1h", 3600 * S),
        ("1d", 86400 * S),
        ("1w", 604_800 * S),
        ("2w", 1_209_600 * S),
        ("1h30m", 5400 * S),
        ("1w2d3h4m5s", (604_800 + 2 * 86400 + 3 * 3600 + 4 * 60 + 5) * S),
        ("1d12h", 129_600 * S),
        ("90m", 5400 * S),  # a part may be larger than the next unit up
        ("1.5d", 129_600 * S),
        ("1.5h30m", 7200 * S),
        ("8.2s", 8_200_000_000),  # exact: no float rounding
        ("0.7d", 60_480 * S),
        ("0.000000001s", 1),
        ("0.0000000019s", 1),  # a fraction of a nanosecond is dropped
        ("0.0000000009s", 0),
        ("007m", 7 * 60 * S),
        (" \t6h\n", 6 * 3600 * S),
        ("20000w", 20000 * 604_800 * S),
    ],
)
def test_each_duration_exactly(text: str, ns: int) -> None:
    got = duration_ns(text)
    assert got == ns and type(got) is int
    assert parse_ns("since", text) == ns


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "90",  # no unit
        "h",
        "1m1h",  # smaller unit first
        "1h1h",  # a unit twice
        "1s1m",
        "1 h",
        "1h 30m",
        "-1h",
        "+1h",
        ".5h",
        "1.h",
        "1e3s",
        "1H",
        "1y",
        "1mo",
        "1ms",
        "1h30",
        "٣h",  # a digit, but not an ASCII one
        "1_000s",
    ],
)
def test_what_is_not_a_duration(text: str) -> None:
    assert duration_ns(text) is None
    with pytest.raises(ValueError) as info:
        parse_ns("success_window", text)
    assert str(info.value) == (
        f"success_window={text!r} is invalid: must be a duration such as 30m, 1h30m, 1.5d or 2w "
        "(a number and a unit (w, d, h, m or s) per part, largest unit first, each at most once)"
    )


@pytest.mark.parametrize("value", [None, 6, 6.0, True, b"6h", ["6h"]])
def test_only_text_is_parsed(value: Any) -> None:
    with pytest.raises(ValueError, match=rf"^until={re.escape(repr(value))} is invalid: must be a duration"):
        parse_ns("until", value)


def test_the_pattern_is_the_grammar_for_a_schema() -> None:
    assert list(UNITS) == ["w", "d", "h", "m", "s"]
    assert "(?=" not in PATTERN and "\\d" not in PATTERN  # RE2 has no look-ahead; \d is Unicode in Python
    schema = re.compile(f"^(?:{PATTERN})$")
    for text in ("2w", "1h30m", "1.5d", "1w2d3h4m5.5s", "0s"):
        assert schema.match(text), text
    for text in ("", "90", "1m1h", "1h1h", "1 h", "-1h", ".5h", "1y"):
        assert not schema.match(text), text


# ---- every caller reads the same grammar -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("2w", 1_209_600), ("1h30m", 5400), ("1.5d", 129_600), ("1w2d", 777_600)]
)
def test_the_read_api_and_the_exporter_take_the_same_text_to_the_same_length(text: str, seconds: int) -> None:
    assert time_arg("since", text, NOW) == NOW - seconds * S
    config = ExporterConfig.parse(
        {
            "defaults": {"max_duration": text, "success_window": text},
            "image_pull_grace": text,
            "idle_expiry": "3w",
        }
    )
    assert config.thresholds.defaults == Limits(max_duration=float(seconds), success_window=float(seconds))
    assert config.image_pull_grace == float(seconds)
    assert config.series.idle_expiry == 3 * 604_800.0


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("1s", 1.0),
        ("0.5s", 0.5),
        ("0.000000001s", 1e-9),  # the shortest duration above 0
        (1, 1.0),  # a YAML number is seconds
        (0.5, 0.5),
        ("0s", None),
        ("0.0000000009s", None),  # 0 once a fraction of a nanosecond is dropped
        (0, None),
        (-1, None),
        (float("inf"), None),
        (float("nan"), None),
        (True, None),
        ("2 w", None),
        ("1m1h", None),
    ],
)
def test_the_exporter_takes_a_duration_above_zero(value: Any, accepted: float | None) -> None:
    raw = {"image_pull_grace": value}
    if accepted is not None:
        assert ExporterConfig.parse(raw).image_pull_grace == accepted
        return
    with pytest.raises(ConfigError) as info:
        ExporterConfig.parse(raw)
    assert str(info.value) == f"config.image_pull_grace: expected a duration such as 30m or 6h, got {value!r}"


def test_a_dashboard_query_since_is_a_duration_of_the_grammar() -> None:
    def since(text: str) -> str:
        return select(c.RUN, fields=[c.FIELD_HOST], since=text).lines[1]

    assert since("-6h") == "range(start: -6h)"
    assert since("-2w") == "range(start: -2w)"
    assert since("-1h30m") == "range(start: -1h30m)"
    assert since("-90m") == "range(start: -1h30m)"  # Flux duration literals take whole numbers only
    assert since("-1.5s") == "range(start: -1s500ms)"
    assert since("-0.000000001s") == "range(start: -1ns)"
    for bad in ("6h", "-0s", "-1m1h", "--6h", "-6 h", "-1ms", ""):
        with pytest.raises(ValueError, match=rf"^since={re.escape(repr(bad))} is invalid: must be"):
            since(bad)
