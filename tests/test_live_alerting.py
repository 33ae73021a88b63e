"""Failed runs reach an inbox, a chat and a webhook: the whole alerting path, live.

A real Prometheus loads the chart's PrometheusRules (mlobs-core rendered by Helm's engine from
alerting/) and scrapes the real exporter, which watches a fake Kubernetes API serving Jobs and
Pods built from client models.  Prometheus alerts a real Alertmanager running the chart's
configuration and templates (only the SMTP host, the secret files' paths and the intervals are
overridden), which sends mail to a real SMTP server (aiosmtpd) and posts to a local HTTP server
standing in for Slack and a webhook.  Asserted: exactly one email per failing pipeline/step with
its run id, reason, exit code, the step's own error and links; no email for old failures after an
exporter restart; one resolved email when the step next succeeds; the webhook's JSON and the Slack
message with the error.  The seconds from failure to email are printed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from pipeline_sdk import contract as c
from pipeline_sdk.testing import kube_objects as k
from pipeline_sdk.testing.kube_fake import FakeKubeServer
from tests.conftest import ROOT, wait_for
from tests.support.exporter_process import Exporter
from tests.support.live_stack import Received, Service, SmtpSink, alertmanager, have_binaries, prometheus
from tests.test_exporter_termination import failed_pod, sdk_summary

ALERTING = ROOT / "alerting"
CORE = ROOT / "charts" / "mlobs-core"
GRAFANA = "http://localhost:3000"  # the chart's alerting.grafanaUrl default
RUNBOOKS = "https://runbooks.example/mlobs/alerting/runbooks"  # alerting.runbookBaseUrl of the first test
SECRETS = "/etc/alertmanager/secrets/"  # where kube-prometheus-stack mounts alertmanagerSpec.secrets

pytestmark = pytest.mark.skipif(
    not have_binaries(), reason="Prometheus/Alertmanager not installed: `make test` installs them"
)


def fast(route: dict[str, Any]) -> None:
    """The intervals, and only them, shortened for a test that runs in seconds."""
    route.update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    for child in route.get("routes", []):
        fast(child)


def chart(values: dict[str, Any]) -> list[dict[str, Any]]:
    out = helm_python.Chart.load(CORE).render(values, name="mlobs", namespace="mlobs", is_install=True)
    return [d for text in out.values() for d in yaml.safe_load_all(text) if d]


def _secret_files(node: Any, secrets: dict[str, str]) -> None:
    """Every mounted-Secret path of the config (``*_file`` settings) replaced by its local file."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str) and value.startswith(SECRETS):
                node[key] = secrets[value.removeprefix(SECRETS)]
            else:
                _secret_files(value, secrets)
    elif isinstance(node, list):
        for item in node:
            _secret_files(item, secrets)


def alertmanager_config(
    tmp: Path, smtp_port: int, docs: list[dict[str, Any]], secrets: dict[str, str] | None = None
) -> Path:
    """The chart's Alertmanager config and templates; ``secrets``: "<name>/<key>" -> a local file."""
    [secret] = [
        d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "mlobs-alertmanager-config"
    ]
    data = dict(secret["stringData"])
    config = yaml.safe_load(data.pop("alertmanager.yaml"))
    templates = tmp / "templates"
    templates.mkdir()
    for name, text in data.items():
        (templates / name).write_text(text)
    config["global"]["smtp_smarthost"] = f"127.0.0.1:{smtp_port}"
    config["templates"] = [str(templates / "*.tmpl")]
    _secret_files(config, secrets or {})
    fast(config["route"])
    path = tmp / "alertmanager.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def prometheus_config(tmp: Path, exporter: str, alertmanager_port: int, docs: list[dict[str, Any]]) -> Path:
    rule_files = []
    for rule in (d for d in docs if d["kind"] == "PrometheusRule"):
        groups = rule["spec"]["groups"]
        for group in groups:
            group["interval"] = "1s"
        copy = tmp / f"{rule['metadata']['name']}.yaml"
        copy.write_text(yaml.safe_dump({"groups": groups}))
        rule_files.append(str(copy))
    assert len(rule_files) == len(list(ALERTING.glob("*-rules.yaml")))
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


Stack = Callable[..., dict[str, Any]]


