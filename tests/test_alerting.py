"""Every alert follows one contract, and the rule files hold only names from pipeline_sdk/contract.py.

promtool and amtool run for real here (`make test` installs them): rule files are
checked and unit-tested, the Alertmanager configuration is checked.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline_sdk import contract as c
from tests.conftest import ROOT
from tests.support.promql import PromQLError, grouping_labels, metric_names

ALERTING = ROOT / "alerting"
CHART_FILES = ROOT / "charts" / "mlobs-core" / "files"  # the chart's copies (scripts/chart_files.py)
RULE_FILES = sorted(p for p in ALERTING.glob("*-rules.yaml"))
ALERT_NAME = re.compile(r"(MLPipeline|ModelAPI|PipelineContainer|Fluentd|MLModel|MLDrift)[A-Z][A-Za-z]+")


def contract_metric_names() -> set[str]:
    names = {v for k, v in vars(c).items() if k.startswith("PROM_") and isinstance(v, str)}
    histograms = {c.PROM_RUN_DURATION, c.PROM_HTTP_DURATION}
    return (
        names
        | {h + suffix for h in histograms for suffix in ("_bucket", "_sum", "_count")}
        | {"up", "ALERTS"}
    )


def rules_of(path: Path) -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def alert_problems(rule: dict[str, Any], test_text: str) -> list[str]:
    """What is wrong with one alerting rule, by the contract of CONVENTIONS 8 and 9."""
    name = rule.get("alert", "")
    problems = []
    if not ALERT_NAME.fullmatch(name):
        problems.append(f"{name}: not <Component><Symptom>")
    if rule.get("labels", {}).get(c.ALERT_LABEL_SEVERITY) not in ("critical", "warning"):
        problems.append(f"{name}: severity label must be critical or warning")
    if rule.get("labels", {}).get(c.ALERT_LABEL_STACK) != c.ALERT_STACK:
        problems.append(
            f"{name}: no {c.ALERT_LABEL_STACK}={c.ALERT_STACK} label (Alertmanager routes ours by it)"
        )
    annotations = rule.get("annotations", {})
    for key in ("summary", "description", "runbook_url"):
        if not annotations.get(key):
            problems.append(f"{name}: no {key} annotation")
    if annotations.get("runbook_url") != c.RUNBOOK_PATTERN.format(alertname=name):
        problems.append(f"{name}: runbook_url is not the pattern's")
    if not (ALERTING / "runbooks" / f"{name}.md").is_file():
        problems.append(f"{name}: no runbook alerting/runbooks/{name}.md")
    problems += expr_problems(name, rule.get("expr", ""))
    if test_text.count(f"alertname: {name}\n") < 2:
        problems.append(f"{name}: not tested on both sides of its for: window")
    if "run_id" in rule.get("labels", {}):
        problems.append(f"{name}: a run id must never be an alert label")
    return problems


def expr_problems(name: str, expr: str) -> list[str]:
    """What is wrong with a rule's expression, read by a PromQL parser (tests/support/promql.py)."""
    try:
        unknown = metric_names(expr) - contract_metric_names()
        by_run = c.PROM_LABEL_RUN_ID in grouping_labels(expr)
    except PromQLError as exc:
        return [f"{name}: {exc}"]
    problems = [f"{name}: metrics not in the contract: {sorted(unknown)}"] if unknown else []
    if by_run:
        problems.append(f"{name}: a run id must never be an alert label (it aggregates by it)")
    return problems


def test_there_are_rule_files_each_with_a_test_file() -> None:
    assert len(RULE_FILES) >= 4
    for path in RULE_FILES:
        assert path.with_name(path.stem + "-test.yaml").is_file(), f"{path.name} has no test file beside it"


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_every_alert_follows_the_contract(path: Path) -> None:
    test_text = path.with_name(path.stem + "-test.yaml").read_text()
    problems = [p for rule in rules_of(path) if "alert" in rule for p in alert_problems(rule, test_text)]
    assert problems == []


def test_the_required_alerts_exist() -> None:
    names = {rule["alert"] for path in RULE_FILES for rule in rules_of(path) if "alert" in rule}
    required = {
        "MLPipelineRunFailed",
        "MLPipelineStepOOMKilled",
        "MLPipelineNoRecentSuccess",
        "MLPipelineRunStuck",
        "ModelAPIDown",
        "ModelAPIHighErrorRate",
        "ModelAPIHighLatency",
        "PipelineContainerMemoryNearLimit",
        "FluentdOutputErrors",
        "FluentdOutputRetrying",
        "FluentdBufferGrowing",
        "MLPipelineExporterDown",
    }
    assert required <= names
    assert {p.stem for p in (ALERTING / "runbooks").glob("*.md")} == names, "a runbook per alert, no orphans"


