"""make e2e's whole run (scripts/e2e.py) against canned answers in the real wire formats: InfluxDB's
annotated CSV of what the demo records, Prometheus' and Grafana's JSON, Mailpit's messages."""

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
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline_sdk import contract as c

from .conftest import ROOT

# ---- scripts/e2e.py against canned answers in the real wire formats ------------------------------


def load_e2e() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("mlobs_e2e_for_demo", ROOT / "scripts" / "e2e.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


e2e = load_e2e()
TOKEN, GRAFANA_USER, GRAFANA_PASSWORD = "canned-token", "admin", "canned-password"
NOW = float(int(time.time()))  # whole seconds, as the canned Mailpit times are


def rows_of_the_demo() -> dict[str, list[dict[str, str]]]:
    """What InfluxDB holds after make demo, by measurement: tags and fields as CSV cells."""

    def ident(pipeline: str, step: str = "fit") -> dict[str, str]:
        return {c.TAG_RUN_ID: f"{pipeline}-1", c.TAG_PIPELINE: pipeline, c.TAG_STEP: step, c.TAG_ATTEMPT: "1"}

    train = ident("demo-train")
    ended = str(int((NOW - 60) * 1e9))
    return {
        c.RUN.measurement: [
            {**train, c.TAG_STATUS: "succeeded", c.FIELD_DURATION_MS: "1200.5"},
            {
                **ident("demo-diverge"),
                c.TAG_STATUS: "failed",
                c.FIELD_DURATION_MS: "300.0",
                c.FIELD_ERROR_TYPE: "FloatingPointError",
                c.FIELD_ERROR_MESSAGE: "training diverged at epoch 1: loss 1e+03, see below",
            },
        ],
        c.RUN_RECORD.measurement: [
            {
                **train,
                c.TAG_STATUS: "succeeded",
                c.TAG_REASON: "Completed",
                c.FIELD_EXIT_CODE: "0",
                c.FIELD_END_NS: ended,
            },
            {
                **ident("demo-diverge"),
                c.TAG_STATUS: "failed",
                c.TAG_REASON: "Error",
                c.FIELD_EXIT_CODE: "1",
                c.FIELD_END_NS: ended,
            },
            {
                **ident("demo-oom", "embed"),
                c.TAG_STATUS: "failed",
                c.TAG_REASON: "OOMKilled",
                c.FIELD_EXIT_CODE: "137",
                c.FIELD_END_NS: ended,
            },
        ],
        c.PARAM.measurement: [
            {**train, c.TAG_NAME: n, c.FIELD_VALUE: "1"} for n in ("epochs", "lr", "rows", "seed", "model")
        ],
        c.LIST_METRIC.measurement: [
            {**train, c.TAG_NAME: "loss", c.FIELD_VALUE: str(1 / (i + 1)), c.FIELD_INDEX: str(i)}
            for i in range(5)
        ],
        c.METRIC.measurement: [
            {**train, c.TAG_NAME: n, c.FIELD_VALUE: "0.8"} for n in ("val_accuracy", "train_loss")
        ],
        c.IO.measurement: [
            {**train, c.TAG_DIRECTION: "input", c.TAG_NAME: "dataset", c.FIELD_VALUE: '{"rows": 2000}'},
            {**train, c.TAG_DIRECTION: "output", c.TAG_NAME: "model", c.FIELD_VALUE: '{"bias": 0.1}'},
        ],
        c.LOG.measurement: [{**train, c.TAG_LEVEL: "INFO", c.FIELD_MESSAGE: f"epoch {i}"} for i in range(6)],
        c.API_REQUEST.measurement: [{c.TAG_SERVICE: "churn-api", c.FIELD_STATUS_CODE: "200"}] * 3,
        c.PREDICTION.measurement: [{c.TAG_SERVICE: "churn-api", c.FIELD_SCORE: "0.4"}] * 3,
    }


def annotated_csv(measurement: str, rows: list[dict[str, str]]) -> str:
    """InfluxDB's annotated CSV: one table per row (their columns differ), each with its annotations."""
    tables = []
    for i, row in enumerate(rows):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(NOW - 60 - i)) + f".{i:09d}Z"
        header = ["", "result", "table", "_time", "_measurement", *row]
        values = ["", "", str(i), stamp, measurement, *row.values()]
        kinds = ["#datatype", "string", "long", "dateTime:RFC3339", "string", *["string"] * len(row)]
        group = ["#group", "false", "false", "false", "true", *["false"] * len(row)]
        default = ["#default", "_result", *[""] * (len(header) - 2)]
        quoted = [f'"{v}"' if "," in v or '"' in v else v for v in values]
        tables.append(
            "\r\n".join(",".join(line) for line in (kinds, group, default, header, quoted)) + "\r\n"
        )
    return "\r\n".join(tables)


