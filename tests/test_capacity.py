"""The capacity model (bench/capacity.py): its arithmetic, its measurements, its command, its tasks.

The arithmetic is pinned on fixed measured figures; the measurements run one small step run,
one model API and the exporter's collectors for real and are held to what the contract says
they produce; the InfluxDB tasks the chart ships pass libflux, name only the contract's
streams, and a broken one is reported.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import Histogram

from bench import capacity as cap
from exporters.pipeline_exporter.config import SeriesLimits
from pipeline_sdk import contract as c
from pipeline_sdk.http_metrics import STATUS_CLASSES
from tests.conftest import ROOT

from .test_chart import render_values
from .test_flux_frontend import libflux

TASKS = ROOT / "charts" / "mlobs-core" / "files" / "influxdb-tasks"


STEP = cap.Received(
    events={"run": 2, "param": 4, "system": 2},
    bytes={"run": 400, "param": 200, "system": 300},
    numeric_values={"run": 6, "param": 2, "system": 20},
    string_values={"run": 4, "param": 4},
    string_bytes={"run": 100, "param": 40},
    series=7,
    field_series=12,
)
API = cap.ApiMeasure(
    cap.Received(
        events={"api_request": 10},
        bytes={"api_request": 1500},
        numeric_values={"api_request": 20},
        string_values={"api_request": 10},
        string_bytes={"api_request": 640},
        series=3,
        field_series=9,
    ),
    requests=10,
    prometheus_series=26,
)
EXPORTER = cap.ExporterMeasure(base=13, per_pair=50, cap=4)
MEASURED = cap.Measured(STEP, API, EXPORTER)
INPUTS = cap.Inputs(
    runs_per_day=8640,
    steps_per_run=5,
    params=4,
    metrics=0,
    list_metrics=0,
    points_per_list_metric=0,
    log_lines=0,
    system_samples=6,  # the measured run took 2: system figures x 3
    api_requests_per_second=2,
    retention_days=10,
    peak_factor=2,
    pipeline_steps=6,  # over the cap of 4
    services=3,
    replicas_per_service=2,
)


# ---- the arithmetic, on fixed figures ---------------------------------------------------------------


def test_estimate_arithmetic_on_fixed_measures() -> None:
    e = cap.estimate(INPUTS, MEASURED)
    # A step run: 2 + 4 + 2 x 3 events, 400 + 200 + 300 x 3 bytes; 43,200 step runs, 172,800 requests a day.
    assert (e.step_runs_per_day, e.events_per_step_run, e.bytes_per_event) == (43_200, 12, 125)
    assert e.peak_events_per_second == 14.0  # (43,200 x 12 x 2 + 172,800 x 1) / 86,400
    assert e.fluentd_workers == 1
    assert e.points_per_day == 691_200  # 43,200 x 12 + 172,800
    assert e.peak_field_writes_per_second == 82.0  # numeric 72 (68 a run, 2 a request) + strings 10
    assert e.series_within_retention == 5_184_027  # 43,200 x 10 d x 12 + 3 services x 9
    assert (e.series_per_day, e.bounded_series) == (518_400, 27)
    # 3 B x (2 x 3,283,200 numeric values with timestamps + 518,400 string timestamps) + 17,107,200 B strings
    assert e.influx_disk_per_day == 38_361_600
    assert e.forward_bytes_per_day == 90_720_000  # 43,200 x 1,500 + 172,800 x 150
    assert e.peak_bytes_per_second == 1800.0  # (64,800,000 x 2 + 25,920,000) / 86,400
    assert e.buffer_hours == pytest.approx(2**31 / 1800 / 3600)
    assert e.prometheus_series == 369  # 13 + 50 x min(6, cap 4) + 3 services x 2 replicas x 26
    assert e.prometheus_memory == 369 * 2048
    assert cap.retention_for(e, 1_000_000) == pytest.approx((1_000_000 - 27) / 518_400)


def test_estimate_scales_with_each_input() -> None:
    base = cap.estimate(INPUTS, MEASURED)
    double_runs = cap.estimate(replace(INPUTS, runs_per_day=17_280), MEASURED)
    assert double_runs.series_within_retention == 2 * 5_184_000 + 27
    longer = cap.estimate(replace(INPUTS, retention_days=20), MEASURED)
    assert longer.series_within_retention == 2 * 5_184_000 + 27
    assert longer.points_per_day == base.points_per_day  # retention holds series, not the daily rate
    at_cap = cap.estimate(replace(INPUTS, pipeline_steps=4), MEASURED)
    below = cap.estimate(replace(INPUTS, pipeline_steps=3), MEASURED)
    assert (below.prometheus_series, at_cap.prometheus_series, base.prometheus_series) == (319, 369, 369)
    steady = cap.estimate(replace(INPUTS, peak_factor=1), MEASURED)
    assert steady.peak_events_per_second == 8.0  # (518,400 + 172,800) / 86,400
    busy = cap.estimate(replace(INPUTS, runs_per_day=8640 * 10_000), MEASURED)
    assert busy.peak_events_per_second == 120_002.0  # 2 events/s past 24 workers' 120,000
    assert busy.fluentd_workers == math.ceil(120_002 / 5000) == 25


def test_a_measured_run_without_a_system_sample_is_refused() -> None:
    empty = replace(STEP, events={"run": 2})
    with pytest.raises(ValueError, match="no system sample"):
        cap.estimate(INPUTS, cap.Measured(empty, API, EXPORTER))


@pytest.mark.parametrize(
    ("writes", "series", "node"),
    [
        (5_000, 100_000, cap.INFLUX_NODES[0].size),
        (5_001, 100_000, cap.INFLUX_NODES[1].size),
        (5_000, 100_001, cap.INFLUX_NODES[1].size),
        (250_000, 1_000_000, cap.INFLUX_NODES[1].size),
        (750_000, 10_000_000, cap.INFLUX_NODES[2].size),
        (750_001, 10, "beyond one OSS node"),
        (10, 10_000_001, "beyond one OSS node"),
    ],
)
def test_influx_node_is_the_smallest_row_of_the_sizing_table(writes: float, series: float, node: str) -> None:
    assert cap.influx_node(writes, series) == node


def test_tiers_name_what_runs_out_first_and_what_to_do() -> None:
    e = cap.estimate(INPUTS, MEASURED)
    tiers = {t.name: t for t in cap.tiers(e, INPUTS)}
    assert list(tiers) == [
        "Fluentd (per worker)",
        "Fluentd buffer",
        "InfluxDB writes",
        "InfluxDB series",
        "Prometheus memory",
    ]
    assert tiers["Fluentd (per worker)"].use == 14 / 5000
    assert tiers["Fluentd buffer"].use == 1800 * 2 * 3600 / 2**31
    assert tiers["InfluxDB series"].use == 5_184_027 / 10_000_000
    assert tiers["InfluxDB writes"].use == 82 / 750_000
    assert tiers["Prometheus memory"].use == 369 * 2048 / (1536 * 2**20)
    assert {t.source for t in tiers.values()} == {*cap.SOURCES.values(), "charts/mlobs-core/values.yaml"}
    text = cap.report("fixed", INPUTS, MEASURED)
    assert "Runs out first: **InfluxDB series** (52%); nothing has run out." in text
    assert "| InfluxDB series within retention | 5,184,027 |" in text
    over = cap.report("fixed", replace(INPUTS, retention_days=20), MEASURED)
    assert "Runs out first: **InfluxDB series** (104%): shorten the bucket's retention" in over


# ---- the measurements, for real ---------------------------------------------------------------------

SMALL = replace(
    INPUTS, params=3, metrics=2, list_metrics=2, points_per_list_metric=5, log_lines=4, system_samples=1
)


def test_a_step_run_measures_the_series_the_contract_gives(tmp_path: Path) -> None:
    r = cap.measure_step(SMALL, tmp_path)
    assert r.events == {
        c.RUN.measurement: 2,  # started and succeeded
        c.PARAM.measurement: 3,
        c.METRIC.measurement: 2,
        c.LIST_METRIC.measurement: 10,
        c.LOG.measurement: 4,
        c.SYSTEM.measurement: 1,  # the sampler's last sample
        c.RUN_RECORD.measurement: 1,  # the exporter's, one attempt
    }
    # A series is a measurement and tag set: the run's two statuses, one per param, metric and list
    # metric name, one for the INFO level, one system series (no GPU), one run record.
    assert r.series == 2 + 3 + 2 + 2 + 1 + 1 + 1 == 12
    # InfluxDB counts field keys too: a list metric has value and index, a numeric param value and number.
    assert r.series + 2 + 1 <= r.field_series <= r.series * len(c.RUN.fields)
    for measurement, count in r.events.items():
        assert 20 <= r.bytes[measurement] / count <= 2000, measurement
    assert r.numeric_values[c.LIST_METRIC.measurement] == 20  # value and index of each of 10 points
    assert r.string_values[c.PARAM.measurement] == 3


def test_a_model_api_measures_its_events_and_prometheus_series(tmp_path: Path) -> None:
    api = cap.measure_api(tmp_path)
    assert api.requests == 9  # 3 routes x 200, 404, 500
    assert api.received.events == {c.API_REQUEST.measurement: 9}
    # One tag set per route, method and status class; each with its three fields.
    assert (api.received.series, api.received.field_series) == (9, 9 * len(c.API_REQUEST.fields))
    assert 20 <= api.received.total("bytes") / 9 <= 2000
    # Per handler and method: 4 status classes' counters (value and _created) and the histogram's
    # buckets, count, sum and _created; the 3 routes and /metrics, scraped once.
    per_handler = 2 * len(STATUS_CLASSES) + len(Histogram.DEFAULT_BUCKETS) + 3
    assert api.prometheus_series == 4 * per_handler == 104


def test_the_exporter_series_are_linear_in_pipeline_steps_up_to_its_cap() -> None:
    m = cap.measure_exporter()
    assert m.cap == SeriesLimits().max_pipeline_steps
    assert m.base > 0
    assert m.per_pair >= 2 * len(c.RUN_OUTCOMES)  # every outcome's counter, created at 0 (value and _created)
    assert cap.exporter_series(4) == m.series(4) == m.base + 4 * m.per_pair
    assert m.series(m.cap + 1) == m.series(m.cap) == m.base + m.cap * m.per_pair


# ---- the command's argument errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--runs-per-day", "5"], "argument --runs-per-day: changes one profile: name it with --profile"),
        (
            ["--profile", "team", "--steps-per-run", "0"],
            "argument --steps-per-run: expected a number of at least 1",
        ),
        (["--profile", "team", "--params", "x"], "argument --params: expected a whole number, got 'x'"),
        (["--profile", "team", "--params", "1.5"], "argument --params: expected a whole number, got '1.5'"),
        (["--profile", "team", "--runs-per-day", "nan"], "argument --runs-per-day: expected a finite number"),
        (["--profile", "team", "--retention-days", "0"], "argument --retention-days: expected > 0, got 0.0"),
        (
            ["--profile", "team", "--peak-factor", "0.5"],
            "argument --peak-factor: expected at least 1, got 0.5",
        ),
        (["--profile", "lab"], "argument --profile: invalid choice: 'lab'"),
    ],
)
def test_the_command_names_a_bad_argument(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cap.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_one_profile_takes_the_overrides() -> None:
    [(name, inputs)], _ = cap.parse_args(["--profile", "team", "--runs-per-day", "2000", "--services", "0"])
    assert name == "team"
    assert inputs == replace(cap.PROFILES["team"], runs_per_day=2000.0, services=0)
    assert [n for n, _ in cap.parse_args([])[0]] == ["laptop", "team", "platform"]


def test_inputs_name_a_bad_field() -> None:
    with pytest.raises(ValueError, match=r"^steps_per_run: expected a whole number, got 1\.5$"):
        replace(INPUTS, steps_per_run=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^services: expected a number of at least 0, got -1$"):
        replace(INPUTS, services=-1)
    with pytest.raises(ValueError, match=r"^runs_per_day: expected a number, got True$"):
        replace(INPUTS, runs_per_day=True)


# ---- the InfluxDB tasks ---------------------------------------------------------------------------

TASK_HEADER = re.compile(
    r'^option task = \{name: "(mlobs-[a-z-]+)", every: (\d+[mh]), offset: (\d+m)\}$', re.M
)


def task_files() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(TASKS.glob("*.flux"))}


def test_the_tasks_pass_libflux_and_a_broken_one_is_reported() -> None:
    tasks = task_files()
    assert sorted(tasks) == [
        "downsample-api-requests.flux",
        "downsample-metrics.flux",
        "downsample-run-records.flux",
        "downsample-system.flux",
    ]
    broken = {
        "unknown function": tasks["downsample-metrics.flux"].replace("fn: mean", "fn: meen"),
        "unclosed header": tasks["downsample-system.flux"].replace("offset: 5m}", "offset: 5m"),
    }
    problems = libflux({**tasks, **broken})
    assert {name: problems[name] for name in tasks} == {name: [] for name in tasks}
    assert any("undefined identifier meen" in e for e in problems["unknown function"])
    assert problems["unclosed header"] != []


def test_each_task_has_a_header_and_names_only_the_contract() -> None:
    names = []
    streams = {s.measurement: s for s in c.STREAMS}
    for file, text in task_files().items():
        [header] = TASK_HEADER.findall(text)  # libflux accepts any record as the option: check its keys
        names.append(header[0])
        assert f'from(bucket: "{c.INFLUXDB_BUCKET}")' in text, file
        [measurement] = re.findall(r'r\._measurement == "(\w+)"', text)
        stream = streams[measurement]
        fields = set(re.findall(r'r\._field == "(\w+)"', text))
        assert fields and fields <= set(stream.fields), file
        [group] = re.findall(r"group\(columns: \[([^\]]*)\]\)", text)
        columns = set(re.findall(r'"(\w+)"', group)) - {"_measurement", "_field"}
        assert columns <= set(stream.tags) and c.TAG_RUN_ID not in columns, file  # run ids are dropped
        assert set(re.findall(r'to\(bucket: "([^"]*)"\)', text)) == {c.INFLUXDB_DOWNSAMPLED_BUCKET}, file
    assert len(set(names)) == len(names) == 4


def test_the_chart_ships_the_tasks_only_when_enabled() -> None:
    def configmaps(values: dict[str, object]) -> list[dict[str, object]]:
        return [
            d
            for d in render_values(values)
            if d["kind"] == "ConfigMap" and "influxdb-tasks" in d["metadata"]["name"]
        ]

    assert configmaps({}) == []
    [configmap] = configmaps({"influxdbTasks": {"enabled": True}})
    assert configmap["data"] == {name: text.rstrip("\n") for name, text in task_files().items()}
