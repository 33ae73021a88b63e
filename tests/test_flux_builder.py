"""The one Flux builder (``pipeline_sdk.flux``): escaping, identifiers, Grafana variables as
constructs of their own, and the steps, each output pinned; libflux (tests/js) reads the
results, and a value with a quote and ``${`` that broke the dashboards' old builder is safe."""

from __future__ import annotations

import re
from typing import Any

import pytest

from dashboards.flux import select as dashboard_select
from pipeline_sdk import contract as c
from pipeline_sdk import flux
from pipeline_sdk.flux import Choice, Flux, FluxError, Var

from .test_flux_frontend import WINDOW, format_value, grafana_expand, invalid

AGG = Choice("agg", ("last", "min", "max", "mean"))
HOSTILE = 'p") or r._value > 0 or (r.x == "${v.timeRangeStart}\\ /'  # a quote, ${, a backslash, a slash
IDENTIFIER_ERROR = "must be a Flux identifier (letters, digits, _)"


# ---- values ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("plain", '"plain"'),
        ("", '""'),
        ('a"b', '"a\\"b"'),
        ("back\\slash", '"back\\\\slash"'),
        ("trailing\\", '"trailing\\\\"'),
        ("${x}", '"\\${x}"'),
        ("\\${x}", '"\\\\\\${x}"'),  # a backslash, then ${: both escaped, in that order
        ("$5 and {x}", '"$5 and {x}"'),  # $ alone and { alone start nothing in Flux
        ("$${", '"\\x24\\${"'),  # libflux reads "$" and the next character as one: never "$\\"
        ("$\\", '"\\x24\\\\"'),
        ('$"', '"\\x24\\""'),
        ("$\n", '"\\x24\\n"'),
        ("a$", '"a$"'),
        ("line\nbreak\r\ttab", '"line\\nbreak\\r\\ttab"'),
        ("é 日本", '"é 日本"'),
    ],
)
def test_a_string_literal_is_escaped_as_the_flux_spec_says(value: str, literal: str) -> None:
    assert flux.string(value) == literal
    assert flux_text(literal[1:-1]) == value  # read back as libflux reads it: the same value


def flux_text(body: str) -> str:
    """The value of a string literal's body, as libflux's parser unescapes it (strconv.rs parse_text)."""
    escapes = {"n": b"\n", "r": b"\r", "t": b"\t", "\\": b"\\", '"': b'"', "$": b"$"}
    out, i = bytearray(), 0
    while i < len(body):
        if body[i] != "\\":
            out += body[i].encode()
            i += 1
        elif body[i + 1] == "x":
            out.append(int(body[i + 2 : i + 4], 16))
            i += 4
        else:
            out += escapes[body[i + 1]]
            i += 2
    return out.decode()


def test_every_escaped_value_is_one_string_to_libflux() -> None:
    values = ['a"b', "trailing\\", "${x}", "\\${x}", "$${", "$\\", '$"', HOSTILE, "line\nbreak"]
    queries = {
        v: f'from(bucket: "mlobs") |> range(start: -1h) |> filter(fn: (r) => r.run_id == {flux.string(v)})'
        for v in values
    }
    assert invalid(queries) == {}
    # and the check can fail: values quoted without escaping end the string or interpolate
    raw = {
        v: queries[v].replace(flux.string(v), f'"{v}"') for v in ('a"b', "trailing\\", "${x}", '$"', HOSTILE)
    }
    assert sorted(invalid(raw)) == sorted(raw)


def test_a_string_literal_is_made_of_a_str() -> None:
    with pytest.raises(FluxError, match=r"^value=5 is invalid: a Flux string literal is made of a str$"):
        flux.string(5)  # type: ignore[arg-type]
    assert flux.strings(["a", 'b"']) == '["a", "b\\""]'
    assert flux.strings([]) == "[]"


@pytest.mark.parametrize("name", ["a", "_a", "run_id", "_measurement", "A9_b"])
def test_an_identifier_is_letters_digits_and_underscores(name: str) -> None:
    assert flux.identifier(name) == name


@pytest.mark.parametrize("name", ["", "9a", "a-b", "a b", "a.b", "é", "a\n", 'a"', None, 3])
def test_what_is_not_an_identifier_is_refused_naming_it(name: Any) -> None:
    with pytest.raises(FluxError) as info:
        flux.identifier(name, "column")
    assert str(info.value) == f"column={name!r} is invalid: {IDENTIFIER_ERROR}"


