"""scripts/e2e.py, the checks of ``make e2e``, tried against what can answer here.

* The scrape-target check runs against a real Prometheus scraping a real exporter
  and a refused port.
* InfluxDB, Grafana and Mailpit cannot run here.  Their stand-ins are HTTP servers
  on 127.0.0.1 that speak the same wire format (InfluxDB's query API with its CSV,
  Grafana's search and datasource health, Mailpit's search), and the InfluxDB one
  serves the points the real demo wrote to the local store, so the e2e queries are
  tried against what the SDK really records.
* Every Flux query the checks send names only what the contract defines.
"""

from __future__ import annotations

import base64
import http.server
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from demo import traffic
from pipeline_sdk import Client
from pipeline_sdk import contract as c
from pipeline_sdk.local_store import LocalStore, Point
from pipeline_sdk.testing.influx_fake import InfluxFake, InfluxServer

from .conftest import ROOT, wait_for
from .support import live_stack
from .test_read_influx import flux_contract_problems


def load_e2e() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mlobs_e2e", ROOT / "scripts" / "e2e.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["mlobs_e2e"] = module
    spec.loader.exec_module(module)
    return module


e2e = load_e2e()


# ---- a stand-in HTTP server ---------------------------------------------------------------------------


Handler = Callable[[str, str, dict[str, str], bytes], tuple[int, str, bytes]]


class Stub:
    """An HTTP server on 127.0.0.1 answering by ``handler(method, path, headers, body)``."""

    def __init__(self, handler: Handler) -> None:
        stub = self

        class _Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                stub.requests.append((self.command, self.path))
                status, ctype, data = handler(self.command, self.path, dict(self.headers.items()), body)
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                return

        self.requests: list[tuple[str, str]] = []
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def stubs() -> Iterator[Callable[[Handler], Stub]]:
    made: list[Stub] = []

    def make(handler: Handler) -> Stub:
        made.append(Stub(handler))
        return made[-1]

    yield make
    for stub in made:
        stub.close()


def as_json(value: Any, status: int = 200) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(value).encode()


# ---- InfluxDB's query API over the points the real demo wrote ------------------------------------------

TOKEN = "e2e-test-token"  # the stand-in server's own
SHIFT = traffic.Shift(e2e.SHIFTED, 2.0)  # as the chart's demo-traffic Job shifts it
TRAFFIC = [r for r in traffic.plan(120, 5, 11, SHIFT) if r.kind == "good"]  # what the API profiles


def serve_traffic(home: Path) -> None:
    """The demo model API's events for TRAFFIC, through the SDK: requests, predictions, serving profiles."""
    with Client(home=home) as client:
        recorder = client.service(e2e.SERVICE, salt="e2e-test")
        for request in TRAFFIC:
            recorder.log_request("/predict/{model}", "POST", 200, 3.5, user=request.user)
            recorder.log_prediction(request.model, 1, score=0.5, outcome="stay")
            recorder.log_features(request.model, 1, request.body)


