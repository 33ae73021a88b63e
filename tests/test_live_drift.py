"""Drifted serving data reaches an inbox: a drift monitor's capture, live.

A training run logs a baseline profile and a model API logs its features (the SDK's local store,
as tests/test_drift_monitor.py records them); ``drift.Monitor(...).capture()`` compares them and
pushes the gauges to Debian's real Pushgateway.  A real Prometheus scrapes it (``honor_labels``)
and runs the chart's PrometheusRules (rendered by Helm's engine from alerting/, the drift rules
among them); a real Alertmanager runs the chart's configuration and templates and mails a real
SMTP server (aiosmtpd).  As in the failed-run live test (tests/test_live_alerting.py) only the
intervals are shortened: 1 s scrape, 1 s rule evaluation (the rule groups' ``interval``) and 1 s
``group_wait``/``group_interval``.  ``MLModelDriftDetected`` has ``for: 0m``, so no rule changes.

Asserted: a capture of data with one feature shifted by half a standard deviation puts one email
in the inbox within 5 s (the seconds are printed) naming the model, its version and the drifted
feature; a capture of unshifted data sends nothing while Prometheus evaluates the rules at least
three times with the pushed series in hand.  The Pushgateway starts empty (no persistence
file), which the stack checks before any capture.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import pipeline_sdk
from pipeline_sdk import Client
from pipeline_sdk import contract as c
from pipeline_sdk.drift.monitor import Monitor  # not exported as drift.Monitor (yet)
from pipeline_sdk.read import ReadClient
from pipeline_sdk.service import ServiceRecorder
from tests.conftest import wait_for
from tests.support.live_stack import (
    Received,
    Service,
    SmtpSink,
    alertmanager,
    have_binaries,
    have_pushgateway,
    prometheus,
    pushgateway,
)
from tests.test_live_alerting import alertmanager_config, chart, prometheus_config, query

pytestmark = pytest.mark.skipif(
    not (have_binaries() and have_pushgateway()),
    reason="Prometheus/Alertmanager/Pushgateway not installed: `make test` installs them",
)

ROWS = 2000  # per profile: above 1,000, so the default test is the normed Wasserstein distance
STD = 10.0
ALERT = "MLModelDriftDetected"
DRIFT_GROUP = "mlobs-drift"  # the rule group of alerting/drift-rules.yaml
SCRAPE_JOB = "pushgateway"  # our scrape job; with honor_labels the pushed job="mlobs-drift" is kept


def record(home: Path, model: str, shift: float) -> None:
    """A baseline of ``age`` and ``income`` (run train-<model>, profile train); serving: age + ``shift``."""
    rng = np.random.default_rng(7)
    with Client(home=home) as client:
        with pipeline_sdk.run("train", "fit", run_id=f"train-{model}", client=client) as run:
            run.log_profile("train", {"age": rng.normal(40, STD, ROWS), "income": rng.normal(100, 20, ROWS)})
        recorder = ServiceRecorder(client, f"{model}-api", key="k" * 32, profile_interval=3600)
        ages, incomes = rng.normal(40 + shift, STD, ROWS), rng.normal(100, 20, ROWS)
        for age, income in zip(ages, incomes, strict=True):
            recorder.log_features(model, 1, {"age": age, "income": income})
        recorder.close()
        assert client.flush(10)


def monitor(home: Path, model: str) -> Monitor:
    """A monitor of both features: one drifted feature of two is a share of 0.5, dataset drift."""
    return Monitor(
        model=model,
        version=1,
        baseline=(f"train-{model}", "train"),
        client=ReadClient(home=home),
        name=f"{model}-hourly",
        schedule_seconds=3600,
    )


@dataclass
class Stack:
    smtp: SmtpSink
    gateway: Service
    am: Service
    prom: Service

    def since(self, moment: float) -> list[Received]:
        return [m for m in self.smtp.messages if m.at >= moment]


def scrape_the_pushgateway(path: Path, gateway: Service) -> None:
    """The failed-run test's Prometheus config, its one scrape job pointed at the Pushgateway."""
    config = yaml.safe_load(path.read_text())
    target = gateway.url.removeprefix("http://")
    config["scrape_configs"] = [
        {"job_name": SCRAPE_JOB, "honor_labels": True, "static_configs": [{"targets": [target]}]}
    ]
    path.write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("live-drift")
    docs = chart({})
    smtp = SmtpSink()
    started: list[Service] = []
    try:
        started.append(gateway := pushgateway(tmp))
        with urllib.request.urlopen(gateway.url + "/metrics", timeout=10) as resp:
            assert c.PROM_DRIFT_DETECTED not in resp.read().decode(), "the Pushgateway started with groups"
        started.append(am := alertmanager(alertmanager_config(tmp, smtp.port, docs), tmp))
        config = prometheus_config(tmp, gateway.url, am.port, docs)
        scrape_the_pushgateway(config, gateway)
        started.append(prom := prometheus(config, tmp))
        wait_for(prom.ready, 60, "Prometheus to be ready")
        up = f'up{{job="{SCRAPE_JOB}"}} == 1'
        wait_for(lambda: bool(query(prom, up)), 60, "Prometheus to scrape the Pushgateway")
        yield Stack(smtp, gateway, am, prom)
    finally:
        for service in reversed(started):
            service.stop()
        smtp.close()