@pytest.mark.parametrize(
    ("ns", "literal"),
    [
        (1, "1ns"),
        (999, "999ns"),
        (1000, "1us"),
        (1_500_000_000, "1s500ms"),
        (60 * 10**9, "1m"),
        (5400 * 10**9, "1h30m"),
        (6 * 3600 * 10**9, "6h"),
        (-6 * 3600 * 10**9, "-6h"),
        (8 * 86400 * 10**9, "1w1d"),
        (14 * 86400 * 10**9 + 1, "2w1ns"),
    ],
)
def test_a_flux_duration_literal_is_exact_in_whole_units(ns: int, literal: str) -> None:
    assert flux.duration(ns) == literal


def test_time_ranges() -> None:
    assert flux.range_ns(None, None) == "range(start: time(v: 0))"
    assert flux.range_ns(5, 9) == "range(start: time(v: 5), stop: time(v: 9))"
    assert flux.range_ns(-(2**63), None) == f"range(start: time(v: {-(2**63)}))"
    assert flux.range_ago(6 * 3600 * 10**9) == "range(start: -6h)"
    assert flux.DASHBOARD_RANGE == "range(start: v.timeRangeStart, stop: v.timeRangeStop)"
    for bad in (0, -1, 1.0, True):
        with pytest.raises(FluxError, match=r"ns=.* is invalid"):
            flux.range_ago(bad)  # type: ignore[arg-type]
    with pytest.raises(FluxError, match=r"^stop_ns='9' is invalid: must be Unix nanoseconds"):
        flux.range_ns(5, "9")  # type: ignore[arg-type]
    with pytest.raises(FluxError, match=r"^ns=0 is invalid"):
        flux.duration(0)


# ---- Grafana variables -------------------------------------------------------------------------------


def test_a_data_variable_is_only_ever_a_regex_match() -> None:
    assert Var("pipeline").matches("pipeline") == "r.pipeline =~ /^${pipeline:regex}$/"
    assert flux.equal_to("step", Var("step")) == "r.step =~ /^${step:regex}$/"
    assert flux.one_of("run_id", Var("run_id")) == "r.run_id =~ /^${run_id:regex}$/"
    with pytest.raises(FluxError, match=rf"^Var.name='run-id' is invalid: {re.escape(IDENTIFIER_ERROR)}"):
        Var("run-id")
    with pytest.raises(FluxError, match=r"^column='a b' is invalid"):
        Var("x").matches("a b")


def test_a_choice_has_fixed_identifier_options() -> None:
    assert AGG.value == "${agg}"
    assert Choice("level", ("INFO", "ERROR")).among("level") == "contains(value: r.level, set: ${level:json})"
    for options, message in [
        (("last", "a b"), "Choice agg option='a b' is invalid"),
        (("last", 'x")'), "Choice agg option='x\")' is invalid"),
        (("last", "${x}"), "Choice agg option='${x}' is invalid"),
        ((), r"Choice agg: options=\(\) must be a non-empty tuple"),
        (["last"], r"Choice agg: options=\['last'\] must be a non-empty tuple"),
        (("last", "last"), r"Choice agg: options \['last', 'last'\] repeat one"),
    ]:
        with pytest.raises(FluxError, match="^" + message.replace("$", r"\$").replace('")', '"\\)')):
            Choice("agg", options)  # type: ignore[arg-type]


def test_text_escapes_its_fixed_parts_and_holds_choices() -> None:
    assert flux.text(" (", AGG, ")") == '" (${agg})"'
    assert flux.text('say "', AGG, '" \\') == '"say \\"${agg}\\" \\\\"'
    assert flux.text() == '""'
    for part in ("${agg}", "$agg", "[[agg]]", "costs $5"):
        with pytest.raises(FluxError, match=r"holds Grafana's variable syntax"):
            flux.text(part, AGG)


# ---- filters and queries -------------------------------------------------------------------------------


def test_a_variable_with_a_fixed_suffix_matches_the_value_and_then_the_literal() -> None:
    var = Var("feature", suffix=".baseline_quantiles")
    assert var.matches("name") == r"r.name =~ /^${feature:regex}\.baseline_quantiles$/"
    assert Var("f", suffix="_x9").matches("name") == r"r.name =~ /^${f:regex}_x9$/"
    for bad in ("/x", "$x", ".a*", "a b", "[[x]]", "a\\b"):
        with pytest.raises(FluxError, match=re.escape(f"Var feature: suffix={bad!r} is invalid")):
            Var("feature", suffix=bad)


