"""The dashboards' system panels: CPU and memory of runs over their own time, and right-sizing per run.

The checks every dashboard gets (the structure, the contract, libflux, Grafana's schema) are in
test_dashboards.py, test_flux_frontend.py and test_grafana_schema.py; these pin what the new
panels ask and show.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from dashboards import generate
from dashboards.builders import Layout, trend
from pipeline_sdk import contract as c


def board(stem: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((generate.OUT / f"{stem}.json").read_text())
    return data


def panel(stem: str, title: str) -> dict[str, Any]:
    [found] = [p for p in board(stem)["panels"] if p["title"] == title]
    return found


def steps(query: str) -> list[str]:
    return query.split("\n  |> ")


@pytest.mark.parametrize(
    ("title", "fields", "unit"),
    [
        ("CPU, runs overlaid", [c.FIELD_CPU_PERCENT, c.FIELD_CPU_LIMIT_CORES], "short"),
        ("Memory, runs overlaid", [c.FIELD_RSS_BYTES, c.FIELD_MEMORY_LIMIT_BYTES], "bytes"),
    ],
)
def test_the_run_view_overlays_runs_on_their_own_time(title: str, fields: list[str], unit: str) -> None:
    found = panel("run_view", title)
    assert (found["type"], found["options"]["xField"], found["fieldConfig"]["defaults"]["unit"]) == (
        "trend",
        c.FIELD_ELAPSED_SECONDS,
        unit,
    )
    [target] = found["targets"]
    query = steps(target["query"])
    wanted = " or ".join(f'r._field == "{f}"' for f in [c.FIELD_ELAPSED_SECONDS, *fields])
    assert query[2] == f'filter(fn: (r) => r._measurement == "{c.SYSTEM.measurement}")'
    assert f"filter(fn: (r) => {wanted})" in query
    at = query.index('group(columns: ["run"])')  # a series per attempt ("<run id> #<attempt>")
    assert (
        query[at + 1] == f'keep(columns: ["run", "{c.FIELD_ELAPSED_SECONDS}", "{fields[0]}", "{fields[1]}"])'
    )
    assert query[at + 2] == f'sort(columns: ["{c.FIELD_ELAPSED_SECONDS}"], desc: false)'


def test_cpu_is_in_cores_so_the_limit_shares_its_axis() -> None:
    query = steps(panel("run_view", "CPU, runs overlaid")["targets"][0]["query"])
    assert query[-2:] == [
        "map(fn: (r) => ({r with cpu_percent: r.cpu_percent / 100.0}))",
        'rename(columns: {"cpu_percent": "cpu_cores"})',
    ]


def test_the_limits_are_dashed_and_nothing_else_is() -> None:
    for title in ("CPU, runs overlaid", "Memory, runs overlaid"):
        [override] = panel("run_view", title)["fieldConfig"]["overrides"]
        assert override["matcher"]["id"] == "byRegexp"
        assert override["properties"] == [
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}
        ]
        dashed = re.compile(override["matcher"]["options"])
        # Grafana matches the display name: the field, and the run's label after it
        shown = {
            name: bool(dashed.fullmatch(f"{name} {{run=r7 #1}}"))
            for name in (
                "cpu_cores",
                c.FIELD_CPU_LIMIT_CORES,
                c.FIELD_RSS_BYTES,
                c.FIELD_MEMORY_LIMIT_BYTES,
            )
        }
        assert shown == {
            "cpu_cores": False,
            c.FIELD_CPU_LIMIT_CORES: True,
            c.FIELD_RSS_BYTES: False,
            c.FIELD_MEMORY_LIMIT_BYTES: True,
        }


def test_a_bad_dashed_pattern_fails_when_the_dashboard_is_built() -> None:
    with pytest.raises(re.error):
        trend(Layout(), "x", [], x_field=c.FIELD_ELAPSED_SECONDS, description="x", dashed="(limit")


def test_right_sizing_per_run_reads_the_last_10_runs_of_each_step() -> None:
    found = panel("resources", "Right-sizing per run")
    [target] = found["targets"]
    assert target["datasource"]["type"] == "influxdb"
    query = steps(target["query"])
    assert query[2] == f'filter(fn: (r) => r._measurement == "{c.RUN.measurement}")'
    assert query[3:5] == [
        "filter(fn: (r) => r.pipeline =~ /^${pipeline:regex}$/)",  # the dashboard's own variables
        "filter(fn: (r) => r.step =~ /^${step:regex}$/)",
    ]
    assert query[7:] == [
        # runs sampled in a container with a memory limit
        "filter(fn: (r) => exists r.peak_rss_bytes and exists r.memory_limit_bytes)",
        'map(fn: (r) => ({r with attempt: if exists r.attempt then r.attempt else "1"}))',
        'group(columns: ["pipeline", "step"])',
        'sort(columns: ["_time"], desc: true)',
        "limit(n: 10)",  # per step: limit() keeps n rows of each table
        "group()",
        'keep(columns: ["_time", "pipeline", "step", "run_id", "attempt", "peak_rss_bytes", '
        '"memory_limit_bytes", "mean_cpu_percent", "cpu_limit_cores"])',
        "map(fn: (r) => ({r with peak_of_limit: float(v: r.peak_rss_bytes) / "
        "float(v: r.memory_limit_bytes)}))",
        'sort(columns: ["_time"], desc: true)',
    ]


def test_right_sizing_per_run_colours_the_ratio_only() -> None:
    found = panel("resources", "Right-sizing per run")
    per_step = panel("resources", "Right-sizing per step")
    defaults = found["fieldConfig"]["defaults"]
    assert defaults["thresholds"] == per_step["fieldConfig"]["defaults"]["thresholds"]
    assert [s["value"] for s in defaults["thresholds"]["steps"]] == [None, 0.3, 0.9]
    units = {
        o["matcher"]["options"]: [p["value"] for p in o["properties"] if p["id"] == "unit"]
        for o in found["fieldConfig"]["overrides"]
    }
    assert units == {
        c.FIELD_PEAK_RSS_BYTES: ["bytes"],
        c.FIELD_MEMORY_LIMIT_BYTES: ["bytes"],
        c.FIELD_MEAN_CPU_PERCENT: ["percent"],
        c.FIELD_CPU_LIMIT_CORES: ["short"],
    }
    assert found["gridPos"]["y"] == per_step["gridPos"]["y"] + per_step["gridPos"]["h"]  # right below it