def test_the_checker_catches_a_bad_rule() -> None:
    bad = {
        "alert": "runfailed",
        "expr": "sum by (pipeline, step, run_id) (mlobs_pipeline_runs_total_typo) > 0",
        "labels": {"severity": "page"},
        "annotations": {"summary": "x", "runbook_url": "https://example.com"},
    }
    problems = " | ".join(alert_problems(bad, "alertname: runfailed\n"))
    for expected in (
        "not <Component><Symptom>",
        "severity label",
        "no stack=mlobs label",
        "no description",
        "runbook_url is not the pattern",
        "no runbook",
        "mlobs_pipeline_runs_total_typo",
        "both sides",
        "run id must never",
    ):
        assert expected in problems


def test_every_rule_expression_names_only_contract_metrics() -> None:
    """Alerting and recording rules alike: each expression parses and selects only contract metrics."""
    rules = [rule for path in RULE_FILES for rule in rules_of(path)]
    assert len(rules) >= 13
    names = {rule.get("alert") or rule["record"]: metric_names(rule["expr"]) for rule in rules}
    assert len(names) == len(rules) and all(names.values()), "one name per rule, each selects a metric"
    assert [
        p for rule in rules for p in expr_problems(rule.get("alert") or rule["record"], rule["expr"])
    ] == []
    assert names["PipelineContainerMemoryNearLimit"] == {
        "container_memory_working_set_bytes",
        "kube_pod_container_resource_limits",
        "kube_pod_labels",
    }


def test_the_expression_check_names_a_misspelt_metric_wherever_it_is() -> None:
    expr = (
        "max_over_time(mlobs_pipeline_last_failure_timestamp_seconds[5m]) > on (pipeline, step) group_left "
        'label_replace(mlobs_pipline_last_success_timestamp_seconds offset 5m, "a", "$1", "b", "(.*)") '
        'unless absent(mlobs_pipeline_runs_totl{status="failed"})'
    )
    assert expr_problems("X", expr) == [
        "X: metrics not in the contract: "
        "['mlobs_pipeline_runs_totl', 'mlobs_pipline_last_success_timestamp_seconds']"
    ]
    assert expr_problems("X", "sum by (pipeline) (rate(mlobs_pipeline_runs_total[5m])") == [
        "X: 'sum by (pipeline) (rate(mlobs_pipeline_runs_total[5m])' is not PromQL: unclosed left parenthesis"
    ]
    assert expr_problems("X", 'sum({job="mlobs-model-api"})') == [
        "X: 'sum({job=\"mlobs-model-api\"})': "
        "selectors without an exact metric name: ['{job=\"mlobs-model-api\"}']"
    ]
    assert expr_problems("X", "count by (pipeline, run_id) (mlobs_pipeline_runs_total)") == [
        "X: a run id must never be an alert label (it aggregates by it)"
    ]


def test_pipeline_alerts_link_the_contract_dashboard() -> None:
    [failed] = [
        r for r in rules_of(ALERTING / "pipeline-rules.yaml") if r.get("alert") == "MLPipelineRunFailed"
    ]
    for key in ("dashboard", "logs"):
        link = failed["annotations"][key]
        assert link.startswith(f"/d/{c.DASHBOARD_RUN_VIEW_UID}/?")
        for var in (c.GRAFANA_VAR_PIPELINE, c.GRAFANA_VAR_STEP, c.GRAFANA_VAR_RUN_ID):
            assert f"var-{var}=" in link
    assert failed["annotations"]["logs"].endswith(f"viewPanel={c.RUN_VIEW_LOGS_PANEL_ID}")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed: `make test` installs it (scripts/ensure-prometheus.sh)")
    return path


