"""Every Flux query we send passes libflux, the Flux front end InfluxDB itself runs.

libflux comes as npm ``@influxdata/flux-lsp-browser`` (tests/js, installed by ``make
pytest``); ``new Flux(query).is_valid()`` parses and type-checks a query against the
builtin functions' signatures (an unknown function or parameter, a missing argument,
a type error), and its language server says what is wrong, by name.  One Node process
checks every query (tests/js/flux-check.mjs).

The queries:

* every Flux target and Flux variable query of ``dashboards/json/*.json``, expanded as
  Grafana 13 expands them before InfluxDB sees them (see :func:`grafana_expand`), for
  every value of a single-valued custom variable and for one value, two values and All
  of a multi-valued one;
* the read API's: built through ``pipeline_sdk.read.influx`` for Selects, Reduces and
  Counts of every stream with every option, and captured while the read client answers
  every call of tests/test_read_influx.py from the InfluxDB stand-in;
* scripts/e2e.py's (tests/test_e2e.py checks them with this file's frontend).
* the InfluxDB tasks the chart ships (charts/mlobs-core/files/influxdb-tasks/*.flux), whole, with
  their ``option task`` header.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dashboards import generate
from pipeline_sdk import contract as c
from pipeline_sdk.local_store import DB_NAME, LocalStore
from pipeline_sdk.read import ReadClient
from pipeline_sdk.read.influx import InfluxBackend, count_flux, reduce_flux, select_flux
from pipeline_sdk.read.query import ABSENT_TAGS, AGGREGATIONS, Count, Reduce, Select
from pipeline_sdk.testing.influx_fake import InfluxFake, InfluxServer
from tests.conftest import ROOT

from .support.read_data import record_dataset
from .test_read_influx import CALLS

JS = ROOT / "tests" / "js"
FLUX_CHECK = JS / "flux-check.mjs"


def libflux(queries: Mapping[str, str]) -> dict[str, list[str]]:
    """libflux's errors for each query, by name ([] for a valid one): one Node process for all."""
    if not (JS / "node_modules" / "@influxdata" / "flux-lsp-browser").is_dir():
        pytest.fail("tests/js/node_modules is missing: `make pytest` installs it (npm ci in tests/js)")
    payload = json.dumps([{"name": name, "query": query} for name, query in queries.items()])
    run = subprocess.run(
        ["node", str(FLUX_CHECK)], input=payload, capture_output=True, text=True, check=False, timeout=120
    )
    assert run.returncode == 0, run.stderr
    answers = json.loads(run.stdout)
    assert [a["name"] for a in answers] == list(queries)
    return {
        a["name"]: a["errors"] or ([] if a["valid"] else ["is_valid() is false, with no message"])
        for a in answers
    }


def invalid(queries: Mapping[str, str]) -> dict[str, list[str]]:
    return {name: errors for name, errors in libflux(queries).items() if errors}


# ---- how Grafana expands a Flux query ---------------------------------------------------------------
#
# Grafana 13's InfluxDB datasource in Flux mode (public/app/plugins/datasource/influxdb/datasource.ts,
# applyTemplateVariables) runs the dashboard's template service over the query with no format
# function of its own, after setting $__interval and $__interval_ms to themselves:
#   * $var, ${var}, [[var]] and ${var:format} are the variable's current value in that format;
#     without one, the default format, glob: one value as it is, several as {a,b};
#   * All of a variable with a custom all value is that value, unformatted (but for :text and
#     :percentencode); All without one is every option's value;
#   * a name that is no variable is left as it is written.
# Its backend (pkg/tsdb/influxdb/flux/macros.go) then replaces, in the text, every word.word whose
# second word is timeRangeStart or timeRangeStop (RFC 3339 in UTC, nanoseconds, trailing zeros cut),
# windowPeriod (the interval as Go prints a duration: 1m30s), bucket or defaultBucket (the
# datasource's default bucket, quoted) or organization (quoted); then $__interval_ms (the interval
# in ms) and $__interval (rounded: 90s is 1m).

VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}")
ALL = "$__all"  # Grafana's value of a variable at All
# Values of a query variable: the data decides them, so every one is hostile to the query it lands in.
# The first (what a single-valued variable is checked with) would end a string literal ("), start
# Flux's interpolation (${), hold a backslash and end a regex literal (/); the others need regex escaping.
HOSTILE = '{name} "x" or ${{r._value}} \\ /'
SAMPLES = (HOSTILE, "{name}.a-1", "{name}_b")
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")


@dataclass(frozen=True)
class Window:
    """The time range and interval of a panel's request."""

    start: datetime
    stop: datetime
    interval_ms: int


WINDOW = Window(
    datetime(2026, 11, 21, 10, 0, tzinfo=UTC), datetime(2026, 11, 22, 10, 0, 0, 250000, tzinfo=UTC), 90_000
)


def rfc3339nano(moment: datetime) -> str:
    """Go's time.RFC3339Nano of a UTC time: the fraction of a second without its trailing zeros."""
    fraction = f"{moment.microsecond:06d}".rstrip("0")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


def go_duration(ms: int) -> str:
    """Go's time.Duration.String() of a whole number of milliseconds: 500ms, 15s, 1m30s, 2h0m0s."""
    if ms < 1000:
        return f"{ms}ms" if ms else "0s"
    seconds, fraction = divmod(ms, 1000)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{seconds}" + (f".{fraction:03d}".rstrip("0") if fraction else "") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    return f"{minutes}m{text}" if minutes else text


def grafana_interval(ms: int) -> str:
    """Grafana's gtime.FormatInterval: the interval rounded down to its largest unit."""
    for unit, size in (("y", 365 * 86_400_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)):
        if ms >= size:
            return f"{ms // size}{unit}"
    return f"{ms // 1000}s" if ms >= 1000 else f"{max(ms, 1)}ms"


def format_value(value: str | list[str], fmt: str | None) -> str:
    """A variable's value in one of Grafana's formats (those our dashboards may use)."""
    values = [value] if isinstance(value, str) else value
    if fmt in (None, "glob"):
        return "{" + ",".join(values) + "}" if len(values) > 1 else ",".join(values)
    if fmt == "json":
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if fmt == "regex":
        escaped = [_REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), v) for v in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    if fmt in ("raw", "csv", "text"):
        return ",".join(values)
    if fmt == "pipe":
        return "|".join(values)
    if fmt == "doublequote":
        return ",".join('"' + v.replace('"', '\\"') + '"' for v in values)
    raise NotImplementedError(f"format {fmt!r}: teach format_value how Grafana writes it")


def options(variable: Mapping[str, Any]) -> list[str]:
    """A variable's values: a custom variable's options, sample values for a query variable."""
    if variable["type"] == "custom":
        return [o["value"] for o in variable.get("options") or []] or variable["query"].split(",")
    return [s.format(name=variable["name"]) for s in SAMPLES]