def last_evaluation(prom: Service) -> float:
    """When Prometheus last evaluated the drift rules (its rules API)."""
    groups = prom.get_json("/api/v1/rules")["data"]["groups"]
    [group] = [g for g in groups if g["name"] == DRIFT_GROUP]
    return datetime.fromisoformat(group["lastEvaluation"]).timestamp()


def alert_samples(prom: Service, model: str, seconds: int) -> float:
    """How many evaluations of the last ``seconds`` had the drift alert of ``model`` (pending or firing)."""
    result = query(prom, f'count_over_time(ALERTS{{alertname="{ALERT}",model="{model}"}}[{seconds}s])')
    return sum(float(r["value"][1]) for r in result)


def am_alerts(am: Service, model: str) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = am.get_json("/api/v2/alerts", filter=f'model="{model}"')
    return alerts


DRIFTED, QUIET = "churn", "fraud"  # the models of the two captures


@dataclass
class DriftEmail:
    message: Received
    seconds: float  # from just before capture() to the email's arrival


@pytest.fixture(scope="module")
def drift_email(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> DriftEmail:
    """A capture of serving data whose age moved by half a standard deviation, and its email."""
    tmp = tmp_path_factory.mktemp("drifted")
    record(tmp / "serving", DRIFTED, shift=0.5 * STD)
    drift_monitor = monitor(tmp / "serving", DRIFTED)
    report = drift_monitor.compare()
    assert (report.drifted, report.dataset_drift) == (["age"], True)
    captured_at = time.time()
    with Client(home=tmp / "runs") as runs:
        drift_monitor.capture(stack.gateway.url, run_client=runs)
    wait_for(lambda: bool(stack.since(captured_at)), 30, "the drift email")
    [message] = stack.since(captured_at)
    seconds = message.at - captured_at
    print(f"\ncapture -> drift email: {seconds:.2f} s (1 s scrape, 1 s evaluation, 1 s group_wait)")
    print("--- the drift email, as received (text/plain) ---\n" + message.part("plain"))
    return DriftEmail(message, seconds)


def test_drifted_serving_data_is_in_the_inbox_within_5_s(stack: Stack, drift_email: DriftEmail) -> None:
    assert drift_email.seconds <= 5.0, "the goal: drifted data in the inbox within 5 s"
    message = drift_email.message
    assert message.subject == f"[FIRING] {ALERT}"
    text = re.sub(r"\s+", " ", message.part("plain"))
    assert f"FIRING: {DRIFTED} 1: its serving data drifted from the baseline" in text
    assert f"model {DRIFTED} version 1 over the last 1h with baseline train-{DRIFTED}:train" in text
    [alert] = am_alerts(stack.am, DRIFTED)
    features = alert["annotations"]["features"]
    assert re.fullmatch(r"age \(wasserstein 0\.\d+, threshold 0\.1\); ", features), features
    labels = {k: alert["labels"][k] for k in ("model", "version", "monitor", "baseline", "window")}
    assert labels == {
        "model": DRIFTED,
        "version": "1",
        "monitor": f"{DRIFTED}-hourly",
        "baseline": f"train-{DRIFTED}:train",
        "window": "1h",
    }
    assert alert_samples(stack.prom, DRIFTED, 10) >= 1  # the quiet test's check, seeing this alert


def test_the_drift_email_names_the_drifted_feature(drift_email: DriftEmail) -> None:
    text = drift_email.message.part("plain").replace("\r\n", "\n")  # SMTP's line ends
    assert re.search(r"^Model: +" + DRIFTED + r" version 1$", text, re.M), text
    assert re.search(r"^Drifted: +age \(wasserstein 0\.\d+, threshold 0\.1\); $", text, re.M), text
    assert re.search(rf"^Baseline: +train-{DRIFTED}:train$", text, re.M)
    assert re.search(r"^Window: +1h$", text, re.M)
    assert f"/d/{c.DASHBOARD_MODEL_DRIFT_UID}/?var-model={DRIFTED}&var-version=1" in text
    assert "income" not in text  # it did not drift


def test_unshifted_serving_data_sends_nothing(stack: Stack, tmp_path: Path) -> None:
    record(tmp_path / "serving", QUIET, shift=0.0)
    drift_monitor = monitor(tmp_path / "serving", QUIET)
    captured_at = time.time()
    with Client(home=tmp_path / "runs") as runs:
        report = drift_monitor.capture(stack.gateway.url, run_client=runs)
    assert (report.drifted, report.dataset_drift) == ([], False)
    pushed = f'{c.PROM_DRIFT_DETECTED}{{job="{c.PROM_JOB_DRIFT}",model="{QUIET}",version="1"}} == 0'
    wait_for(lambda: bool(query(stack.prom, pushed)), 30, "the pushed gauges in Prometheus")
    seen_at = time.time()
    # Three evaluations at 1 s with the series in hand; group_wait is 1 s, so an email would be out.
    wait_for(
        lambda: last_evaluation(stack.prom) > seen_at + 3, 30, "three more evaluations of the drift rules"
    )
    window = int(time.time() - captured_at) + 2
    assert alert_samples(stack.prom, QUIET, window) == 0
    assert am_alerts(stack.am, QUIET) == []
    assert stack.since(captured_at) == []
    assert not any(QUIET in m.part("plain") for m in stack.smtp.messages)
