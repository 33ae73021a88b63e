"""The dashboards as Grafana reads them: Grafana's own dashboard types, and the folder they land in.

* Every ``dashboards/json/*.json`` type-checks as ``Dashboard`` of npm ``@grafana/schema`` at
  the version of the Grafana the chart deploys (the grafana chart's appVersion), with
  ``tsc --noEmit`` (npm ``typescript``; both as ``tests/js/package.json`` pins them;
  tests/js/dashboard-check.mjs).
  The type, tests/js/dashboard.ts, is the schema's read as JSON (enums as their values, null
  for an unset optional key) plus grafanalib's legacy keys, each where grafanalib writes it and
  pinned to the value it writes (``timepicker.time_options`` among them): Grafana 13 ignores
  them, so any other value there, or any other unknown key, fails.
* The chart's dashboard ConfigMaps carry the annotation the Grafana sidecar reads a folder
  from, and the umbrella's sidecar reads that annotation and makes its folders Grafana's.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import grafanalib.core as g
import pytest
import yaml
from grafanalib._gen import DashboardEncoder

from dashboards import generate
from dashboards.builders import FAILURE_RATIO, NEUTRAL, UP, PromTarget, Thresholds, stat_thresholds
from tests.conftest import ROOT

from .test_chart import UMBRELLA, objects, render_values

JS = ROOT / "tests" / "js"


def schema_problems(*paths: Path) -> dict[str, list[str]]:
    """tsc's errors for each dashboard file, by file name: 'line N: TSxxxx message | the line'."""
    if not (JS / "node_modules" / "@grafana" / "schema").is_dir():
        pytest.fail("tests/js/node_modules is missing: `make pytest` installs it (npm ci in tests/js)")
    run = subprocess.run(
        ["node", str(JS / "dashboard-check.mjs"), *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return {
        Path(file).name: [f"line {e['line']}: {e['code']} {e['message']} | {e['text']}" for e in errors]
        for file, errors in json.loads(run.stdout).items()
    }


def dashboards() -> list[Path]:
    return sorted(generate.OUT.glob("*.json"))


def test_every_dashboard_is_a_grafana_dashboard() -> None:
    paths = dashboards()
    assert len(paths) == 6
    assert schema_problems(*paths) == {p.name: [] for p in paths}


def broken(tmp_path: Path, edit: Any) -> Path:
    board = json.loads((generate.OUT / "run_view.json").read_text())
    edit(board)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(board, sort_keys=True, indent=2) + "\n")
    return path


def test_the_schema_check_fails_on_a_broken_dashboard(tmp_path: Path) -> None:
    def edit(board: dict[str, Any]) -> None:
        board["panels"][0]["titel"] = "a misspelt key"
        board["panels"][1]["fieldConfig"]["defaults"]["thresholds"]["mode"] = "absolut"
        board["panels"][2]["gridPos"]["w"] = "12"
        board["panels"][3]["fieldConfig"]["defaults"]["thresholds"]["steps"] = None
        board["graphTooltip"] = 3
        board["style"] = "light"  # a legacy key with a value Grafana would drop
        board["templating"]["list"][0]["refresh"] = 7

    [problems] = schema_problems(broken(tmp_path, edit)).values()
    assert [p.rsplit(" | ", 1)[1] for p in problems] == [
        '"graphTooltip": 3,',
        '"titel": "a misspelt key",',
        '"mode": "absolut",',
        '"w": "12",',
        '"steps": null',
        '"style": "light",',
        '"refresh": 7,',
    ]
    assert [p.split(": ")[1].split(" ")[0] for p in problems] == [
        "TS2322",
        "TS2353",
        "TS2820",
        "TS2322",
        "TS2322",
        "TS2322",
        "TS2322",
    ]
    assert "'\"titel\"' does not exist in type 'MlobsPanel'" in problems[1]
    assert "Did you mean '\"absolute\"'?" in problems[2]


def test_the_schema_check_catches_grafanalibs_stat_thresholds(tmp_path: Path) -> None:
    """grafanalib's Stat writes thresholds.steps "" unless given steps: a string, not Grafana's list."""
    panel = g.Stat(title="Up", targets=[], gridPos=g.GridPos(h=4, w=6, x=0, y=40), id=99)
    stat = json.loads(json.dumps(panel.to_json_data(), cls=DashboardEncoder))
    assert stat["fieldConfig"]["defaults"]["thresholds"]["steps"] == ""
    [problems] = schema_problems(broken(tmp_path, lambda b: b["panels"].append(stat))).values()
    assert len(problems) == 1
    assert problems[0].endswith(
        "is not assignable to type '{ color: string; value: number | null; "
        'valueExpr?: string | null | undefined; }[]\'. | "steps": ""'
    )


# ---- the Grafana folder ------------------------------------------------------------------------------


def umbrella_sidecar() -> dict[str, Any]:
    values = yaml.safe_load((UMBRELLA / "values.yaml").read_text())
    sidecar: dict[str, Any] = values["kube-prometheus-stack"]["grafana"]["sidecar"]["dashboards"]
    return sidecar


def folder_problems(configmaps: list[dict[str, Any]], annotation: str, folder: str) -> list[str]:
    dashboards_ = [cm for cm in configmaps if cm["metadata"]["labels"].get("grafana_dashboard") == "1"]
    problems = [] if dashboards_ else ["no dashboard ConfigMap"]
    for cm in dashboards_:
        found = (cm["metadata"].get("annotations") or {}).get(annotation)
        if found != folder:
            problems.append(f"{cm['metadata']['name']}: annotation {annotation} is {found!r}, not {folder!r}")
    return problems


def test_the_dashboards_are_in_the_grafana_folder_mlobs() -> None:
    sidecar = umbrella_sidecar()
    assert sidecar["folderAnnotation"] == "grafana_folder"
    assert sidecar["provider"] == {"foldersFromFilesStructure": True}  # and no folder: Grafana takes one
    configmaps = objects(None, "ConfigMap")
    assert folder_problems(configmaps, sidecar["folderAnnotation"], "mlobs") == []
    with_dashboards = [cm for cm in configmaps if cm["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert sorted(key for cm in with_dashboards for key in cm["data"]) == [p.name for p in dashboards()]


def test_the_folder_check_can_fail() -> None:
    annotation = umbrella_sidecar()["folderAnnotation"]
    elsewhere = render_values({"dashboards": {"folderAnnotation": "example.com/folder", "folder": "Other"}})
    configmaps = [d for d in elsewhere if d["kind"] == "ConfigMap"]
    problems = folder_problems(configmaps, annotation, "mlobs")
    assert len(problems) == len(dashboards())
    assert problems[0].endswith("annotation grafana_folder is None, not 'mlobs'")
    assert folder_problems([], annotation, "mlobs") == ["no dashboard ConfigMap"]


# ---- what a stat's colour says ---------------------------------------------------------------------------


def test_stat_panels_have_thresholds_that_mean_something() -> None:
    up = [{"color": "red", "value": None}, {"color": "green", "value": 1.0}]
    ratio = [
        {"color": "green", "value": None},
        {"color": "orange", "value": 0.01},
        {"color": "red", "value": 0.05},
    ]
    neutral = [{"color": "text", "value": None}]
    steps = {
        (path.stem, panel["title"]): panel["fieldConfig"]["defaults"]["thresholds"]
        for path in dashboards()
        for panel in json.loads(path.read_text())["panels"]
        if panel["type"] == "stat"
    }
    assert steps == {
        ("model_api", "Requests"): {"mode": "absolute", "steps": neutral},
        ("model_api", "Unique users"): {"mode": "absolute", "steps": neutral},
        ("model_api", "Error ratio"): {"mode": "absolute", "steps": ratio},
        ("model_api", "p95 latency"): {"mode": "absolute", "steps": neutral},
        ("pipeline_runs", "Runs in progress"): {"mode": "absolute", "steps": neutral},
        ("pipeline_runs", "Failure rate (24h)"): {"mode": "absolute", "steps": ratio},
        ("pipeline_runs", "Failed runs (24h)"): {"mode": "absolute", "steps": neutral},
        ("pipeline_runs", "Succeeded runs (24h)"): {"mode": "absolute", "steps": neutral},
        ("stack_health", "Pipeline exporter up"): {"mode": "absolute", "steps": up},
        ("stack_health", "Fluentd up"): {"mode": "absolute", "steps": up},
        ("stack_health", "Runs tracked by the exporter"): {"mode": "absolute", "steps": neutral},
        ("stack_health", "Run records dropped"): {"mode": "absolute", "steps": neutral},
        ("model_drift", "Dataset drift"): {
            "mode": "absolute",
            "steps": [{"color": "green", "value": None}, {"color": "red", "value": 1.0}],
        },
        ("model_drift", "Drifted share"): {
            "mode": "absolute",
            "steps": [
                {"color": "green", "value": None},
                {"color": "orange", "value": 0.25},
                {"color": "red", "value": 0.5},
            ],
        },
        ("model_drift", "Drifted features"): {
            "mode": "absolute",
            "steps": [{"color": "green", "value": None}, {"color": "orange", "value": 1.0}],
        },
        ("model_drift", "Since the last capture"): {"mode": "absolute", "steps": neutral},
    }


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ((), r"must start with \(None, colour\), got \(\)"),
        (((0.0, "red"),), r"must start with \(None, colour\)"),
        (((None, "red"), (2.0, "green"), (1.0, "red")), r"must rise strictly: \[2\.0, 1\.0\]"),
        (((None, "red"), (1.0, "green"), (1.0, "red")), r"must rise strictly: \[1\.0, 1\.0\]"),
        (((None, "red"), (None, "green")), r"must rise strictly: \[None\]"),
        (
            ((None, "amber"),),
            r"colours \['amber'\] are not one of \['blue', 'green', 'orange', 'red', 'text'\]",
        ),
    ],
)
def test_thresholds_refuse_steps_grafana_cannot_use(steps: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Thresholds(steps)


def test_a_stat_without_thresholds_gets_them_from_what_it_shows() -> None:
    assert stat_thresholds([PromTarget('max(up{job="x"})')], "short") is UP
    assert stat_thresholds([PromTarget('up{job="x"}')], "short") is UP
    assert stat_thresholds([PromTarget('sum(rate(up{job="x"}[5m]))')], "short") is NEUTRAL
    assert stat_thresholds([PromTarget("sum(errors) / sum(requests)")], "percentunit") is FAILURE_RATIO
    assert stat_thresholds([PromTarget("sum(requests)")], "short") is NEUTRAL