@pytest.fixture(scope="module")
def demo_points(tmp_path_factory: pytest.TempPathFactory) -> list[Point]:
    """What the real demo writes (training, diverging, the model API, the drift monitor), and run records."""
    home = tmp_path_factory.mktemp("demo-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOBS_")}
    env["MLOBS_HOME"] = str(home)
    serve_traffic(home)
    monitor = ["-m", "demo.monitor", "--baseline", f"demo-train-1:{e2e.BASELINE}", "--min-rows", "1"]
    for args, run_id, code in (
        (["-m", "demo.train", "--epochs", "5", "--sleep", "0"], "demo-train-1", 0),
        (["-m", "demo.train", "--fail"], "demo-diverge-1", 1),
        ([*monitor, "--wait", "10"], "demo-drift-1", 0),
    ):
        identity = (
            {"MLOBS_PIPELINE": e2e.DRIFT_PIPELINE, "MLOBS_STEP": e2e.DRIFT_STEP} if "drift" in run_id else {}
        )
        done = subprocess.run(
            [sys.executable, *args],
            cwd=ROOT,
            env={**env, "MLOBS_RUN_ID": run_id, **identity},
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == code, done.stderr
    points = list(LocalStore(home / "mlobs.db").points())
    now = time.time_ns()
    for pipeline, step, status, reason, code in (
        ("demo-train", "fit", "succeeded", c.RunReason.COMPLETED, 0),
        ("demo-diverge", "fit", "failed", c.RunReason.ERROR, 1),
        ("demo-oom", "embed", "failed", c.RunReason.OOM_KILLED, 137),
    ):
        tags = {
            c.TAG_RUN_ID: f"{pipeline}-1",
            c.TAG_PIPELINE: pipeline,
            c.TAG_STEP: step,
            c.TAG_STATUS: status,
            c.TAG_REASON: str(reason),
            c.TAG_NAMESPACE: "mlobs",
        }
        ended = now - 300 * 10**9  # five minutes ago
        fields = {c.FIELD_EXIT_CODE: code, c.FIELD_START_NS: ended - 10**10, c.FIELD_END_NS: ended}
        points.append(Point(c.RUN_RECORD.measurement, ended, tags, fields))
    return points


@pytest.fixture
def influx(
    demo_points: list[Point], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., tuple[Any, list[str]]]]:
    """Settings pointing at the InfluxDB stand-in serving ``points`` (the demo's by default); its queries."""
    monkeypatch.setenv("MLOBS_E2E_INFLUXDB_TOKEN", TOKEN)
    servers: list[InfluxServer] = []

    def make(points: list[Point] | None = None) -> tuple[Any, list[str]]:
        served = demo_points if points is None else points
        servers.append(InfluxServer(InfluxFake(lambda: served), token=TOKEN))
        return e2e.Settings(influxdb=servers[-1].url), servers[-1].fake.queries

    yield make
    for server in servers:
        server.close()


def without(points: list[Point], run_id: str, measurement: str | None = None) -> list[Point]:
    """``points`` less ``run_id``'s (of ``measurement`` only, when given)."""
    return [
        p
        for p in points
        if p.tags.get(c.TAG_RUN_ID) != run_id or (measurement is not None and p.measurement != measurement)
    ]


def test_the_run_checks_pass_on_what_the_demo_records(influx: Callable[..., tuple[Any, list[str]]]) -> None:
    settings, queries = influx()
    outcome = e2e.check_runs(settings)
    assert outcome.ok, outcome.detail
    training = e2e.check_training_data(settings)
    assert training.ok, training.detail
    counts = (
        "5 params, 5 list metric loss, 2 simple metrics, 2 inputs and outputs, 6 log records,"
        " 1 baseline profile chunks"
    )
    assert training.detail == f"run demo-train-1: {counts}"  # logs: the run's first line, then 5 epochs
    good = len(TRAFFIC)
    assert e2e.check_model_api_data(settings).detail == (
        f"churn-api: {good} requests, {good} predictions, {good} rows of serving profiles"
    )
    assert len(queries) >= 10
    # the read API's queries, on the contract's bucket: make e2e reads InfluxDB itself, not through Grafana
    assert {q: flux_contract_problems(q) for q in queries if flux_contract_problems(q)} == {}
    measurements = {re.findall(r'r\._measurement == "([^"]+)"', q)[0] for q in queries}
    assert {c.RUN_RECORD.measurement, c.PROFILE.measurement, c.API_REQUEST.measurement} <= measurements


def test_every_query_make_e2e_sends_passes_libflux(
    stubs: Callable[[Handler], Stub], influx: Callable[..., tuple[Any, list[str]]]
) -> None:
    from .test_flux_frontend import invalid

    settings, queries = influx()
    settings.mailpit = stubs(mailpit_handler([])).url  # no email yet: the checks still ask InfluxDB
    for check in e2e.CHECKS:
        if check.name.startswith(("influxdb:", "mailpit:")):
            check.probe(settings)
    sent = {f"e2e query {i}": q for i, q in enumerate(dict.fromkeys(queries))}
    assert len(sent) >= 15
    assert invalid(sent) == {}
    assert invalid({"broken": sent["e2e query 0"].replace("|> group()", "|> groupp()")}) != {}