def test_filters_of_values_variables_and_absent_tags() -> None:
    assert flux.equal_to("run_id", 'a"b') == 'r.run_id == "a\\"b"'
    assert flux.equal_to("attempt", "1", absent="1") == 'not exists r.attempt or r.attempt == "1"'
    assert flux.equal_to("attempt", "2", absent="1") == 'r.attempt == "2"'
    assert flux.one_of("level", ("INFO", "${x}")) == 'contains(value: r.level, set: ["INFO", "\\${x}"])'
    assert flux.one_of("attempt", ("1", "2"), absent="1") == (
        'not exists r.attempt or contains(value: r.attempt, set: ["1", "2"])'
    )
    bad: Any
    for bad in ("INFO", (), []):
        with pytest.raises(FluxError, match=r"^among level=.* is invalid: must be one or more values"):
            flux.one_of("level", bad)
    with pytest.raises(FluxError, match=r"^tag='run id' is invalid"):
        flux.equal_to("run id", "x")


def test_a_query_is_pinned_step_by_step() -> None:
    query = (
        Flux.select(
            c.LOG,
            fields=[c.FIELD_MESSAGE, c.FIELD_LOGGER],
            time_range=flux.range_ns(5, None),
            bucket='my "bucket"',
            equal={c.TAG_RUN_ID: HOSTILE, c.TAG_ATTEMPT: "1"},
            among={c.TAG_LEVEL: ("ERROR", "CRITICAL")},
            absent={c.TAG_ATTEMPT: "1"},
        )
        .pivot_fields()
        .with_column("_ns", "int(v: r._time)")
        .where({c.TAG_STEP: "fit"})
        .group()
        .sort("_ns", desc=True)
        .limit(3)
    )
    assert query.lines == (
        'from(bucket: "my \\"bucket\\"")',
        "range(start: time(v: 5))",
        'filter(fn: (r) => r._measurement == "log")',
        'filter(fn: (r) => r.run_id == "p\\") or r._value > 0 or (r.x == \\"\\${v.timeRangeStart}\\\\ /")',
        'filter(fn: (r) => not exists r.attempt or r.attempt == "1")',
        'filter(fn: (r) => contains(value: r.level, set: ["ERROR", "CRITICAL"]))',
        'filter(fn: (r) => r._field == "message" or r._field == "logger")',
        'pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
        "map(fn: (r) => ({r with _ns: int(v: r._time)}))",
        'filter(fn: (r) => r.step == "fit")',
        "group()",
        'sort(columns: ["_ns"], desc: true)',
        "limit(n: 3)",
    )
    assert query.text == "\n  |> ".join(query.lines)
    assert invalid({"pinned": query.text}) == {}
    reduced = (
        Flux.select(c.METRIC, fields=[c.FIELD_VALUE], time_range=flux.DASHBOARD_RANGE)
        .group(c.TAG_RUN_ID, c.TAG_NAME)
        .sort("_time", desc=None)
        .call(AGG)
        .append_text(c.TAG_NAME, " (", AGG, ")")
        .keep(c.TAG_NAME, "_value")
        .rename({"_value": "value"})
    )
    assert reduced.lines[4:] == (
        'group(columns: ["run_id", "name"])',
        'sort(columns: ["_time"])',
        "${agg}()",
        'map(fn: (r) => ({r with name: r.name + " (${agg})"}))',
        'keep(columns: ["name", "_value"])',
        'rename(columns: {"_value": "value"})',
    )
    assert reduced.columns == {"name", "_value", "value"}