class Canned:
    """One HTTP server on 127.0.0.1 that answers as Prometheus, Grafana, Mailpit and InfluxDB do."""

    def __init__(self) -> None:
        self.down: set[str] = set()  # scrape jobs whose targets are down
        self.rows = rows_of_the_demo()
        self.queries: list[str] = []
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
            [phrase] = query["query"]
            run_id = phrase.strip('"')
            pipeline, step = (
                ("demo-oom", "embed") if run_id.startswith("demo-oom") else ("demo-diverge", "fit")
            )
            created = time.strftime("%Y-%m-%dT%H:%M:%S.123Z", time.gmtime(NOW - 40))
            subject = f"[FIRING] MLPipelineRunFailed {pipeline}/{step} run {run_id}: Error"
            messages = [{"ID": "m1", "Subject": subject, "Created": created}]
            return 200, as_json, json.dumps({"total": 1, "count": 1, "messages": messages}).encode()
        if url.path == "/api/v2/query" and method == "POST":
            if headers.get("Authorization") != f"Token {TOKEN}" or query.get("org") != ["mlobs"]:
                return 401, as_json, b'{"code": "unauthorized", "message": "unauthorized access"}'
            flux = json.loads(body)["query"]
            self.queries.append(flux)
            [measurement] = re.findall(r'r\._measurement == "([^"]+)"', flux)
            assert measurement in {s.measurement for s in c.STREAMS}, measurement
            equal = {k: v for k, v in re.findall(r'r\.(\w+) == "([^"]*)"', flux) if not k.startswith("_")}
            rows = [r for r in self.rows.get(measurement, []) if all(r.get(k) == v for k, v in equal.items())]
            if "limit(n: 1)" in flux:
                rows = rows[:1]
            return 200, "text/csv; charset=utf-8", annotated_csv(measurement, rows).encode()
        return 404, as_json, b'{"message": "not found"}'


@pytest.fixture
def canned() -> Iterator[Canned]:
    server = Canned()
    yield server
    server.close()


def make_e2e(canned: Canned, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOBS_")}
    for name in ("PROMETHEUS", "GRAFANA", "INFLUXDB", "MAILPIT"):
        env[f"MLOBS_{name}_URL"] = canned.url
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
    assert "==> e2e: 8 passed, 0 failed" in done.stdout
    assert "demo-train succeeded, demo-diverge failed (FloatingPointError), demo-oom OOMKilled" in done.stdout
    assert (
        "run demo-train-1: 5 params, 5 list metric loss, 2 simple metrics, 2 inputs and outputs, 6 log"
        in done.stdout
    )
    assert (
        "'[FIRING] MLPipelineRunFailed demo-diverge/fit run demo-diverge-1: Error' 20 s after" in done.stdout
    )
    assert any(f'r._measurement == "{c.RUN_RECORD.measurement}"' in q for q in canned.queries)


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
    assert "==> e2e: 7 passed, 1 failed" in done.stdout
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


def test_parse_csv_reads_annotated_csv_with_many_tables() -> None:
    rows = rows_of_the_demo()[c.RUN.measurement]
    parsed = e2e.parse_csv(annotated_csv(c.RUN.measurement, rows))
    assert [r[c.TAG_STATUS] for r in parsed] == ["succeeded", "failed"]
    assert parsed[1][c.FIELD_ERROR_MESSAGE] == "training diverged at epoch 1: loss 1e+03, see below"
    assert parsed[1]["_measurement"] == c.RUN.measurement and parsed[1]["table"] == "1"
    assert "#datatype" not in str(parsed)
    assert e2e.parse_csv("\r\n") == []