def test_the_run_checks_name_what_is_missing(
    influx: Callable[..., tuple[Any, list[str]]], demo_points: list[Point]
) -> None:
    without_oom = [p for p in demo_points if p.tags.get(c.TAG_PIPELINE) != "demo-oom"]
    outcome = e2e.check_runs(influx(without_oom)[0])
    assert (outcome.ok, outcome.detail) == (False, "no run of demo-oom in the last 6h")

    no_record = without(demo_points, "demo-train-1", c.RUN_RECORD.measurement)
    outcome = e2e.check_runs(influx(no_record)[0])
    assert outcome.detail == "demo-train run demo-train-1 has no run record from the exporter"

    no_logs = [p for p in demo_points if p.measurement != c.LOG.measurement]
    training = e2e.check_training_data(influx(no_logs)[0])
    assert (training.ok, training.detail.split(": ", 1)[1]) == (False, "0 log records (expected at least 5)")

    no_baseline = [
        p for p in demo_points if not (p.measurement == c.PROFILE.measurement and c.TAG_RUN_ID in p.tags)
    ]
    training = e2e.check_training_data(influx(no_baseline)[0])
    assert training.detail == "run demo-train-1: 0 baseline profile chunks (expected at least 1)"

    no_profiles = [p for p in demo_points if p.measurement != c.PROFILE.measurement]
    served = e2e.check_model_api_data(influx(no_profiles)[0])
    assert (served.ok, served.detail) == (
        False,
        f"churn-api: {len(TRAFFIC)} requests, {len(TRAFFIC)} predictions, 0 rows of serving profiles so far",
    )
    nothing = e2e.check_model_api_data(influx([])[0])
    assert (nothing.ok, nothing.detail.split(" in InfluxDB at ")[0]) == (
        False,
        "service 'churn-api' not found",
    )


def test_a_wrong_reason_or_error_is_named(
    influx: Callable[..., tuple[Any, list[str]]], demo_points: list[Point]
) -> None:
    evicted = [
        Point(p.measurement, p.time_ns, {**p.tags, c.TAG_REASON: "Evicted"}, p.fields)
        if p.measurement == c.RUN_RECORD.measurement and p.tags[c.TAG_RUN_ID] == "demo-oom-1"
        else p
        for p in demo_points
    ]
    assert e2e.check_runs(influx(evicted)[0]).detail == (
        "demo-oom run demo-oom-1's run record has reason 'Evicted', not 'OOMKilled'"
    )
    other_error = [
        Point(p.measurement, p.time_ns, p.tags, {**p.fields, c.FIELD_ERROR_TYPE: "ValueError"})
        if p.measurement == c.RUN.measurement and c.FIELD_ERROR_TYPE in p.fields
        else p
        for p in demo_points
    ]
    detail = e2e.check_runs(influx(other_error)[0]).detail
    assert detail.startswith(
        "demo-diverge run demo-diverge-1 failed with 'ValueError: training diverged at epoch"
    )
    assert detail.endswith("', not FloatingPointError")