def test_a_query_refuses_what_its_stream_lacks_and_variables_as_text() -> None:
    def select(**kwargs: Any) -> Flux:
        return Flux.select(
            c.METRIC, **{"fields": [c.FIELD_VALUE], "time_range": flux.DASHBOARD_RANGE, **kwargs}
        )

    with pytest.raises(FluxError, match=r"^fields \['loss'\] not in measurement 'metric'$"):
        select(fields=["loss"])
    with pytest.raises(FluxError, match=r"^fields \[\] not in measurement 'metric'$"):
        select(fields=[])
    with pytest.raises(FluxError, match=r"^tags \['level'\] not in measurement 'metric'$"):
        select(equal={c.TAG_LEVEL: "INFO"})
    with pytest.raises(FluxError, match=r"^time_range='-6h' is invalid: must be a range\(\) step$"):
        select(time_range="-6h")
    query = select()
    with pytest.raises(FluxError, match=r"^group\(columns: \[\"nmae\"\]\): \['nmae'\] not in measurement"):
        query.group("nmae")
    for step in ("${agg}()", "$agg()", "[[agg]]()", 'filter(fn: (r) => r.name == "${name}")'):
        with pytest.raises(FluxError, match=r"names a Grafana variable: use Var or Choice"):
            query.then(step)
    with pytest.raises(FluxError, match=r"names a Grafana variable: use append_text\(\)"):
        query.with_column(c.TAG_NAME, 'r.name + "${agg}"')
    with pytest.raises(FluxError, match=r"^function='last\(\)' is invalid"):
        query.call("last()")
    for n in (0, -1, 1.5, True):
        with pytest.raises(FluxError, match=r"^limit n=.* is invalid: must be a whole number, 1 or more$"):
            query.limit(n)  # type: ignore[arg-type]
    with pytest.raises(FluxError, match=r"^where\(\) needs at least one tag"):
        query.where({})


# ---- the injection the dashboards' old builder let through ----------------------------------------------

# What dashboards/flux.py wrote for a run's pipeline before this builder: Grafana's value, raw, in a string.
OLD = (
    'from(bucket: "mlobs")\n  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n'
    '  |> filter(fn: (r) => r._measurement == "run")\n  |> filter(fn: (r) => r.pipeline == "${pipeline}")\n'
    '  |> filter(fn: (r) => r._field == "host")'
)
PIPELINE = {"name": "pipeline", "type": "query", "multi": False, "includeAll": False}


def expand(query: str, value: str) -> str:
    return grafana_expand(query, [PIPELINE], {"pipeline": value}, WINDOW)


def test_a_value_with_a_quote_and_interpolation_broke_the_old_query_and_is_one_regex_now() -> None:
    new = dashboard_select(c.RUN, fields=[c.FIELD_HOST], equal={c.TAG_PIPELINE: Var("pipeline")}).text
    assert new == OLD.replace('r.pipeline == "${pipeline}"', "r.pipeline =~ /^${pipeline:regex}$/").replace(
        'bucket: "mlobs"', "bucket: v.defaultBucket"
    )
    problems = invalid({"old": expand(OLD, HOSTILE), "new": expand(new, HOSTILE)})
    assert list(problems) == ["old"], problems  # the old one is broken; another value could make it valid
    assert invalid({"old, a plain value": expand(OLD, "train")}) == {}
    # What InfluxDB matches: the regex Grafana writes, read as Flux reads a regex literal (\/ is /).
    [literal] = re.findall(r"r\.pipeline =~ /\^(.*)\$/\)", expand(new, HOSTILE))
    assert literal == format_value(HOSTILE, "regex")
    pattern = re.compile(literal.replace("\\/", "/"))
    assert pattern.fullmatch(HOSTILE) and not pattern.fullmatch("p") and not pattern.fullmatch(HOSTILE + "x")


def test_a_dashboard_value_grafana_would_replace_is_refused() -> None:
    for value in ("${pipeline}", "$pipeline", "[[pipeline]]", "costs $5"):
        with pytest.raises(FluxError, match=r"is invalid in a dashboard: Grafana would replace"):
            dashboard_select(c.RUN, fields=[c.FIELD_HOST], equal={c.TAG_PIPELINE: value})
        with pytest.raises(FluxError, match=r"is invalid in a dashboard"):
            dashboard_select(c.RUN, fields=[c.FIELD_HOST], among={c.TAG_STEP: ("a", value)})
        with pytest.raises(FluxError, match=r"is invalid in a dashboard"):
            dashboard_select(c.RUN, fields=[c.FIELD_HOST]).where({c.TAG_STATUS: value})
    # the read API sends its Flux to InfluxDB directly: there such a value is data, escaped
    assert (
        Flux.select(
            c.RUN,
            fields=[c.FIELD_HOST],
            time_range=flux.DASHBOARD_RANGE,
            equal={c.TAG_PIPELINE: "${pipeline}"},
        ).lines[3]
        == 'filter(fn: (r) => r.pipeline == "\\${pipeline}")'
    )


@pytest.mark.parametrize("value", ['a$"b', "a$\\b", "$${x}", "plain", "é\n\t"])
def test_the_influxdb_stand_in_reads_back_what_the_builder_quotes(value: str) -> None:
    from pipeline_sdk.testing.influx_fake import unquote

    assert unquote(flux.string(value)[1:-1]) == value