@pytest.fixture
def stack(tmp_path: Path, forward_server) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    """Starts the stack with the chart rendered from ``values`` (and local files for its secrets)."""
    started: list[dict[str, Any]] = []

    def start(values: dict[str, Any], secrets: dict[str, str] | None = None) -> dict[str, Any]:
        docs = chart(values)
        smtp = SmtpSink()
        api = FakeKubeServer()
        fluentd = forward_server()
        exporter = Exporter(api.url, tmp_path / "home", fluentd.port, "--settle", "0.5")
        am = alertmanager(alertmanager_config(tmp_path, smtp.port, docs, secrets), tmp_path)
        prom = prometheus(prometheus_config(tmp_path, exporter.url, am.port, docs), tmp_path)
        parts = {
            "smtp": smtp,
            "api": api,
            "exporter": exporter,
            "am": am,
            "prom": prom,
            "tmp": tmp_path,
            "fluentd": fluentd,
        }
        started.append(parts)
        return parts

    try:
        yield start
    finally:
        for parts in started:
            for name in ("prom", "am"):
                parts[name].stop()
            parts["exporter"].stop()
            parts["api"].close()
            parts["smtp"].close()


def apply(api: FakeKubeServer, steps: list[k.Step]) -> None:
    for resource, _, obj in steps:
        api.kube.apply(resource, obj)


def emails(smtp: SmtpSink, status: str) -> list[Received]:
    return [m for m in smtp.messages if m.subject.startswith(f"[{status}]")]


UP = f'up{{job="{c.PROM_JOB_EXPORTER}"}} == 1'


def scraping(prom: Service) -> None:
    wait_for(prom.ready, 60, "Prometheus to be ready")
    wait_for(lambda: bool(query(prom, UP)), 60, "Prometheus to scrape the exporter")