def grafana_expand(
    query: str,
    variables: Sequence[Mapping[str, Any]],
    selection: Mapping[str, str | list[str]],
    window: Window,
) -> str:
    """The Flux Grafana sends to InfluxDB for ``query`` with the variables at ``selection``."""
    defined = {v["name"]: v for v in variables}
    start_ms, stop_ms = (int(t.timestamp() * 1000) for t in (window.start, window.stop))
    macros = {
        "__interval": "$__interval",
        "__interval_ms": "$__interval_ms",
        "__from": str(start_ms),
        "__to": str(stop_ms),
        "__range": f"{(stop_ms - start_ms) // 1000}s",
        "__range_s": str((stop_ms - start_ms) // 1000),
        "__range_ms": str(stop_ms - start_ms),
    }

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(6)
        if name in macros:
            return macros[name]
        variable = defined.get(name)
        if variable is None:
            return match.group(0)
        if match.group(5):
            raise NotImplementedError(f"${{{name}.{match.group(5)}}}: a field path of a variable")
        value = selection[name]
        if value == ALL:
            if variable.get("allValue") and fmt not in ("text", "percentencode"):
                return str(variable["allValue"])
            value = options(variable)
        return format_value(value, fmt)

    flux = VARIABLE.sub(replace, query)
    backend = {
        "timeRangeStart": rfc3339nano(window.start),
        "timeRangeStop": rfc3339nano(window.stop),
        "windowPeriod": go_duration(window.interval_ms),
        "bucket": f'"{c.INFLUXDB_BUCKET}"',  # the datasource's defaultBucket (chart: fluentd.influxdb)
        "defaultBucket": f'"{c.INFLUXDB_BUCKET}"',
        "organization": f'"{c.INFLUXDB_ORG}"',
    }
    for whole, _, word in re.findall(r"(?m)(([a-zA-Z]+)\.([a-zA-Z]+))", flux):
        if word in backend:
            flux = flux.replace(whole, backend[word])
    flux = flux.replace("$__interval_ms", str(window.interval_ms))
    return flux.replace("$__interval", grafana_interval(window.interval_ms))


def choices(variable: Mapping[str, Any]) -> list[tuple[str, str | list[str]]]:
    """(label, value) of the selections worth checking for one variable."""
    values = options(variable)
    if not variable.get("multi"):
        picked = values if variable["type"] == "custom" else values[:1]
        return [(v, v) for v in picked]
    many: list[tuple[str, str | list[str]]] = [("1 value", values[:1]), ("2 values", values[:2])]
    return [*many, ("All", ALL)] if variable.get("includeAll") else many


def dashboard_flux() -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    """(where, query, the dashboard's variables) of every Flux query of the committed dashboards."""
    for path in sorted(generate.OUT.glob("*.json")):
        board = json.loads(path.read_text())
        variables = board["templating"]["list"]
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                if target["datasource"]["type"] == "influxdb":
                    yield f"{path.name} {panel['title']!r} {target['refId']}", target["query"], variables
        for var in variables:
            if (var.get("datasource") or {}).get("type") == "influxdb":
                yield f"{path.name} variable ${var['name']}", var["query"], variables


def expansions(
    where: str, query: str, variables: list[dict[str, Any]], window: Window = WINDOW
) -> dict[str, str]:
    """Every selection of the variables ``query`` uses, expanded, by a name that says which."""
    defined = {v["name"]: v for v in variables}
    used = sorted({n for m in VARIABLE.finditer(query) for n in m.groups() if n in defined})
    out: dict[str, str] = {}
    for combo in itertools.product(*(choices(defined[n]) for n in used)):
        label = ", ".join(f"{n}={lbl}" for n, (lbl, _) in zip(used, combo, strict=True))
        selection = {n: value for n, (_, value) in zip(used, combo, strict=True)}
        out[f"{where} [{label}]"] = grafana_expand(query, variables, selection, window)
    return out


def test_grafana_expansion_is_grafanas() -> None:
    variables = [
        {"name": "svc", "type": "query", "multi": True, "includeAll": True, "allValue": ".*"},
        {"name": "level", "type": "custom", "multi": True, "includeAll": True, "query": "INFO,ERROR"},
        {"name": "agg", "type": "custom", "multi": False, "query": "last,mean"},
    ]
    query = (
        "range(start: v.timeRangeStart, stop: v.timeRangeStop) |> ${agg}() |> r.svc =~ /^${svc:regex}$/ "
        "$svc ${level:json} [[level]] $__interval $__interval_ms v.windowPeriod v.defaultBucket "
        "schema.tagValues r._measurement ${nope} $__range"
    )
    two: dict[str, str | list[str]] = {"svc": ["a.b/c", "d"], "level": ["INFO", "ERROR"], "agg": "mean"}
    assert grafana_expand(query, variables, two, WINDOW) == (
        "range(start: 2026-11-21T10:00:00Z, stop: 2026-11-22T10:00:00.25Z) |> mean() "
        r"|> r.svc =~ /^(a\.b\/c|d)$/ "
        '{a.b/c,d} ["INFO","ERROR"] {INFO,ERROR} 1m 90000 1m30s "mlobs" '
        "schema.tagValues r._measurement ${nope} 86400s"
    )
    one: dict[str, str | list[str]] = {"svc": ["a.b"], "level": ["INFO"], "agg": "last"}
    assert grafana_expand("/^${svc:regex}$/ ${level:json} $svc ${agg}", variables, one, WINDOW) == (
        r'/^a\.b$/ ["INFO"] a.b last'
    )
    every: dict[str, str | list[str]] = {"svc": ALL, "level": ALL, "agg": "last"}
    assert grafana_expand("/^${svc:regex}$/ ${level:json} $level", variables, every, WINDOW) == (
        '/^.*$/ ["INFO","ERROR"] {INFO,ERROR}'
    )
    assert [go_duration(ms) for ms in (0, 500, 15_000, 60_000, 90_500, 7_200_000)] == [
        "0s",
        "500ms",
        "15s",
        "1m0s",
        "1m30.5s",
        "2h0m0s",
    ]
    assert [grafana_interval(ms) for ms in (0, 999, 1000, 119_000, 7_200_000, 86_400_000)] == [
        "1ms",
        "999ms",
        "1s",
        "1m",
        "2h",
        "1d",
    ]
    with pytest.raises(NotImplementedError, match="format 'lucene'"):
        grafana_expand("${svc:lucene}", variables, two, WINDOW)


# ---- the dashboards ------------------------------------------------------------------------------------


def test_every_dashboard_flux_query_passes_libflux() -> None:
    sources = list(dashboard_flux())
    assert len(sources) >= 14  # 11 targets and 3 variable queries when this was written
    queries = {name: q for where, query, vs in sources for name, q in expansions(where, query, vs).items()}
    assert len(queries) >= 3 * len(sources) - 10  # most queries use a variable with several selections
    assert invalid(queries) == {}


def test_the_dashboard_check_fails_on_a_query_grafana_would_break(tmp_path: Path) -> None:
    [(where, query, variables)] = [s for s in dashboard_flux() if "'Runs compared' D" in s[0]]
    broken = [{**v, "options": [], "query": "last,avg"} if v["name"] == "agg" else v for v in variables]
    queries = expansions(where, query, broken)
    problems = invalid(queries)
    assert sorted(problems) == [n for n in sorted(queries) if "agg=avg" in n]
    line = query.splitlines().index("  |> ${agg}()") + 1
    assert {e for errors in problems.values() for e in errors} == {f"{line}:6 undefined identifier avg"}
    unexpanded = invalid({"as written": query})
    assert "undefined identifier v" in " ".join(unexpanded["as written"])


# ---- the read API ---------------------------------------------------------------------------------------

AWKWARD = 'a "quoted" \\ back\\slash\nnew line\ttab ${not_interpolated} é'  # flux_string must escape it


def read_questions() -> Iterator[tuple[str, Select | Reduce | Count]]:
    """Selects, Reduces and Counts of every stream, with every option of each."""
    for stream in c.STREAMS:
        name, fields, tags = stream.measurement, tuple(stream.fields), stream.tags
        numeric = [f for f, t in stream.fields.items() if t in (c.FieldType.FLOAT, c.FieldType.INTEGER)]
        yield f"{name} select", Select(stream, fields)
        yield (
            f"{name} select equal, range, desc, limit",
            Select(
                stream,
                fields[:1],
                equal=dict.fromkeys(tags, AWKWARD),
                start_ns=1,
                stop_ns=2**62,
                desc=True,
                limit=3,
            ),
        )
        yield (
            f"{name} select among, until",
            Select(stream, fields, among={t: ("x", AWKWARD) for t in tags}, stop_ns=5),
        )
        for absent, default in ABSENT_TAGS.items():
            if absent in tags:
                yield f"{name} select {absent} default", Select(stream, fields, equal={absent: default})
                yield f"{name} select {absent} among", Select(stream, fields, among={absent: (default, "2")})
        for field_name in numeric:
            yield f"{name} select by {field_name}", Select(stream, fields, order_by=field_name, limit=1)
            for agg in AGGREGATIONS:
                question = Reduce(
                    Select(stream, (field_name,), equal={tags[0]: "x"}), tags[:2], agg, field_name
                )
                yield f"{name} {agg} of {field_name}", question
        for field_name in fields:
            yield (
                f"{name} count {field_name}",
                Count(Select(stream, (field_name,), start_ns=-5), tags, field_name),
            )


def flux_of(question: Select | Reduce | Count) -> str:
    if isinstance(question, Select):
        return select_flux(question, c.INFLUXDB_BUCKET)
    if isinstance(question, Reduce):
        return reduce_flux(question, c.INFLUXDB_BUCKET)
    return count_flux(question, c.INFLUXDB_BUCKET)


def test_every_read_api_question_passes_libflux() -> None:
    queries = {name: flux_of(q) for name, q in read_questions()}
    assert {
        q.stream.measurement if isinstance(q, Select) else q.select.stream.measurement
        for _, q in read_questions()
    } == {s.measurement for s in c.STREAMS}
    assert sum(f"{agg}()" in q for q in queries.values() for agg in AGGREGATIONS) >= 5 * len(c.STREAMS)
    assert any("not exists r.attempt" in q for q in queries.values())
    assert any('\\"quoted\\"' in q and "\\${not_interpolated}" in q for q in queries.values())
    assert invalid(queries) == {}


def test_every_query_the_read_client_sends_passes_libflux(tmp_path: Path) -> None:
    data = record_dataset(tmp_path / "home")
    store = LocalStore(data.home / DB_NAME)
    try:
        points = list(store.points())
    finally:
        store.close()
    server = InfluxServer(InfluxFake(lambda: points), token="flux-frontend")
    try:
        client = ReadClient(InfluxBackend(server.url, "flux-frontend", c.INFLUXDB_ORG, c.INFLUXDB_BUCKET))
        for _, call in CALLS:
            call(client, data)
        client.close()
    finally:
        server.close()
    queries = {f"read client query {i}": q for i, q in enumerate(dict.fromkeys(server.fake.queries))}
    assert len(queries) >= 30
    assert invalid(queries) == {}


def test_the_read_api_check_fails_on_a_bad_query() -> None:
    good = select_flux(Select(c.LOG, (c.FIELD_MESSAGE,), equal={c.TAG_RUN_ID: "a"}), c.INFLUXDB_BUCKET)
    queries = {
        "good": good,
        "unknown parameter": good.replace(
            "range(start: time(v: 0))", "range(start: time(v: 0), stopp: now())"
        ),
        "unknown function": good.replace("group()", "groupp()"),
        "unescaped quote": good.replace('r.run_id == "a"', 'r.run_id == "a"b"'),
    }
    problems = invalid(queries)
    assert problems.keys() == {"unknown parameter", "unknown function", "unescaped quote"}
    at = queries["unknown parameter"].splitlines()[1].index("now()") + 1  # libflux points at the value
    assert problems["unknown parameter"] == [f"2:{at} found unexpected argument stopp (Expected `stop`)"]
    line = good.splitlines().index("  |> group()") + 1
    assert problems["unknown function"] == [f"{line}:6 undefined identifier groupp"]
    assert any("undefined identifier b" in e for e in problems["unescaped quote"]), problems[
        "unescaped quote"
    ]


# ---- the chart's InfluxDB tasks ------------------------------------------------------------------------


def test_every_influxdb_task_the_chart_ships_passes_libflux() -> None:
    tasks = {
        p.name: p.read_text()
        for p in sorted((ROOT / "charts/mlobs-core/files/influxdb-tasks").glob("*.flux"))
    }
    assert len(tasks) == 4
    assert all(text.count("option task = {") == 1 for text in tasks.values())
    assert invalid(tasks) == {}


# ---- the failing cases the brief names ------------------------------------------------------------------


def test_libflux_names_an_unknown_parameter_and_an_unknown_function() -> None:
    queries = {
        "valid": 'from(bucket: "mlobs") |> range(start: -1h, stop: now())',
        "stopp": 'from(bucket: "mlobs") |> range(start: -1h, stopp: now())',
        "unknown function": 'from(bucket: "mlobs") |> range(start: -1h) |> lastt()',
        "missing argument": 'from(bucket: "mlobs") |> range(stop: now())',
    }
    problems = libflux(queries)
    at = {
        "stopp": queries["stopp"].index("now()") + 1,
        "lastt": queries["unknown function"].index("lastt") + 1,
    }
    assert problems == {
        "valid": [],
        "stopp": [f"1:{at['stopp']} found unexpected argument stopp (Expected `stop`)"],  # at its value
        "unknown function": [f"1:{at['lastt']} undefined identifier lastt"],
        "missing argument": problems["missing argument"],
    }
    assert any("start" in e for e in problems["missing argument"]), problems["missing argument"]