def test_promtool_checks_and_unit_tests_every_rule_file() -> None:
    promtool = _tool("promtool")
    check = subprocess.run(
        [promtool, "check", "rules", *map(str, RULE_FILES)], check=False, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    tests = [str(p.with_name(p.stem + "-test.yaml")) for p in RULE_FILES]
    run = subprocess.run(
        [promtool, "test", "rules", *tests], check=False, capture_output=True, text=True, cwd=ALERTING
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("SUCCESS") == len(tests)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param(  # forgot to bridge an exporter restart
            "max_over_time(mlobs_pipeline_last_failure_timestamp_seconds[5m])",
            "mlobs_pipeline_last_failure_timestamp_seconds",
            id="restart",
        ),
        pytest.param(  # read the scrape target's namespace, not the run's
            "{{ or .exported_namespace .namespace }}", "{{ .namespace }}", id="exported-namespace"
        ),
        pytest.param("(. | first).Labels.error", "(. | first).Labels.reason", id="error"),
        pytest.param("value | humanizeDuration }}{{ end }}", "value }}{{ end }}", id="duration"),
    ],
)
def test_promtool_unit_tests_can_fail(tmp_path: Path, old: str, new: str) -> None:
    """The same tests against a rule broken in one place fail, naming MLPipelineRunFailed."""
    promtool = _tool("promtool")
    rules = (ALERTING / "pipeline-rules.yaml").read_text()
    assert rules.count(old) == 1
    broken = rules.replace(old, new)
    (tmp_path / "pipeline-rules.yaml").write_text(broken)
    shutil.copy(ALERTING / "pipeline-rules-test.yaml", tmp_path)
    run = subprocess.run(
        [promtool, "test", "rules", "pipeline-rules-test.yaml"],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode != 0 and "MLPipelineRunFailed" in run.stdout + run.stderr


def test_amtool_checks_the_alertmanager_config() -> None:
    amtool = _tool("amtool")
    run = subprocess.run(
        [amtool, "check-config", str(ALERTING / "alertmanager.yaml")],
        check=False,
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 templates" in run.stdout and "1 inhibit rules" in run.stdout


def test_promtool_checks_and_unit_tests_the_charts_copies(tmp_path: Path) -> None:
    """The rule files the chart packages (under their generated header) are the ones promtool tested."""
    promtool = _tool("promtool")
    copies = sorted((CHART_FILES / "alerting").glob("*-rules.yaml"))
    assert [p.name for p in copies] == [p.name for p in RULE_FILES]
    check = subprocess.run(
        [promtool, "check", "rules", *map(str, copies)], check=False, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    found = [int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", check.stdout)]
    assert found == [len(rules_of(p)) for p in RULE_FILES]
    for copy in copies:
        shutil.copy(copy, tmp_path)
        shutil.copy(ALERTING / f"{copy.stem}-test.yaml", tmp_path)
    run = subprocess.run(
        [promtool, "test", "rules", *(f"{p.stem}-test.yaml" for p in copies)],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("SUCCESS") == len(copies)


def _amtool_on_the_charts_copies(directory: Path, extra_template: str | None = None) -> str:
    """amtool check-config on the chart's Alertmanager copy, its template copies where it looks."""
    amtool = _tool("amtool")
    (directory / "templates").mkdir(parents=True)
    shutil.copy(CHART_FILES / "alerting" / "alertmanager.yaml", directory)
    for template in (CHART_FILES / "alertmanager-templates").glob("*.tmpl"):
        shutil.copy(template, directory / "templates")
    if extra_template is not None:
        (directory / "templates" / "extra.tmpl").write_text(extra_template)
    run = subprocess.run(
        [amtool, "check-config", str(directory / "alertmanager.yaml")],
        check=False,
        capture_output=True,
        text=True,
        cwd="/",
    )
    return f"rc={run.returncode}\n{run.stdout}{run.stderr}"


def test_amtool_checks_the_charts_copies_with_their_templates(tmp_path: Path) -> None:
    assert (CHART_FILES / "alertmanager-templates" / "email.tmpl").read_text().startswith("{{/* generated")
    report = _amtool_on_the_charts_copies(tmp_path / "ok")
    assert report.startswith("rc=0\n") and "1 templates" in report, report
    broken = _amtool_on_the_charts_copies(tmp_path / "broken", '{{ define "mlobs.unclosed" }}\n')
    assert broken.startswith("rc=1\n") and "extra.tmpl:2: unexpected EOF" in broken, broken


def test_alertmanager_config_keeps_null_and_has_no_secret() -> None:
    config = yaml.safe_load((ALERTING / "alertmanager.yaml").read_text())
    assert "null" in {r["name"] for r in config["receivers"]}, "the default route's receiver must exist"
    text = (ALERTING / "alertmanager.yaml").read_text()
    assert "smtp_auth_password:" not in text and "auth_password:" not in text
    assert config["route"]["group_by"] == ["alertname", c.PROM_LABEL_PIPELINE, c.PROM_LABEL_STEP]