def test_failed_runs_reach_an_inbox(stack: Stack) -> None:
    stack = stack({"alerting": {"runbookBaseUrl": RUNBOOKS}})
    smtp, api, prom = stack["smtp"], stack["api"], stack["prom"]
    exporter: Exporter = stack["exporter"]
    up = UP
    scraping(prom)

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
    for subject, run_id, reason, exit_code, step, pod, took in (
        (
            "[FIRING] MLPipelineRunFailed train/fit run oom-1: OOMKilled",
            "oom-1",
            "OOMKilled",
            "137",
            "fit",
            "train-fit-oom-1-0",
            "30s",
        ),
        (
            "[FIRING] MLPipelineRunFailed etl/load run bl-1: BackoffLimitExceeded",
            "bl-1",
            "BackoffLimitExceeded",
            "1",
            "load",
            "etl-load-bl-1-1",  # the last attempt
            "40s",
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
            f"Runbook:    {RUNBOOKS}/{c.RUNBOOK_PATTERN.format(alertname='MLPipelineRunFailed')}",
            "Error:      none recorded",  # k.oom_killed's and k.backoff_limit's pods say nothing
            "Namespace:  ml",
            f"Pod:        {pod}",
            f"Duration:   {took}",
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


# ---- the step's own words: the SDK's summary, through Kubernetes, to the messages -----------------------

DIVERGE = k.RunSpec("train", "diverge", "div-1")


def fail_in_its_own_words(api: FakeKubeServer, summary: str) -> float:
    """A Job whose pod fails with ``summary`` as its termination message; returns when it failed."""
    failed_at = time.time()
    api.kube.apply("jobs", k.job(DIVERGE, started=failed_at - 12, active=1))
    api.kube.apply("pods", failed_pod(DIVERGE, 0, summary, started=failed_at - 12, finished=failed_at))
    condition = ("Failed", "BackoffLimitExceeded", failed_at)
    api.kube.apply("jobs", k.job(DIVERGE, started=failed_at - 12, failed=1, condition=condition))
    return failed_at


class Posts:
    """An HTTP server on 127.0.0.1:0 that records every POST: (path, headers, JSON body)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], Any]] = []
        posts = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                posts.received.append((self.path, dict(self.headers), json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def at(self, path: str) -> list[tuple[dict[str, str], Any]]:
        return [(headers, body) for p, headers, body in self.received if p == path]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


@pytest.fixture
def posts() -> Iterator[Posts]:
    server = Posts()
    yield server
    server.close()


def test_a_failed_runs_own_words_reach_the_inbox_slack_and_a_webhook(
    stack: Stack, posts: Posts, tmp_path: Path
) -> None:
    summary = sdk_summary(tmp_path)  # what the SDK wrote to its termination message file
    line = "FloatingPointError: loss diverged at epoch 3 at <string>:5 in fit"
    assert summary.replace("\n ", "") == line
    secrets = {"mlobs-slack/url": tmp_path / "slack-url", "mlobs-hook/token": tmp_path / "hook-token"}
    secrets["mlobs-slack/url"].write_text(f"{posts.url}/slack")  # Slack's incoming webhook, stood in for
    secrets["mlobs-hook/token"].write_text("s3cret-token\n")
    values = {  # email, Slack and a webhook; no runbookBaseUrl (the default): no runbook link
        "slack": {"enabled": True, "webhookSecret": {"name": "mlobs-slack"}},
        "webhook": {"enabled": True, "url": f"{posts.url}/hook", "tokenSecret": {"name": "mlobs-hook"}},
    }
    parts = stack({"alerting": values}, {name: str(path) for name, path in secrets.items()})
    smtp: SmtpSink = parts["smtp"]
    scraping(parts["prom"])
    failed_at = fail_in_its_own_words(parts["api"], summary)
    wait_for(lambda: len(emails(smtp, "FIRING")) >= 1, 60, "the failure email")
    [message] = emails(smtp, "FIRING")
    seconds = message.at - failed_at
    print(f"\nfailure -> email with the step's error: {seconds:.1f} s")
    assert seconds <= 5.0, "the goal: the step's own error in the inbox within 5 s"
    assert message.subject == "[FIRING] MLPipelineRunFailed train/diverge run div-1: Error", "short"
    text, html = message.part("plain"), message.part("html")
    for wanted in (
        f"Error:      {line}",
        "Exit code:  1",
        "Namespace:  ml",
        "Pod:        train-diverge-div-1-0",
        "Duration:   12s",
    ):
        assert wanted in text, f"{wanted!r} missing from:\n{text}"
    assert "<code>FloatingPointError: loss diverged at epoch 3 at &lt;string&gt;:5 in fit</code>" in html
    assert "Runbook" not in text and "Runbook" not in html, "no runbook link without runbookBaseUrl"
    print("--- the email, as received (text/plain) ---\n" + text)

    # The webhook and Slack, from the same alert.
    wait_for(lambda: bool(posts.at("/hook") and posts.at("/slack")), 30, "the webhook's and Slack's posts")
    [(headers, hook)] = posts.at("/hook")
    assert headers["Authorization"] == "Bearer s3cret-token"
    assert (hook["version"], hook["status"], hook["receiver"]) == ("4", "firing", "mlobs-critical")
    [alert] = hook["alerts"]
    assert alert["labels"] == {
        "alertname": "MLPipelineRunFailed",
        "pipeline": "train",
        "step": "diverge",
        "severity": "critical",
        c.ALERT_LABEL_STACK: c.ALERT_STACK,
    }
    notes = alert["annotations"]
    assert notes["error"] == "FloatingPointError: loss diverged at epoch 3 at <string>:5 in fit"
    assert (notes["run_id"], notes["reason"], notes["pod"], notes["duration"]) == (
        "div-1",
        "Error",
        "train-diverge-div-1-0",
        "12s",
    )
    assert "runbook_url" not in notes
    [(_, slack)] = posts.at("/slack")
    [attachment] = slack["attachments"]
    assert attachment["title"] == "[FIRING] MLPipelineRunFailed train/diverge run div-1: Error"
    slack_text = attachment["text"]
    for wanted in (
        # Slack reads < and > as its markup: escaped
        "*Error:* FloatingPointError: loss diverged at epoch 3 at &lt;string&gt;:5 in fit",
        "*Run id:* div-1",
        "*Reason:* Error",
        "*Exit code:* 1",
        "*Namespace:* ml",
        "*Pod:* train-diverge-div-1-0",
        "*Duration:* 12s",
        f"<{GRAFANA}/d/{c.DASHBOARD_RUN_VIEW_UID}/?var-pipeline=train&var-step=diverge&var-run_id=div-1"
        "|Run view>",
    ):
        assert wanted in slack_text, f"{wanted!r} missing from:\n{slack_text}"
