"""make e2e's whole run (scripts/e2e.py) against answers in the real wire formats: InfluxDB's query API
(the stand-in of pipeline_sdk.testing, serving what the real demo records: tests/test_e2e.py's points),
Prometheus' and Grafana's JSON, Mailpit's search and messages."""

from __future__ import annotations

import base64
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline_sdk import contract as c
from pipeline_sdk.local_store import Point
from pipeline_sdk.testing.influx_fake import InfluxFake, InfluxServer

from .conftest import ROOT
from .test_e2e import demo_points, e2e, ended_of

TOKEN, GRAFANA_USER, GRAFANA_PASSWORD = "canned-token", "admin", "canned-password"
NOW = float(int(time.time()))
__all__ = ["demo_points"]  # the fixture, shared with tests/test_e2e.py

ERROR_LINE = (
    "Error:      FloatingPointError: training diverged at epoch 1: loss 1.2e+03 at /app/demo/train.py:117"
)
FEATURES_LINE = "Features:   tenure_months (wasserstein 1.98, threshold 0.1); "


def mail_text(subject: str, phrase: str) -> str:
    """The text body Alertmanager's email template gives the alert (alerting/templates/email.tmpl)."""
    if subject.startswith("[FIRING] MLModelDriftDetected"):
        return (
            "FIRING: churn-logreg 1: its serving data drifted from the baseline\n\n"
            f"Monitor demo-drift compared ... with baseline {phrase}, and the share of drifted features"
            f" reached its threshold.\n{FEATURES_LINE}\nSeverity:   warning\n"
        )
    error = ERROR_LINE if "demo-diverge" in phrase else "Error:      none recorded"
    return f"FIRING: a run failed\n\nPipeline:   ...\nRun id:     {phrase}\n{error}\nSeverity:   critical\n"


class Canned:
    """HTTP servers on 127.0.0.1: one answers as Prometheus, Grafana and Mailpit do, one as InfluxDB."""

    def __init__(self, points: list[Point]) -> None:
        self.down: set[str] = set()  # scrape jobs whose targets are down
        self.influx = InfluxServer(InfluxFake(lambda: points), token=TOKEN)
        # when each email was sent: 20 s after its run ended, 30 s after the monitor run
        self.mail_times = {
            "demo-diverge-1": ended_of(points, "demo-diverge-1") + 20,
            "demo-oom-1": ended_of(points, "demo-oom-1") + 20,
            f"demo-train-1:{e2e.BASELINE}": ended_of(points, "demo-drift-1") + 30,
        }
        self.mails: dict[str, str] = {}  # phrase -> subject of the emails found
        self.texts: dict[str, str] = {}  # phrase -> a text body other than the template's
        canned = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.reply(*canned.answer("GET", self.path, self.headers, b""))

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                self.reply(*canned.answer("POST", self.path, self.headers, body))

            def reply(self, status: int, ctype: str, data: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.influx.close()

    def answer(  # noqa: PLR0911 - a return per API it stands in for
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, str, bytes]:
        url = urllib.parse.urlsplit(path)
        query = urllib.parse.parse_qs(url.query)
        as_json = "application/json"
        if url.path == "/api/v1/targets":
            targets = [
                {
                    "labels": {"job": job},
                    "scrapeUrl": f"http://{job}:80/metrics",
                    "health": "down" if job in self.down else "up",
                    "lastError": "connection refused" if job in self.down else "",
                }
                for job in e2e.Settings().expected_jobs()
            ]
            return (
                200,
                as_json,
                json.dumps({"status": "success", "data": {"activeTargets": targets}}).encode(),
            )
        if url.path == "/api/v1/query":
            [jobs] = re.findall(r'^up\{job=~"(.+)"\}$', query["query"][0])
            result = [
                {"metric": {"__name__": "up", "job": job}, "value": [NOW, "0" if job in self.down else "1"]}
                for job in jobs.replace("\\\\", "\\").replace("\\-", "-").split("|")
            ]
            data = {"resultType": "vector", "result": result}
            return 200, as_json, json.dumps({"status": "success", "data": data}).encode()
        if url.path.startswith("/api/search") or url.path.startswith("/api/datasources/"):
            expected = base64.b64encode(f"{GRAFANA_USER}:{GRAFANA_PASSWORD}".encode()).decode()
            if headers.get("Authorization") != f"Basic {expected}":
                return 401, as_json, b'{"message": "Invalid username or password"}'
            if url.path == "/api/search":
                uids = [
                    json.loads(p.read_text())["uid"] for p in (ROOT / "dashboards" / "json").glob("*.json")
                ]
                return 200, as_json, json.dumps([{"uid": u, "type": "dash-db"} for u in uids]).encode()
            return 200, as_json, b'{"status": "OK", "message": "Data source is working"}'
        if url.path == "/api/v1/search":  # Mailpit
            [quoted] = query["query"]
            phrase = quoted.strip('"')
            if phrase.endswith(":train"):  # a baseline: the drift email names it
                subject = "[FIRING] MLModelDriftDetected"
            else:
                pipeline, step = (
                    ("demo-oom", "embed") if phrase.startswith("demo-oom") else ("demo-diverge", "fit")
                )
                subject = f"[FIRING] MLPipelineRunFailed {pipeline}/{step} run {phrase}: Error"
            sent = self.mail_times.get(phrase)
            if sent is None:
                return 200, as_json, json.dumps({"total": 0, "count": 0, "messages": []}).encode()
            created = (
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sent)) + f".{int(sent * 1000) % 1000:03d}Z"
            )
            self.mails[phrase] = subject
            messages = [{"ID": phrase, "Subject": subject, "Created": created}]
            return 200, as_json, json.dumps({"total": 1, "count": 1, "messages": messages}).encode()
        if url.path.startswith("/api/v1/message/"):  # Mailpit: one message
            phrase = urllib.parse.unquote(url.path.rsplit("/", 1)[1])
            subject = self.mails[phrase]
            text = self.texts.get(phrase, mail_text(subject, phrase))
            return 200, as_json, json.dumps({"ID": phrase, "Subject": subject, "Text": text}).encode()
        return 404, as_json, b'{"message": "not found"}'


