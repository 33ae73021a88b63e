"""Failed runs reach an inbox: the whole alerting path, live.

A real Prometheus loads the project's rule files and scrapes the real exporter,
which watches a fake Kubernetes API serving Jobs and Pods built from client
models.  Prometheus alerts a real Alertmanager running the project's
configuration (only the SMTP host and the intervals are overridden), which sends
mail to a real SMTP server (aiosmtpd).  Asserted: exactly one email per failing
pipeline/step with its run id, reason, exit code and links; no email for old
failures after an exporter restart; one resolved email when the step next
succeeds.  The seconds from failure to email are printed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pipeline_sdk import contract as c
from pipeline_sdk.testing import kube_objects as k
from pipeline_sdk.testing.kube_fake import FakeKubeServer
from tests.conftest import ROOT, wait_for
from tests.support.exporter_process import Exporter
from tests.support.live_stack import Received, Service, SmtpSink, alertmanager, have_binaries, prometheus

ALERTING = ROOT / "alerting"
GRAFANA = "http://localhost:3000"  # alerting/templates/grafana-url.tmpl

pytestmark = pytest.mark.skipif(
    not have_binaries(), reason="Prometheus/Alertmanager not installed: `make test` installs them"
)


def fast(route: dict[str, Any]) -> None:
    """The intervals, and only them, shortened for a test that runs in seconds."""
    route.update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    for child in route.get("routes", []):
        fast(child)


def alertmanager_config(tmp: Path, smtp_port: int) -> Path:
    config = yaml.safe_load((ALERTING / "alertmanager.yaml").read_text())
    config["global"]["smtp_smarthost"] = f"127.0.0.1:{smtp_port}"
    config["templates"] = [str(ALERTING / "templates" / "*.tmpl")]
    fast(config["route"])
    path = tmp / "alertmanager.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def prometheus_config(tmp: Path, exporter: str, alertmanager_port: int) -> Path:
    rule_files = []
    for rules in sorted(ALERTING.glob("*-rules.yaml")):
        groups = yaml.safe_load(rules.read_text())
        for group in groups["groups"]:
            group["interval"] = "1s"
        copy = tmp / rules.name
        copy.write_text(yaml.safe_dump(groups))
        rule_files.append(str(copy))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": rule_files,
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]
        },
        "scrape_configs": [
            {
                "job_name": c.PROM_JOB_EXPORTER,
                "static_configs": [{"targets": [exporter.removeprefix("http://")]}],
            }
        ],
    }
    path = tmp / "prometheus.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def evaluated_after(prom: Service, moment: float) -> bool:
    """Prometheus evaluated the pipeline rules after ``moment`` (its rules API says when)."""
    groups = prom.get_json("/api/v1/rules")["data"]["groups"]
    [group] = [g for g in groups if g["name"] == "mlobs-pipelines"]
    return datetime.fromisoformat(group["lastEvaluation"]).timestamp() > moment


def query(prom: Service, expr: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = prom.get_json("/api/v1/query", query=expr)["data"]["result"]
    return result


@pytest.fixture
def stack(tmp_path: Path, forward_server) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    smtp = SmtpSink()
    api = FakeKubeServer()
    fluentd = forward_server()
    exporter = Exporter(api.url, tmp_path / "home", fluentd.port, "--settle", "0.5")
    am = alertmanager(alertmanager_config(tmp_path, smtp.port), tmp_path)
    prom = prometheus(prometheus_config(tmp_path, exporter.url, am.port), tmp_path)
    parts = {
        "smtp": smtp,
        "api": api,
        "exporter": exporter,
        "am": am,
        "prom": prom,
        "tmp": tmp_path,
        "fluentd": fluentd,
    }
    try:
        yield parts
    finally:
        for name in ("prom", "am"):
            parts[name].stop()
        parts["exporter"].stop()
        api.close()
        smtp.close()


def apply(api: FakeKubeServer, steps: list[k.Step]) -> None:
    for resource, _, obj in steps:
        api.kube.apply(resource, obj)


def emails(smtp: SmtpSink, status: str) -> list[Received]:
    return [m for m in smtp.messages if m.subject.startswith(f"[{status}]")]


def test_failed_runs_reach_an_inbox(stack: dict[str, Any]) -> None:
    smtp, api, prom = stack["smtp"], stack["api"], stack["prom"]
    exporter: Exporter = stack["exporter"]
    up = f'up{{job="{c.PROM_JOB_EXPORTER}"}} == 1'
    wait_for(prom.ready, 60, "Prometheus to be ready")
    wait_for(lambda: bool(query(prom, up)), 60, "Prometheus to scrape the exporter")

    # A run of train/fit that succeeds, seen by Prometheus before anything fails.
    now = time.time()
    apply(api, k.succeeding(k.RunSpec("train", "fit", "ok-1"), now - 120, now - 60))
    succeeded = f'{c.PROM_RUNS_TOTAL}{{pipeline="train",step="fit",status="succeeded"}} == 1'
    wait_for(lambda: bool(query(prom, succeeded)), 30, "the successful run in Prometheus")

    # Then train/fit is OOM-killed and etl/load exhausts its retries (exit code 1).
    failed_at = time.time()
    apply(api, k.oom_killed(k.RunSpec("train", "fit", "oom-1"), failed_at - 30, failed_at))
    apply(api, k.backoff_limit(k.RunSpec("etl", "load", "bl-1", backoff_limit=1), failed_at - 40, failed_at))
    wait_for(lambda: len(emails(smtp, "FIRING")) >= 2, 60, "the two failure emails")
    seconds = max(m.at for m in emails(smtp, "FIRING")) - failed_at
    print(f"\nfailure -> email: {seconds:.1f} s (1 s scrape, 1 s evaluation, 1 s group_wait)")

    firing = {m.subject: m for m in emails(smtp, "FIRING")}
    assert set(firing) == {
        "[FIRING] MLPipelineRunFailed train/fit run oom-1: OOMKilled",
        "[FIRING] MLPipelineRunFailed etl/load run bl-1: BackoffLimitExceeded",
    }, "one email per failing pipeline/step; the OOM warning is inhibited by the critical alert"
    for subject, run_id, reason, exit_code, step in (
        ("[FIRING] MLPipelineRunFailed train/fit run oom-1: OOMKilled", "oom-1", "OOMKilled", "137", "fit"),
        (
            "[FIRING] MLPipelineRunFailed etl/load run bl-1: BackoffLimitExceeded",
            "bl-1",
            "BackoffLimitExceeded",
            "1",
            "load",
        ),
    ):
        message = firing[subject]
        text, html = message.part("plain"), message.part("html")
        pipeline = "train" if step == "fit" else "etl"
        variables = f"var-pipeline={pipeline}&var-step={step}&var-run_id={run_id}"
        run_view = f"{GRAFANA}/d/{c.DASHBOARD_RUN_VIEW_UID}/?{variables}"
        for line in (
            f"Pipeline:   {pipeline}",
            f"Step:       {step}",
            f"Run id:     {run_id}",
            f"Reason:     {reason}",
            f"Exit code:  {exit_code}",
            f"Run view:   {run_view}",
            f"Logs:       {run_view}&viewPanel={c.RUN_VIEW_LOGS_PANEL_ID}",
            f"Runbook:    {c.RUNBOOK_URL_PATTERN.format(alertname='MLPipelineRunFailed')}",
        ):
            assert line in text, f"{line!r} missing from:\n{text}"
        assert "Started:    " in text and "Ended:      " in text and "+0000 UTC" in text
        for cell in (f"<td>{run_id}</td>", f"<td>{reason}</td>", f"<td>{exit_code}</td>"):
            assert cell in html
        assert run_view.replace("&", "&amp;") in html
    print(
        "--- the email of the OOM-killed run ---\n"
        + firing["[FIRING] MLPipelineRunFailed train/fit run oom-1: OOMKilled"].part("plain")
    )

    # Restart the exporter on the same address: no new email for old failures.
    host_port = exporter.url.removeprefix("http://")
    exporter.stop()
    restarted = Exporter(api.url, stack["tmp"] / "home2", stack["fluentd"].port, "--listen", host_port)
    stack["exporter"] = restarted
    restarted_at = time.time()
    scraped_again = f"timestamp({up}) > {restarted_at}"
    wait_for(lambda: bool(query(prom, scraped_again)), 60, "Prometheus to scrape the restarted exporter")
    quiet_until = time.time() + 3  # group_interval is 1 s: a new email would be out by then
    wait_for(lambda: evaluated_after(prom, quiet_until), 30, "three more evaluations of the pipeline rules")
    assert len(smtp.messages) == 2, [m.subject for m in smtp.messages]
    assert (
        restarted.value(c.PROM_RUNS_TOTAL, pipeline="train", step="fit", status="failed", reason="OOMKilled")
        == 0
    )

    # The next successful run of train/fit resolves its alert, and only its alert.
    now = time.time()
    apply(api, k.succeeding(k.RunSpec("train", "fit", "ok-2"), now - 5, now))
    wait_for(lambda: len(emails(smtp, "RESOLVED")) >= 1, 60, "the resolved email")
    [resolved] = emails(smtp, "RESOLVED")
    assert resolved.subject == "[RESOLVED] MLPipelineRunFailed train/fit run oom-1: OOMKilled"
    assert "RESOLVED: train/fit: the last run failed" in resolved.part("plain")
    quiet_until = time.time() + 3
    wait_for(lambda: evaluated_after(prom, quiet_until), 30, "three more evaluations")
    assert len(emails(smtp, "FIRING")) == 2 and len(emails(smtp, "RESOLVED")) == 1