def test_a_wrong_token_is_a_read_error(
    influx: Callable[..., tuple[Any, list[str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, _ = influx()
    monkeypatch.setenv("MLOBS_E2E_INFLUXDB_TOKEN", "wrong")
    with pytest.raises(e2e.ReadError, match=r"answered HTTP 401: unauthorized access"):
        e2e.check_runs(settings)
    lines: list[str] = []
    [(_, outcome)] = e2e.run_checks(
        [e2e.Check("runs", e2e.check_runs)], settings, timeout=0.2, interval=0.05, out=lines.append
    )
    assert not outcome.ok and "HTTP 401: unauthorized access" in outcome.detail
    assert "wrong" not in outcome.detail  # the token is never quoted


# ---- Prometheus, for real ---------------------------------------------------------------------------------


@pytest.mark.skipif(not live_stack.have_binaries(), reason="prometheus is installed by make test")
def test_the_target_check_against_a_real_prometheus(tmp_path: Path, refused_port: int) -> None:
    from prometheus_client import CollectorRegistry, Counter, start_http_server

    registry = CollectorRegistry()
    Counter("e2e_probe", "a metric to scrape", registry=registry).inc()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    port = server.server_address[1]
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - {{job_name: {c.PROM_JOB_EXPORTER}, static_configs: [{{targets: ['127.0.0.1:{port}']}}]}}\n"
        f"  - {{job_name: {c.PROM_JOB_FLUENTD},"
        f" static_configs: [{{targets: ['127.0.0.1:{refused_port}']}}]}}\n"
    )
    prometheus = live_stack.prometheus(config, tmp_path)

    def scraped(jobs: int) -> bool:
        targets = prometheus.get_json("/api/v1/targets", state="active")["data"]["activeTargets"]
        return len(targets) == jobs and all(t["health"] != "unknown" for t in targets)

    try:
        wait_for(lambda: scraped(2), 30, "both targets scraped once")
        good = e2e.Settings(prometheus=prometheus.url, jobs=(c.PROM_JOB_EXPORTER,))
        # the exporter's target is up, but Fluentd's is down: every active target must be up
        outcome = e2e.check_targets(good)
        assert not outcome.ok
        assert f"{c.PROM_JOB_FLUENTD} http://127.0.0.1:{refused_port}/metrics is down: " in outcome.detail
        assert "connection refused" in outcome.detail

        config.write_text(config.read_text().rsplit("\n  - ", 1)[0] + "\n")
        prometheus.proc.send_signal(signal.SIGHUP)  # reload: Fluentd's job is gone
        lines: list[str] = []
        [(_, outcome)] = e2e.run_checks(
            [e2e.Check("targets", e2e.check_targets)], good, timeout=30, interval=0.2, out=lines.append
        )
        assert (outcome.ok, outcome.detail) == (True, "1 targets of 1 jobs up")
        assert lines[-1].startswith("[PASS] targets (")
        missing = e2e.Settings(prometheus=prometheus.url, jobs=(c.PROM_JOB_EXPORTER, c.PROM_JOB_MODEL_API))
        outcome = e2e.check_targets(missing)
        assert (outcome.ok, outcome.detail) == (False, f"no target for jobs ['{c.PROM_JOB_MODEL_API}']")
    finally:
        prometheus.stop()
        server.shutdown()
        thread.join(5)


def test_the_default_jobs_cover_every_component() -> None:
    jobs = e2e.Settings(release="mlobs").expected_jobs()
    assert {c.PROM_JOB_EXPORTER, c.PROM_JOB_FLUENTD, c.PROM_JOB_MODEL_API, c.PROM_JOB_INFLUXDB} <= set(jobs)
    assert {
        "mlobs-prometheus",
        "mlobs-alertmanager",
        "mlobs-grafana",
        "kube-state-metrics",
        "kubelet",
    } <= set(jobs)


# ---- Grafana --------------------------------------------------------------------------------------------


def grafana_handler(uids: list[str], influx_health: dict[str, str]) -> Handler:
    expected = "Basic " + base64.b64encode(b"admin:s3cret").decode()

    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        if headers.get("Authorization") != expected:
            return as_json({"message": "Invalid username or password"}, 401)
        url = urllib.parse.urlsplit(path)
        if url.path == "/api/search":
            assert urllib.parse.parse_qs(url.query)["type"] == ["dash-db"]
            return as_json([{"uid": u, "title": u, "type": "dash-db"} for u in uids])
        if url.path == f"/api/datasources/uid/{c.DATASOURCE_PROMETHEUS_UID}/health":
            return as_json({"status": "OK", "message": "Successfully queried the Prometheus API."})
        if url.path == f"/api/datasources/uid/{c.DATASOURCE_INFLUXDB_UID}/health":
            return as_json(influx_health, 200 if influx_health["status"] == "OK" else 400)
        return as_json({"message": "Not found"}, 404)

    return handle


@pytest.fixture
def grafana_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOBS_E2E_GRAFANA_USER", "admin")
    monkeypatch.setenv("MLOBS_E2E_GRAFANA_PASSWORD", "s3cret")


@pytest.mark.usefixtures("grafana_user")
def test_the_grafana_checks(stubs: Callable[[Handler], Stub]) -> None:
    uids = sorted(e2e.dashboard_uids(ROOT / "dashboards" / "json"))
    assert len(uids) == 6
    ok = {"status": "OK", "message": "datasource is working. 3 buckets found"}
    fine = e2e.Settings(grafana=stubs(grafana_handler(uids, ok)).url)
    assert e2e.check_dashboards(fine) == e2e.Outcome(True, "all 6 dashboards listed")
    assert e2e.check_datasources(fine) == e2e.Outcome(True, "mlobs-prometheus, mlobs-influxdb healthy")

    broken = {"status": "ERROR", "message": "error reading InfluxDB: unauthorized access"}
    partial = e2e.Settings(grafana=stubs(grafana_handler(uids[1:], broken)).url)
    missing = e2e.check_dashboards(partial)
    assert not missing.ok and uids[0] in missing.detail
    sick = e2e.check_datasources(partial)
    assert not sick.ok
    assert "mlobs-influxdb" in sick.detail and "unauthorized access" in sick.detail


def test_grafana_credentials_are_checked(
    stubs: Callable[[Handler], Stub], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOBS_E2E_GRAFANA_USER", "admin")
    monkeypatch.setenv("MLOBS_E2E_GRAFANA_PASSWORD", "wrong")
    settings = e2e.Settings(grafana=stubs(grafana_handler([], {"status": "OK"})).url)
    with pytest.raises(e2e.ProbeError, match="HTTP 401"):
        e2e.check_dashboards(settings)


# ---- Mailpit ---------------------------------------------------------------------------------------------


def mailpit_handler(messages: list[dict[str, Any]]) -> Handler:
    """Mailpit's search and message APIs over ``messages`` (each with its text body in ``_body``)."""

    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        url = urllib.parse.urlsplit(path)
        if url.path.startswith("/api/v1/message/"):
            wanted = urllib.parse.unquote(url.path.rsplit("/", 1)[1])
            for m in messages:
                if m["ID"] == wanted:
                    return as_json({"ID": m["ID"], "Subject": m["Subject"], "Text": m["_body"], "HTML": ""})
            return as_json({"error": "message not found"}, 404)
        assert url.path == "/api/v1/search", url.path
        [phrase] = urllib.parse.parse_qs(url.query)["query"]
        assert phrase.startswith('"') and phrase.endswith('"')
        hits = [m for m in messages if phrase.strip('"') in m["Subject"] + m["_body"]]
        summaries = [{k: v for k, v in m.items() if k != "_body"} for m in hits]
        return as_json({"total": len(messages), "unread": 0, "count": len(hits), "messages": summaries})

    return handle


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"


def email(subject: str, created: float, body: str = "") -> dict[str, Any]:
    return {
        "ID": f"m-{created:.3f}",
        "Subject": subject,
        "Created": rfc3339(created),
        "Snippet": "",
        "_body": body,
    }


def test_the_email_checks(
    stubs: Callable[[Handler], Stub], influx: Callable[..., tuple[Any, list[str]]], demo_points: list[Point]
) -> None:
    [record] = [p for p in demo_points if p.tags.get(c.TAG_RUN_ID) == "demo-oom-1"]
    ended = record.fields[c.FIELD_END_NS] / 1e9
    check = e2e.email_check("demo-oom", "OOM-killed")

    def with_mail(*messages: dict[str, Any], points: list[Point] | None = None) -> Any:
        settings, _ = influx(points)
        settings.mailpit = stubs(mailpit_handler(list(messages))).url
        return check(settings)

    subject = "[FIRING] MLPipelineRunFailed demo-oom/embed run demo-oom-1: OOMKilled"
    on_time = with_mail(email(subject, ended + 25))
    assert on_time.ok and "25 s after the run ended" in on_time.detail
    # grouped into another run's email: named in the body only
    grouped = with_mail(
        email("[FIRING] MLPipelineRunFailed demo-oom/embed run demo-oom-0", ended + 30, "demo-oom-1")
    )
    assert grouped.ok
    late = with_mail(email(subject, ended + 150))
    assert (late.ok, late.final) == (False, True)
    assert late.detail == "the email for demo-oom-1 came 150 s after the OOM-killed run ended"
    other_alert = with_mail(
        email("[FIRING] MLPipelineStepOOMKilled demo-oom/embed run demo-oom-1", ended + 5)
    )
    assert (other_alert.ok, other_alert.final) == (False, True)  # the run ended 300 s ago
    assert re.fullmatch(
        r"no MLPipelineRunFailed email for the OOM-killed run demo-oom-1, 3\d\d s after it ended",
        other_alert.detail,
    )

    recent = time.time_ns()
    fresh = [
        Point(p.measurement, recent, p.tags, {**p.fields, c.FIELD_END_NS: recent})
        if p.tags.get(c.TAG_RUN_ID) == "demo-oom-1"
        else p
        for p in demo_points
    ]
    waiting = with_mail(points=fresh)
    assert (waiting.ok, waiting.final) == (False, False)
    assert waiting.detail.startswith("no email for demo-oom-1 yet (")


def ended_of(points: list[Point], run_id: str) -> float:
    """When ``run_id`` ended as the read API says: the SDK's end event, else the exporter's record."""
    ends = [
        p.time_ns for p in points if p.tags.get(c.TAG_RUN_ID) == run_id and p.measurement == c.RUN.measurement
    ]
    ends += [
        p.fields[c.FIELD_END_NS]
        for p in points
        if p.tags.get(c.TAG_RUN_ID) == run_id and p.measurement == c.RUN_RECORD.measurement and not ends
    ]
    return max(ends) // 1000 / 1e6  # microseconds, as the read API's datetimes hold


def test_the_failing_runs_email_must_name_its_error(
    stubs: Callable[[Handler], Stub], influx: Callable[..., tuple[Any, list[str]]], demo_points: list[Point]
) -> None:
    ended = ended_of(demo_points, "demo-diverge-1")
    check = e2e.email_check("demo-diverge", "failing", error="FloatingPointError: training diverged")
    subject = "[FIRING] MLPipelineRunFailed demo-diverge/fit run demo-diverge-1: Error"

    def with_body(body: str) -> Any:
        settings, _ = influx()
        settings.mailpit = stubs(mailpit_handler([email(subject, ended + 20, body)])).url
        return check(settings)

    error = (
        "Error:      FloatingPointError: training diverged at epoch 1: loss 2.1e+03 at /app/demo/train.py:117"
    )
    named = with_body(f"FIRING: a run failed\nRun id:     demo-diverge-1\n{error}\nNamespace:  mlobs\n")
    assert named.ok, named.detail
    assert named.detail.endswith(
        "20 s after the run ended, 'FloatingPointError: training diverged at epoch 1: loss 2.1e+'"
    )
    unnamed = with_body("FIRING: a run failed\nRun id:     demo-diverge-1\nError:      none recorded\n")
    assert (unnamed.ok, unnamed.final) == (False, True)
    assert unnamed.detail == (
        "the email for demo-diverge-1 has 'Error:      none recorded',"
        " not an error starting 'FloatingPointError: training diverged'"
    )
    assert with_body("FIRING: a run failed\n").detail.startswith(
        "the email for demo-diverge-1 has 'no Error: line'"
    )


DRIFT_SUBJECT = "[FIRING] MLModelDriftDetected"
DRIFT_BODY = (
    "FIRING: churn-logreg 1: its serving data drifted from the baseline\n\nMonitor demo-drift compared the"
    " serving data of model churn-logreg version 1 over the last 15m with baseline demo-train-1:train, and"
    " the share of drifted features reached its threshold.\n{features}Severity:   warning\n"
)


def test_the_drift_email_check(
    stubs: Callable[[Handler], Stub], influx: Callable[..., tuple[Any, list[str]]], demo_points: list[Point]
) -> None:
    ended = ended_of(demo_points, "demo-drift-1")

    def with_mail(*messages: dict[str, Any], points: list[Point] | None = None) -> Any:
        settings, _ = influx(points)
        settings.mailpit = stubs(mailpit_handler(list(messages))).url
        return e2e.check_drift_email(settings)

    features = "Features:   tenure_months (wasserstein 1.98, threshold 0.1); \n"
    named = with_mail(email(DRIFT_SUBJECT, ended + 40, DRIFT_BODY.format(features=features)))
    assert (named.ok, named.detail) == (
        True,
        f"'{DRIFT_SUBJECT}' 40 s after monitor run demo-drift-1, naming tenure_months",
    )
    unnamed = with_mail(email(DRIFT_SUBJECT, ended + 40, DRIFT_BODY.format(features="")))
    assert (unnamed.ok, unnamed.final) == (False, True)
    assert unnamed.detail.startswith(
        "the drift email for demo-train-1:train does not name tenure_months: 'FIRING:"
    )
    other = with_mail(
        email(
            DRIFT_SUBJECT,
            ended + 40,
            DRIFT_BODY.format(features="monthly_charges (").replace("demo-train-1", "demo-train-0"),
        )
    )
    assert (other.ok, other.final) == (False, False)  # another baseline's email: this one's is still to come
    assert other.detail.startswith("no email for demo-train-1:train yet (")
    late = with_mail(email(DRIFT_SUBJECT, ended + 121, DRIFT_BODY.format(features=features)))
    assert late.detail == "the email for demo-train-1:train came 121 s after the monitor run ended"

    no_monitor = with_mail(points=without(demo_points, "demo-drift-1"))
    assert (no_monitor.ok, no_monitor.detail) == (
        False,
        "no demo-drift monitor run against demo-train-1:train yet",
    )
    no_drift = [
        Point(p.measurement, p.time_ns, p.tags, {**p.fields, c.FIELD_VALUE: 0.0})
        if p.measurement == c.METRIC.measurement and p.tags.get(c.TAG_NAME) == "tenure_months.drifted"
        else p
        for p in demo_points
    ]
    quiet = with_mail(email(DRIFT_SUBJECT, ended + 40, DRIFT_BODY.format(features=features)), points=no_drift)
    assert (quiet.ok, quiet.final) == (False, True)
    assert quiet.detail.startswith("monitor run demo-drift-1 found no drift of the shifted tenure_months: {")


def test_parse_time() -> None:
    assert e2e.parse_time("2026-11-22T10:15:03.123456789Z") == pytest.approx(1795342503.123456789)
    assert e2e.parse_time("2026-11-22T11:15:03+01:00") == 1795342503.0
    with pytest.raises(e2e.ProbeError, match="not RFC 3339"):
        e2e.parse_time("22/11/2026")


# ---- the runner and the credentials ---------------------------------------------------------------------


def test_the_runner_polls_until_a_check_passes() -> None:
    calls = []

    def probe(settings: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise e2e.ProbeError("GET http://x: connection refused")
        return e2e.Outcome(len(calls) >= 3, f"{len(calls)} calls")

    lines: list[str] = []
    [(_, outcome)] = e2e.run_checks(
        [e2e.Check("eventually", probe)], e2e.Settings(), timeout=10, interval=0.01, out=lines.append
    )
    assert outcome.ok and len(calls) == 3
    assert lines[0] == "[wait] eventually: GET http://x: connection refused"
    assert lines[-1].startswith("[PASS] eventually (")


def test_the_runner_stops_at_the_deadline_and_on_a_final_failure() -> None:
    lines: list[str] = []
    never = e2e.Check("never", lambda s: e2e.Outcome(False, "not yet"))
    final = e2e.Check("final", lambda s: e2e.Outcome(False, "too late", final=True))
    started = time.monotonic()
    results = e2e.run_checks([never, final], e2e.Settings(), timeout=0.3, interval=0.05, out=lines.append)
    assert [o.ok for _, o in results] == [False, False]
    assert time.monotonic() - started < 5
    assert lines[-2].startswith("[FAIL] never (") and lines[-2].endswith("): not yet")
    assert lines[-1].startswith("[FAIL] final (0 s): too late")


def test_credentials_need_kubectl_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLOBS_E2E_INFLUXDB_TOKEN", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(
        SystemExit,
        match=r"kubectl is not installed: it reads Secret mlobs-influxdb-auth; or set MLOBS_E2E_INFLUXDB_\w+",
    ):
        e2e.influx_token(e2e.Settings())
    monkeypatch.setenv("MLOBS_E2E_INFLUXDB_TOKEN", "from-env")
    assert e2e.influx_token(e2e.Settings()) == "from-env"


def test_credentials_come_from_the_generated_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "kubectl"  # kubectl's answer for `get secret -o jsonpath`: base64 of the key
    fake.write_text(
        "#!/bin/sh\n"
        'printf "%s\\n" "$@" > "$(dirname "$0")/argv"\n'
        'if [ "$5" = "missing" ]; then\n'
        "  echo 'Error from server (NotFound): secrets \"missing\" not found' >&2; exit 1\n"
        "fi\n"
        f"printf %s {base64.b64encode(b'tok-123').decode()}\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.delenv("MLOBS_E2E_INFLUXDB_TOKEN", raising=False)
    settings = e2e.Settings(namespace="ml")
    assert e2e.influx_token(settings) == "tok-123"
    assert (tmp_path / "argv").read_text().split() == [
        "-n",
        "ml",
        "get",
        "secret",
        "mlobs-influxdb-auth",
        "-o",
        "jsonpath={.data.admin-token}",
    ]
    with pytest.raises(SystemExit, match=r"cannot read key k of Secret ml/missing: .*NotFound.*make up"):
        e2e.secret_value(settings, "UNSET_VAR_FOR_TEST", "missing", "k")


def test_make_e2e_names_an_unreachable_cluster(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MLOBS_E2E_INFLUXDB_TOKEN": "t",
        "MLOBS_E2E_GRAFANA_USER": "u",
        "MLOBS_E2E_GRAFANA_PASSWORD": "p",
    }
    port = "1"  # nothing listens on port 1
    urls = [f"--{n}=http://127.0.0.1:{port}" for n in ("prometheus", "grafana", "influxdb", "mailpit")]
    done = subprocess.run(
        [sys.executable, "scripts/e2e.py", *urls, "--timeout", "0.2", "--interval", "0.1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "[FAIL] prometheus: every scrape target is up" in done.stdout
    assert "Connection refused" in done.stdout or "connection refused" in done.stdout
    assert f"==> e2e: 0 passed, {len(e2e.CHECKS)} failed" in done.stdout
    assert len(e2e.CHECKS) == 9


def test_the_e2e_expectations_match_the_demo_the_chart_runs() -> None:
    from .test_chart import objects

    jobs = {
        j["metadata"]["labels"].get("mlobs.io/pipeline"): j
        for j in objects("01-kind-demo-values.yaml", "Job")
    }
    assert {e2e.TRAIN, e2e.DIVERGE, e2e.OOM} <= set(jobs)
    [train] = jobs[e2e.TRAIN]["spec"]["template"]["spec"]["containers"]
    assert train["command"][train["command"].index("--epochs") + 1] == str(e2e.TRAIN_EPOCHS)
    [api] = [
        d
        for d in objects("01-kind-demo-values.yaml", "Deployment")
        if d["metadata"]["name"].endswith("model-api")
    ]
    assert api["spec"]["template"]["metadata"]["labels"]["mlobs.io/service"] == e2e.SERVICE
    # make demo's drift monitor run: its step, the baseline it checks, the feature the traffic shifts
    [monitor] = jobs[e2e.DRIFT_PIPELINE]["spec"]["template"]["spec"]["containers"]
    labels = jobs[e2e.DRIFT_PIPELINE]["metadata"]["labels"]
    assert labels["mlobs.io/step"] == e2e.DRIFT_STEP
    assert monitor["command"][monitor["command"].index("--baseline") + 1] == f"demo-train-ci1:{e2e.BASELINE}"
    assert e2e.SHIFTED in monitor["command"][monitor["command"].index("--features") + 1].split(",")
    [sender] = [
        j for j in objects("01-kind-demo-values.yaml", "Job") if j["metadata"]["name"] == "demo-traffic-ci1"
    ]
    [container] = sender["spec"]["template"]["spec"]["containers"]
    shift = container["command"][container["command"].index("--shift") + 1]
    assert traffic.shift_arg(shift) == SHIFT