@pytest.fixture
def canned(demo_points: list[Point]) -> Iterator[Canned]:
    server = Canned(demo_points)
    yield server
    server.close()


def make_e2e(canned: Canned, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOBS_")}
    for name in ("PROMETHEUS", "GRAFANA", "MAILPIT"):
        env[f"MLOBS_{name}_URL"] = canned.url
    env["MLOBS_INFLUXDB_URL"] = canned.influx.url
    env.update(
        MLOBS_E2E_INFLUXDB_TOKEN=TOKEN,
        MLOBS_E2E_GRAFANA_USER=GRAFANA_USER,
        MLOBS_E2E_GRAFANA_PASSWORD=GRAFANA_PASSWORD,
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "scripts/e2e.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done, time.monotonic() - started


def test_make_e2e_passes_on_a_healthy_stack(canned: Canned) -> None:
    done, _ = make_e2e(canned, "--timeout", "20", "--interval", "0.2")
    assert done.returncode == 0, done.stdout + done.stderr
    passed = [line for line in done.stdout.splitlines() if line.startswith("[PASS] ")]
    assert len(passed) == len(e2e.CHECKS)
    assert f"==> e2e: {len(e2e.CHECKS)} passed, 0 failed" in done.stdout
    assert "demo-train succeeded, demo-diverge failed (FloatingPointError), demo-oom OOMKilled" in done.stdout
    assert (
        "run demo-train-1: 5 params, 5 list metric loss, 2 simple metrics, 2 inputs and outputs, 6 log"
        in done.stdout
    )
    assert (
        "'[FIRING] MLPipelineRunFailed demo-diverge/fit run demo-diverge-1: Error' 20 s after the run ended,"
        " 'FloatingPointError: training diverged at epoch 1: loss 1.2e+'" in done.stdout
    )
    assert (
        "'[FIRING] MLModelDriftDetected' 30 s after monitor run demo-drift-1, naming tenure_months"
        in done.stdout
    )
    queries = canned.influx.fake.queries  # the read API's, through its InfluxDB backend
    assert any(f'r._measurement == "{c.RUN_RECORD.measurement}"' in q for q in queries)
    assert any(f'r._measurement == "{c.PROFILE.measurement}"' in q for q in queries)


def test_make_e2e_fails_on_a_drift_email_that_does_not_name_the_feature(canned: Canned) -> None:
    canned.texts["demo-train-1:train"] = mail_text("[FIRING] MLModelDriftDetected", "x").replace(
        FEATURES_LINE, ""
    )
    done, _ = make_e2e(canned, "--timeout", "20", "--interval", "0.2")
    assert done.returncode == 1
    [fail] = [line for line in done.stdout.splitlines() if line.startswith("[FAIL] ")]
    assert fail.startswith(
        "[FAIL] mailpit: the drift email within 2 minutes of the monitor run, naming the feature ("
    )
    assert "the drift email for demo-train-1:train does not name tenure_months: 'FIRING: churn-logreg" in fail
    assert f"==> e2e: {len(e2e.CHECKS) - 1} passed, 1 failed" in done.stdout


def test_make_e2e_fails_without_a_run_record_and_names_it(canned: Canned, demo_points: list[Point]) -> None:
    canned.influx.close()
    canned.influx = InfluxServer(
        InfluxFake(lambda: [p for p in demo_points if p.tags.get(c.TAG_RUN_ID) != "demo-oom-1"]), token=TOKEN
    )
    done, _ = make_e2e(canned, "--timeout", "3", "--interval", "0.2")
    assert done.returncode == 1
    failed = [line for line in done.stdout.splitlines() if line.startswith("    failed: ")]
    assert failed == [
        "    failed: influxdb: the demo runs ended as expected: no run of demo-oom in the last 6h",
        "    failed: mailpit: the OOM-killed run's email within 2 minutes: no failed run of demo-oom yet",
    ]


def test_make_e2e_fails_at_its_deadline_and_names_what_is_down(canned: Canned) -> None:
    canned.down = {c.PROM_JOB_FLUENTD}
    done, took = make_e2e(canned, "--timeout", "1.5", "--interval", "0.2")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert f"[wait] prometheus: every scrape target is up: {c.PROM_JOB_FLUENTD} http://" in done.stdout
    assert sum(1 for line in lines if line.startswith("[wait] prometheus")) == 1  # each reason once
    [fail] = [line for line in lines if line.startswith("[FAIL] ")]
    assert fail.startswith("[FAIL] prometheus: every scrape target is up (")
    assert fail.endswith("/metrics is down: connection refused")
    assert f"==> e2e: {len(e2e.CHECKS) - 1} passed, 1 failed" in done.stdout
    assert lines[-1].startswith("    failed: prometheus: every scrape target is up: mlobs-fluentd http://")
    assert took < 15  # the deadline is the whole run's


def test_the_up_series_of_our_jobs_must_be_1(canned: Canned) -> None:
    settings = e2e.Settings(prometheus=canned.url)
    assert e2e.check_targets(settings).ok
    assert e2e.up_series_not_one(settings, [c.PROM_JOB_EXPORTER, c.PROM_JOB_MODEL_API]) == []
    canned.down = {c.PROM_JOB_MODEL_API}
    assert e2e.up_series_not_one(settings, [c.PROM_JOB_EXPORTER, c.PROM_JOB_MODEL_API]) == [
        f"up of job {c.PROM_JOB_MODEL_API} is ['0']"
    ]


def test_the_overall_deadline_is_shared_by_the_checks() -> None:
    lines: list[str] = []
    never = [e2e.Check(f"never {i}", lambda s: e2e.Outcome(False, "not yet")) for i in range(3)]
    started = time.monotonic()
    results = e2e.run_checks(never, e2e.Settings(), timeout=0.6, interval=0.05, out=lines.append)
    assert time.monotonic() - started < 1.5  # not 3 x 0.6 s
    assert [outcome.ok for _, outcome in results] == [False, False, False]
    assert [line.split(" (")[0] for line in lines if line.startswith("[FAIL]")] == [
        "[FAIL] never 0",
        "[FAIL] never 1",
        "[FAIL] never 2",
    ]
