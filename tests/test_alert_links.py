"""Every Grafana link in the alerting files points at a dashboard, variables and a panel that exist.

The alert rules keep their links literal (promtool's tests assert the exact annotation text),
so this test reads every ``/d/<uid>/...`` link in alerting/ (rules, their tests, templates,
runbooks), in the chart's copies of them and in the generated dashboards, and holds each one
against the generated dashboards (dashboards/json/*.json): the uid is a dashboard's, every
``var-<name>=`` is one of that dashboard's variables, and every ``viewPanel=`` is one of its
panel ids.  The uids and panel ids themselves come from pipeline_sdk/contract.py
(DASHBOARD_*_UID, RUN_VIEW_LOGS_PANEL_ID), which the dashboards use.

Runbook links are relative in alerting/ (``<alertname>.md``, each a file of alerting/runbooks/);
the chart's PrometheusRules prefix ``alerting.runbookBaseUrl`` to them, or drop them when it is empty.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from pipeline_sdk import contract as c
from tests.conftest import ROOT

DASHBOARD_JSON = ROOT / "dashboards" / "json"
CHART_FILES = ROOT / "charts" / "mlobs-core" / "files"
SCANNED = ("alerting/**/*.yaml", "alerting/**/*.tmpl", "alerting/**/*.md", "dashboards/json/*.json")
SCANNED_COPIES = ("alerting/*.yaml", "alertmanager-templates/*.tmpl")


@dataclass(frozen=True)
class Link:
    where: str  # the file, relative to the repository
    uid: str
    variables: tuple[str, ...]  # var-<name>= of the query
    panels: tuple[str, ...]  # viewPanel= values


_LINK = re.compile(r"/d/([^/?#\s\"']+)/?")
_STOP = set("\"'()<>`") | {"\\"}


def _link_end(text: str, i: int) -> int:
    """Where a link starting before ``i`` ends: at a space or quote outside ``{{ }}`` template actions."""
    depth = 0
    while i < len(text):
        if text.startswith("{{", i):
            depth, i = depth + 1, i + 2
        elif text.startswith("}}", i) and depth:
            depth, i = depth - 1, i + 2
        elif depth == 0 and (text[i].isspace() or text[i] in _STOP):
            return i
        else:
            i += 1
    return i


def links_in(text: str, where: str) -> list[Link]:
    found = []
    for match in _LINK.finditer(text):
        query = text[match.end() : _link_end(text, match.end())]
        variables = tuple(re.findall(r"[?&]var-([^=&]+)=", query))
        panels = tuple(re.findall(r"[?&]viewPanel=([^&]*)", query))
        found.append(Link(where, match[1], variables, panels))
    return found


def _panel_ids(panels: list[dict[str, Any]]) -> Iterator[int]:
    for panel in panels:
        if "id" in panel:
            yield panel["id"]
        yield from _panel_ids(panel.get("panels", []))


def dashboards() -> dict[str, tuple[set[str], set[int]]]:
    """uid -> (its variable names, its panel ids), from the generated dashboards."""
    found = {}
    for path in sorted(DASHBOARD_JSON.glob("*.json")):
        board = json.loads(path.read_text())
        variables = {v["name"] for v in board.get("templating", {}).get("list", [])}
        found[board["uid"]] = (variables, set(_panel_ids(board["panels"])))
    return found


def link_problems(links: list[Link], boards: dict[str, tuple[set[str], set[int]]]) -> list[str]:
    problems = []
    for link in links:
        if link.uid not in boards:
            problems.append(f"{link.where}: /d/{link.uid}/ is no dashboard (uids: {sorted(boards)})")
            continue
        variables, panels = boards[link.uid]
        problems += [
            f"{link.where}: /d/{link.uid}/ sets var-{v}, which is no variable of that dashboard"
            for v in link.variables
            if v not in variables
        ]
        problems += [
            f"{link.where}: /d/{link.uid}/ viewPanel={p}: the dashboard has no panel {p}"
            for p in link.panels
            if not p.isdigit() or int(p) not in panels
        ]
    return problems


def scanned_files() -> list[Path]:
    files = {p for pattern in SCANNED for p in ROOT.glob(pattern)}
    files |= {p for pattern in SCANNED_COPIES for p in CHART_FILES.glob(pattern)}
    return sorted(files)


def all_links() -> list[Link]:
    return [
        link
        for path in scanned_files()
        for link in links_in(path.read_text(), path.relative_to(ROOT).as_posix())
    ]


def test_every_link_points_at_an_existing_dashboard_variable_and_panel() -> None:
    links = all_links()
    assert link_problems(links, dashboards()) == []
    # The scanner finds the links it should: pinned per alerting file (the dashboards' own data
    # links change with the dashboards; they are checked all the same).
    counts = Counter(link.where for link in links)
    assert {k: n for k, n in counts.items() if not k.startswith("dashboards/")} == {
        "alerting/pipeline-rules.yaml": 2,
        "charts/mlobs-core/files/alerting/pipeline-rules.yaml": 2,
        "alerting/pipeline-rules-test.yaml": 6,
        "alerting/drift-rules.yaml": 1,
        "charts/mlobs-core/files/alerting/drift-rules.yaml": 1,
        "alerting/drift-rules-test.yaml": 1,
    }
    assert counts["dashboards/json/pipeline_runs.json"] >= 1
    logs = [link for link in links if link.panels]
    assert len(logs) == 5 and {(link.uid, link.panels) for link in logs} == {
        (c.DASHBOARD_RUN_VIEW_UID, (str(c.RUN_VIEW_LOGS_PANEL_ID),))
    }


def test_the_scanner_reads_a_link_with_template_actions() -> None:
    text = (
        'logs: >-\n  /d/mlobs-run-view/?var-pipeline={{ $labels.pipeline }}&var-run_id={{ with printf "x %q" '
        "$labels.step | query }}{{ (. | first).Labels.run_id }}{{ end }}&viewPanel=40\nnext: /d/other/ text"
    )
    assert links_in(text, "f") == [
        Link("f", "mlobs-run-view", ("pipeline", "run_id"), ("40",)),
        Link("f", "other", (), ()),
    ]
    assert links_in('href="/d/a/?var-x=1&viewPanel=2">', "f") == [Link("f", "a", ("x",), ("2",))]


_RULES = ROOT / "alerting" / "pipeline-rules.yaml"
_WHERE = "alerting/pipeline-rules.yaml"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            f"viewPanel={c.RUN_VIEW_LOGS_PANEL_ID}",
            "viewPanel=41",
            [f"{_WHERE}: /d/mlobs-run-view/ viewPanel=41: the dashboard has no panel 41"],
        ),
        (
            f"viewPanel={c.RUN_VIEW_LOGS_PANEL_ID}",
            "viewPanel=panel-40",
            [f"{_WHERE}: /d/mlobs-run-view/ viewPanel=panel-40: the dashboard has no panel panel-40"],
        ),
        (
            "/d/mlobs-run-view/",
            "/d/mlobs-run-veiw/",
            [f"{_WHERE}: /d/mlobs-run-veiw/ is no dashboard (uids: {sorted(dashboards())})"] * 2,
        ),
        (
            "var-step=",
            "var-stpe=",
            [f"{_WHERE}: /d/mlobs-run-view/ sets var-stpe, which is no variable of that dashboard"] * 2,
        ),
    ],
)
def test_a_broken_link_is_reported(old: str, new: str, expected: list[str]) -> None:
    text = _RULES.read_text()
    assert old in text
    assert link_problems(links_in(text.replace(old, new), _WHERE), dashboards()) == expected


# ---- runbook links: relative in alerting/, resolved by the chart ------------------------------------------


def _chart_alerts(values: dict[str, Any]) -> dict[str, dict[str, str]]:
    """alertname -> annotations, of every alert of the chart's PrometheusRules rendered with ``values``."""
    out = helm_python.Chart.load(ROOT / "charts" / "mlobs-core").render(
        values, name="mlobs", namespace="mlobs", is_install=True
    )
    docs = [d for text in out.values() for d in yaml.safe_load_all(text) if d]
    return {
        rule["alert"]: rule.get("annotations", {})
        for doc in docs
        if doc["kind"] == "PrometheusRule"
        for group in doc["spec"]["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_the_rules_name_their_runbook_relatively_and_each_exists() -> None:
    alerts = _chart_alerts({"alerting": {"runbookBaseUrl": "https://x.example/r"}})
    assert len(alerts) == 15
    for name, notes in alerts.items():
        assert notes["runbook_url"] == "https://x.example/r/" + c.RUNBOOK_PATTERN.format(alertname=name)
        assert (ROOT / "alerting" / "runbooks" / c.RUNBOOK_PATTERN.format(alertname=name)).is_file()


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("", None),  # the default: no link at all, never a fixed address
        (
            "https://github.com/acme/mlobs/blob/v1.2.0/alerting/runbooks",
            "https://github.com/acme/mlobs/blob/v1.2.0/alerting/runbooks/MLPipelineRunFailed.md",
        ),
        ("https://wiki.acme.example/runbooks/", "https://wiki.acme.example/runbooks/MLPipelineRunFailed.md"),
    ],
)
def test_the_chart_prefixes_the_runbook_base_or_drops_the_link(base: str, expected: str | None) -> None:
    alerts = _chart_alerts({"alerting": {"runbookBaseUrl": base}})
    assert alerts["MLPipelineRunFailed"].get("runbook_url") == expected
    assert {a.get("runbook_url") is None for a in alerts.values()} == {expected is None}
    assert all("github.com/mlobs/mlobs" not in str(a) for a in alerts.values())
