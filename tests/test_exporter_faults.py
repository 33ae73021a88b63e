"""The pipeline exporter under hostile input: malformed objects, strange watch errors,
label floods, slow and idle HTTP clients, and RBAC held to the API calls it makes.

The exporter runs in-process (``ExporterApp``: the same wiring as ``python -m
exporters.pipeline_exporter``) against the fake API server, which speaks the real
wire format; the HTTP limits are also tested on the exporter run as a process.

Long but one concern, the exporter's fault matrix, in sections: malformed objects and
watch errors, label floods, the chart's exporter values, RBAC, HTTP clients.
"""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import helm_python
import pytest
import yaml
from kubernetes import client as k8s
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporters.pipeline_exporter.app import HTTP_WORKERS, ExporterApp
from exporters.pipeline_exporter.collectors import ExporterCollector, ExporterStats, RunCollector
from exporters.pipeline_exporter.config import ConfigError, ExporterConfig, SeriesLimits, Thresholds
from exporters.pipeline_exporter.figures import DURATION_BUCKETS, FinishedRun
from exporters.pipeline_exporter.server import HttpServer
from exporters.pipeline_exporter.tracker import RunTracker
from pipeline_sdk import contract as c
from pipeline_sdk.ratelog import RateLimitedLog
from pipeline_sdk.testing import kube_objects as k
from pipeline_sdk.testing.kube_fake import FakeKubeServer
from tests.conftest import ROOT, wait_for
from tests.support.exporter_process import Exporter
from tests.test_model_api import EXPOSITIONS, exposed

T0 = 1_795_000_000.0
DAY = 86400.0
CORE = ROOT / "charts" / "mlobs-core"


class Records:
    def __init__(self) -> None:
        self.sent: list[FinishedRun] = []

    def send(self, record: FinishedRun) -> None:
        self.sent.append(record)


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture
def api() -> Iterator[FakeKubeServer]:
    server = FakeKubeServer()
    yield server
    server.close()


class Running:
    """An ExporterApp started on 127.0.0.1:0, its main loop on a thread."""

    def __init__(self, app: ExporterApp) -> None:
        self.app = app
        self.stop = threading.Event()
        app.start()
        self.loop = threading.Thread(target=app.run, args=(self.stop, 0.05), daemon=True)
        self.loop.start()
        self.url = f"http://127.0.0.1:{app.port}"

    def close(self) -> None:
        if not self.stop.is_set():
            self.stop.set()
            self.loop.join(10)
            self.app.close()

    def value(self, name: str, **labels: str) -> float | None:
        return self.app.registry.get_sample_value(name, labels)


@pytest.fixture
def start_app(api: FakeKubeServer) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(config: ExporterConfig | None = None, **kw: Any) -> Running:
        kw.setdefault("records", Records())
        kw.setdefault("settle", 0.1)
        kw.setdefault("backoff", (0.02, 0.2))
        client = k8s.ApiClient(k8s.Configuration(host=api.url))
        app = ExporterApp(config or ExporterConfig(), client, host="127.0.0.1", port=0, **kw)
        running = Running(app)
        started.append(running)
        return running

    yield start
    for running in started:
        running.close()


def runs(
    running: Running, status: str, reason: str, pipeline: str = "train", step: str = "fit"
) -> float | None:
    return running.value(c.PROM_RUNS_TOTAL, pipeline=pipeline, step=step, status=status, reason=reason)


def errors(running: Running, name: str) -> dict[str, float | None]:
    return {r: running.value(name, resource=r) for r in ("jobs", "pods")}


# ---- malformed objects ----------------------------------------------------------------------------

RUN = k.RunSpec("train", "fit", "tmpl")
POD_RUNNING = k.pod(RUN, 0, "Running", started=T0, bare=True)
POD_SUCCEEDED = k.pod(RUN, 0, "Succeeded", started=T0, terminated=("Completed", 0, T0 + 10), bare=True)
POD_OOM = k.pod(RUN, 0, "Failed", started=T0, terminated=("OOMKilled", 137, T0 + 20), bare=True)
JOB_COMPLETE = k.job(RUN, started=T0, succeeded=1, condition=("Complete", None, T0 + 30))
JOB_DEADLINE = k.job(RUN, started=T0, failed=1, condition=("Failed", "DeadlineExceeded", T0 + 40))


def bad(resource: str, i: int) -> Any:
    """The i-th malformed object of ``resource``, cycling through every shape."""
    shapes = sorted(k.MALFORMED_POD_SHAPES if resource == "pods" else k.MALFORMED_JOB_SHAPES)
    good = k.variant(POD_OOM if resource == "pods" else JOB_COMPLETE, f"bad-{resource}-{i}")
    return k.malformed(resource, shapes[i % len(shapes)], good)


def test_every_malformed_shape_is_refused_by_the_tracker_naming_the_field() -> None:
    """Each shape is an error of its own (not silently read as something else)."""
    from exporters.pipeline_exporter.kube import MalformedObject

    tracker = RunTracker()
    for resource, shapes, good, handler in (
        ("pods", k.MALFORMED_POD_SHAPES, POD_OOM, tracker.on_pod),
        ("jobs", k.MALFORMED_JOB_SHAPES, JOB_COMPLETE, tracker.on_job),
    ):
        for shape in shapes:
            with pytest.raises(MalformedObject) as err:
                handler("ADDED", k.malformed(resource, shape, good), None)
            assert re.match(r"^[\w.\[\]/-]+: expected ", str(err.value)), (shape, str(err.value))
    assert tracker.finished_total == 0 and tracker.snapshot().tracked == 0, "nothing half-applied"
    with pytest.raises(MalformedObject, match=r"^metadata\.labels: expected a mapping, got list$"):
        tracker.on_pod("ADDED", k.malformed("pods", "labels a list", POD_OOM), None)
    with pytest.raises(MalformedObject, match=r"^spec\.backoffLimit: expected a whole number, got str$"):
        tracker.on_job("ADDED", k.malformed("jobs", "backoffLimit a string", JOB_COMPLETE), None)
    with pytest.raises(
        MalformedObject,
        match=r"^status\.containerStatuses\[0\]\.state\.terminated\.finishedAt: expected an RFC 3339 time",
    ):
        tracker.on_pod("ADDED", k.malformed("pods", "finishedAt not a time", POD_OOM), None)


def test_a_thousand_malformed_objects_among_ten_thousand_good_ones(
    api: FakeKubeServer, start_app: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    """500 malformed objects in the initial lists and 500 in the watch streams, mixed with
    10,000 good objects (7,500 runs): every run is counted once, every bad object once."""
    caplog.set_level(logging.WARNING, logger="mlobs.exporter")
    # The lists: 2,500 running pods and 500 malformed objects (250 jobs, 250 pods).
    running_pods = [k.variant(POD_RUNNING, f"long-{i}") for i in range(2500)]
    for pod in running_pods:
        api.kube.apply("pods", pod)
    for i in range(500):
        resource = "pods" if i % 2 else "jobs"
        api.kube.apply_raw(resource, bad(resource, i))
    records = Records()
    app = start_app(records=records)
    wait_for(lambda: get(app.url + "/readyz")[0] == 200, 20, "both lists")
    assert errors(app, c.PROM_EXPORTER_OBJECT_ERRORS) == {"jobs": 250, "pods": 250}
    assert app.value(c.PROM_RUNS_IN_PROGRESS, pipeline="train", step="fit") == 2500

    # The streams: 7,500 good objects, a malformed one after every 15th.
    good: list[tuple[str, dict[str, Any]]] = []
    for i, pod in enumerate(running_pods):
        done = k.variant(POD_SUCCEEDED, pod["metadata"]["name"])
        good.append(("pods", done))
        good.append(("jobs", k.variant(JOB_COMPLETE, f"job-ok-{i}")))
        good.append(("pods" if i % 2 else "jobs", k.variant(POD_OOM if i % 2 else JOB_DEADLINE, f"f-{i}")))
    for i, (resource, obj) in enumerate(good):
        api.kube.apply(resource, obj)
        if i % 15 == 14:
            api.kube.apply_raw(("pods", "jobs")[i % 2], bad(("pods", "jobs")[i % 2], i))

    def counted() -> float:
        return sum(runs(app, s.value, r.value) or 0 for s, r in c.RUN_OUTCOMES)

    wait_for(lambda: counted() == 7500, 60, "7,500 runs")
    assert runs(app, "succeeded", "Completed") == 5000
    assert runs(app, "failed", "OOMKilled") == 1250
    assert runs(app, "failed", "DeadlineExceeded") == 1250
    assert app.value(c.PROM_POD_FAILURES, pipeline="train", step="fit", reason="OOMKilled") == 1250
    assert app.value(c.PROM_RUNS_IN_PROGRESS, pipeline="train", step="fit") == 0
    assert errors(app, c.PROM_EXPORTER_OBJECT_ERRORS) == {"jobs": 500, "pods": 500}
    assert errors(app, c.PROM_EXPORTER_WATCH_ERRORS) == {"jobs": 0, "pods": 0}
    assert errors(app, c.PROM_EXPORTER_RELISTS) == {"jobs": 1, "pods": 1}, "no replay, no relist"
    assert len(records.sent) == 7500
    assert get(app.url + "/readyz") == (200, "ok\n")
    assert get(app.url + "/healthz") == (200, "ok\n")
    assert all(w.is_alive() for w in app.app.watchers) and len(app.app.watchers) == 2
    warnings = [r for r in caplog.records if r.getMessage().startswith("skipped a malformed")]
    assert len(warnings) == 2, "rate-limited: one line a minute per resource"
    assert {w.getMessage().split()[3] for w in warnings} == {"job", "pod"}


def test_a_malformed_object_is_logged_by_name_and_its_version_is_passed(
    api: FakeKubeServer, start_app: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mlobs.exporter")
    app = start_app(watch_timeout=30)
    wait_for(lambda: get(app.url + "/readyz")[0] == 200, 20, "the lists")
    api.kube.apply_raw("pods", k.malformed("pods", "labels a list", k.variant(POD_OOM, "bad-1")))
    bad_version = api.kube.version
    api.kube.apply("pods", k.variant(POD_OOM, "ok-1"))
    wait_for(lambda: runs(app, "failed", "OOMKilled") == 1, 10, "the run after the bad object")
    [line] = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert line == (
        f"skipped a malformed pod ml/bad-1 (resourceVersion {bad_version}): "
        "metadata.labels: expected a mapping, got list"
    )
    watches = [
        parse_qs(urlparse(p).query) for m, p in api.kube.requests if "watch=true" in p and "/pods" in p
    ]
    assert [w["resourceVersion"] for w in watches] == [[str(bad_version - 1)]], "one watch: no replay"


@pytest.mark.parametrize(
    ("event", "watch_errors", "relists"),
    [
        ({"type": "ERROR", "object": "boom"}, 1, 1),
        ({"type": "ERROR", "object": None}, 1, 1),
        ({"type": "ERROR"}, 1, 1),
        ({"type": "ERROR", "object": {"kind": "Status", "status": "Failure"}}, 1, 1),
        ({"type": "ERROR", "object": {"kind": "Status", "code": "500", "message": "etcd"}}, 1, 1),
        ({"type": "ERROR", "object": {"kind": "Status", "code": [500]}}, 1, 1),
        ({"type": "ERROR", "object": {"kind": "Status", "code": "410"}}, 0, 2),
        ({"type": "ERROR", "object": {"kind": "Status", "reason": "Expired"}}, 0, 2),
        (b"{not json", 1, 1),
    ],
    ids=[
        "string",
        "null",
        "absent",
        "no code",
        "string code",
        "list code",
        "410 string",
        "Expired",
        "not json",
    ],
)
def test_an_error_event_of_any_shape_is_counted_and_the_watch_goes_on(
    api: FakeKubeServer, start_app: Callable[..., Running], event: Any, watch_errors: int, relists: int
) -> None:
    app = start_app()
    wait_for(lambda: get(app.url + "/readyz")[0] == 200, 20, "the lists")
    api.kube.send_event("pods", event)
    wait_for(
        lambda: (
            (app.value(c.PROM_EXPORTER_WATCH_ERRORS, resource="pods") or 0) >= watch_errors
            and (app.value(c.PROM_EXPORTER_RELISTS, resource="pods") or 0) >= relists
        ),
        10,
        "the error to be handled",
    )
    api.kube.apply("pods", k.variant(POD_OOM, "after"))
    wait_for(lambda: runs(app, "failed", "OOMKilled") == 1, 10, "the run after the error")
    assert errors(app, c.PROM_EXPORTER_WATCH_ERRORS) == {"jobs": 0, "pods": watch_errors}
    assert errors(app, c.PROM_EXPORTER_RELISTS) == {"jobs": 1, "pods": relists}
    assert errors(app, c.PROM_EXPORTER_OBJECT_ERRORS) == {"jobs": 0, "pods": 0}
    assert all(w.is_alive() for w in app.app.watchers)
    wait_for(lambda: get(app.url + "/readyz")[0] == 200, 10, "readiness again")


@pytest.mark.parametrize("event", [[], "ADDED", {"type": "SURPRISE", "object": {}}, {"object": {}}])
def test_an_event_that_is_not_an_event_is_an_object_error(
    api: FakeKubeServer, start_app: Callable[..., Running], event: Any
) -> None:
    app = start_app()
    wait_for(lambda: get(app.url + "/readyz")[0] == 200, 20, "the lists")
    api.kube.send_event("jobs", event)
    api.kube.apply("jobs", k.variant(JOB_COMPLETE, "after"))
    wait_for(lambda: runs(app, "succeeded", "Completed") == 1, 10, "the run after the odd event")
    assert errors(app, c.PROM_EXPORTER_OBJECT_ERRORS) == {"jobs": 1, "pods": 0}
    assert errors(app, c.PROM_EXPORTER_WATCH_ERRORS) == {"jobs": 0, "pods": 0}


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"kind": "PodList", "metadata": {"resourceVersion": "200"}, "items": {"a": 1}},
        {"kind": "PodList", "metadata": {}, "items": []},
    ],
    ids=["not a mapping", "items a mapping", "no resourceVersion"],
)
def test_a_list_of_the_wrong_shape_is_a_watch_error_and_listed_again(
    api: FakeKubeServer, start_app: Callable[..., Running], body: Any
) -> None:
    api.kube.odd_lists["pods"].append(body)
    api.kube.apply("pods", k.variant(POD_RUNNING, "listed"))
    app = start_app()
    wait_for(lambda: get(app.url + "/readyz")[0] == 200, 20, "the lists")
    assert errors(app, c.PROM_EXPORTER_WATCH_ERRORS) == {"jobs": 0, "pods": 1}
    assert errors(app, c.PROM_EXPORTER_RELISTS) == {"jobs": 1, "pods": 1}, "the odd list is not a list"
    assert errors(app, c.PROM_EXPORTER_OBJECT_ERRORS) == {"jobs": 0, "pods": 0}, "made at 0"
    assert app.value(c.PROM_RUNS_IN_PROGRESS, pipeline="train", step="fit") == 1


def test_readiness_drops_while_the_api_fails_and_recovers(
    api: FakeKubeServer, start_app: Callable[..., Running]
) -> None:
    app = start_app()
    wait_for(lambda: get(app.url + "/readyz")[0] == 200, 20, "the lists")
    api.kube.fail_requests = 10**6
    api.kube.compact()  # the watches end (410) and every new request fails
    not_ready = (503, "not ready: a watch has not listed yet, or is failing\n")
    wait_for(lambda: get(app.url + "/readyz") == not_ready, 10, "not ready")
    assert get(app.url + "/healthz") == (200, "ok\n"), "alive: the threads retry"
    failed = lambda: sum(v or 0 for v in errors(app, c.PROM_EXPORTER_WATCH_ERRORS).values())  # noqa: E731
    wait_for(lambda: failed() >= 2, 10, "both watches to fail and retry")
    api.kube.fail_requests = 0
    wait_for(lambda: get(app.url + "/readyz")[0] == 200, 10, "ready again")
    assert sum(v or 0 for v in errors(app, c.PROM_EXPORTER_WATCH_ERRORS).values()) >= 2
    assert all(w.is_alive() for w in app.app.watchers)


def test_healthz_fails_when_a_thread_died(api: FakeKubeServer, start_app: Callable[..., Running]) -> None:
    app = start_app()
    wait_for(lambda: get(app.url + "/readyz")[0] == 200, 20, "the lists")
    app.app.watchers[0].stop()
    api.kube.apply("jobs", k.variant(JOB_COMPLETE, "wake-up"))  # the watch ends at its next event
    wait_for(lambda: not app.app.watchers[0].is_alive(), 10, "the jobs watcher to end")
    assert get(app.url + "/healthz") == (503, "a watch or HTTP thread died\n")


def test_rate_limited_log_counts_what_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    limited = RateLimitedLog(logging.getLogger("mlobs.exporter"), interval=60.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="mlobs.exporter")
    assert limited.warning("pods", "first %s", "a") is True
    assert limited.warning("pods", "second %s", "b") is False
    assert limited.warning("jobs", "other key") is True
    now[0] += 59.999
    assert limited.warning("pods", "third") is False
    now[0] += 0.001
    assert limited.warning("pods", "fourth") is True
    assert [r.getMessage() for r in caplog.records] == [
        "first a",
        "other key",
        "fourth (2 similar messages suppressed)",
    ]
    with pytest.raises(ValueError, match="interval: expected a positive number of seconds, got 0"):
        RateLimitedLog(logging.getLogger("x"), interval=0)


# ---- label floods -----------------------------------------------------------------------------------


def tracker_for(series: SeriesLimits, now: float = T0 + 100) -> tuple[RunTracker, CollectorRegistry, Records]:
    records = Records()
    tracker = RunTracker(records=records, series=series, clock=lambda: now)
    registry = CollectorRegistry()
    registry.register(RunCollector(tracker))
    registry.register(ExporterCollector(ExporterStats(), tracker))
    return tracker, registry, records


def sample_count(registry: CollectorRegistry, *, parse: bool = False) -> int:
    """Samples in the exposition: one per line that is not a comment (the text format's rule),
    or, with ``parse``, as prometheus_client's parser reads them (slow: for small registries)."""
    text = generate_latest(registry).decode()
    if parse:
        return sum(len(f.samples) for f in text_string_to_metric_families(text))
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def sample_values(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of one collection (get_sample_value collects again for each call)."""
    return {(s.name, frozenset(s.labels.items())): s.value for m in registry.collect() for s in m.samples}


def flood_job(i: int, namespace: str = "ml", pipeline: str | None = None) -> dict[str, Any]:
    """A finished Job of its own pipeline/step pair (shallow copies: the tracker only reads)."""
    labels = {c.LABEL_PIPELINE: pipeline or f"p-{i}", c.LABEL_STEP: f"s-{i % 7}", c.LABEL_RUN_ID: f"r-{i}"}
    meta = {**JOB_COMPLETE["metadata"], "name": f"flood-{i}", "namespace": namespace, "labels": labels}
    spec = JOB_COMPLETE["spec"]
    template = {**spec["template"], "metadata": {"labels": labels}}
    return {**JOB_COMPLETE, "metadata": meta, "spec": {**spec, "template": template}}


# Series of one pipeline/step with one succeeded run: every outcome and failure reason at 0
# or more, one duration histogram (its buckets, +Inf, _count and _sum), in progress, the last
# success/failure/failure-start gauges and the two configured thresholds.
SERIES_PER_PAIR = len(c.RUN_OUTCOMES) + len(c.FAILURE_REASONS) + len(DURATION_BUCKETS) + 3 + 1 + 3 + 2


def test_a_flood_of_ten_thousand_pairs_stays_under_the_cap(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mlobs.exporter")
    _, registry_empty, _ = tracker_for(SeriesLimits())
    fixed = sample_count(registry_empty)
    one, registry_one, _ = tracker_for(SeriesLimits())
    one.on_job("ADDED", flood_job(0))
    assert sample_count(registry_one) - fixed == SERIES_PER_PAIR == 38
    assert sample_count(registry_one, parse=True) == sample_count(registry_one), (
        "the line count is the parser's"
    )

    tracker, registry, records = tracker_for(SeriesLimits())  # the default cap: 2,000 pairs
    for i in range(10_000):
        tracker.on_job("ADDED", flood_job(i))
    assert sample_count(registry) == fixed + 2000 * SERIES_PER_PAIR
    values = sample_values(registry)
    assert values[(c.PROM_EXPORTER_TRACKED_STEPS, frozenset())] == 2000
    assert values[(c.PROM_EXPORTER_REFUSED_STEPS, frozenset())] == 8000
    assert len(records.sent) == 10_000, "refused pairs still get their run records"
    assert values[(c.PROM_RUNS_TOTAL, frozenset(_succeeded("p-1999", "s-4").items()))] == 1
    assert (c.PROM_RUNS_TOTAL, frozenset(_succeeded("p-2000", "s-5").items())) not in values
    [line] = [r.getMessage() for r in caplog.records if "not tracking" in r.getMessage()]
    assert line == (
        "not tracking pipeline/step p-2000/s-5 (namespace ml): 2000 pairs tracked, the "
        "max_pipeline_steps cap; its runs get run records but no metrics"
    )


def test_a_flood_through_the_watch_leaves_every_thread_alive(
    api: FakeKubeServer, start_app: Callable[..., Running]
) -> None:
    """3,000 distinct pairs streamed to a running exporter capped at 1,000."""
    records = Records()
    app = start_app(ExporterConfig(series=SeriesLimits(max_pipeline_steps=1000)), records=records)
    wait_for(lambda: get(app.url + "/readyz")[0] == 200, 20, "the lists")
    for i in range(3000):
        api.kube.apply("jobs", flood_job(i))
    wait_for(lambda: len(records.sent) == 3000, 30, "3,000 run records")
    assert app.value(c.PROM_EXPORTER_TRACKED_STEPS) == 1000
    assert app.value(c.PROM_EXPORTER_REFUSED_STEPS) == 2000
    assert (
        sample_count(app.app.registry)
        == sample_count(tracker_for(SeriesLimits())[1]) + 1000 * SERIES_PER_PAIR
    )
    assert get(app.url + "/healthz") == (200, "ok\n") and get(app.url + "/readyz") == (200, "ok\n")
    assert all(w.is_alive() for w in app.app.watchers) and app.app.server.alive()


def _succeeded(pipeline: str, step: str) -> dict[str, str]:
    return {"pipeline": pipeline, "step": step, "status": "succeeded", "reason": "Completed"}


def test_the_cap_boundary_and_runs_of_a_tracked_pair() -> None:
    tracker, registry, _ = tracker_for(SeriesLimits(max_pipeline_steps=3))
    for i in range(3):  # n - 1, n: admitted
        tracker.on_job("ADDED", flood_job(i))
    assert registry.get_sample_value(c.PROM_EXPORTER_REFUSED_STEPS) == 0
    tracker.on_job("ADDED", flood_job(3))  # n + 1: refused
    assert registry.get_sample_value(c.PROM_EXPORTER_REFUSED_STEPS) == 1
    again = flood_job(10, pipeline="p-0")  # i % 7 == 3: a new step of a tracked pipeline is a new pair
    tracker.on_job("ADDED", again)
    assert registry.get_sample_value(c.PROM_EXPORTER_REFUSED_STEPS) == 2
    same = flood_job(7, pipeline="p-0")  # step s-0: the tracked pair p-0/s-0
    tracker.on_job("ADDED", same)
    assert registry.get_sample_value(c.PROM_RUNS_TOTAL, _succeeded("p-0", "s-0")) == 2
    assert registry.get_sample_value(c.PROM_EXPORTER_TRACKED_STEPS) == 3
    assert registry.get_sample_value(c.PROM_EXPORTER_REFUSED_STEPS) == 2


def test_idle_pairs_expire_seven_days_after_their_last_run_was_counted() -> None:
    counted_at = T0 + 100  # the tracker's clock; the run itself ended at T0 + 30
    tracker, registry, _ = tracker_for(SeriesLimits(), now=counted_at)
    tracker.on_job("ADDED", flood_job(0))
    running = k.variant(POD_RUNNING, "still-running")
    running["metadata"]["labels"][c.LABEL_PIPELINE] = "busy"
    tracker.on_pod("ADDED", running)
    for now, kept in (
        (counted_at + 7 * DAY - 1, True),
        (counted_at + 7 * DAY, True),
        (counted_at + 7 * DAY + 1, False),
    ):
        tracker.tick(now)
        value = registry.get_sample_value(c.PROM_RUNS_TOTAL, _succeeded("p-0", "s-0"))
        assert value == (1 if kept else None), now - counted_at
        assert registry.get_sample_value(c.PROM_EXPORTER_TRACKED_STEPS) == (2 if kept else 1)
    tracker.tick(counted_at + 365 * DAY)
    assert registry.get_sample_value(c.PROM_RUNS_IN_PROGRESS, {"pipeline": "busy", "step": "fit"}) == 1, (
        "a pair with a run in progress never expires"
    )
    # it comes back, from 0, with its next run
    tracker.on_job("ADDED", flood_job(7, pipeline="p-0"))
    assert registry.get_sample_value(c.PROM_RUNS_TOTAL, _succeeded("p-0", "s-0")) == 1
    failed = {"pipeline": "p-0", "step": "s-0", "status": "failed", "reason": "OOMKilled"}
    assert registry.get_sample_value(c.PROM_RUNS_TOTAL, failed) == 0


def test_a_run_listed_at_start_ages_from_its_end() -> None:
    """A pipeline retired long ago does not get its series back for a week at each restart."""
    tracker, registry, _ = tracker_for(SeriesLimits(), now=T0 + 30 + 7 * DAY + 1)
    tracker.on_job("ADDED", flood_job(0), float("inf"))  # the initial list: ended at T0 + 30
    tracker.on_job("ADDED", flood_job(1), float("inf"))
    assert registry.get_sample_value(c.PROM_LAST_SUCCESS, {"pipeline": "p-0", "step": "s-0"}) == T0 + 30
    tracker.tick(T0 + 30 + 7 * DAY)
    assert registry.get_sample_value(c.PROM_EXPORTER_TRACKED_STEPS) == 2
    tracker.tick(T0 + 30 + 7 * DAY + 1)
    assert registry.get_sample_value(c.PROM_EXPORTER_TRACKED_STEPS) == 0
    assert registry.get_sample_value(c.PROM_LAST_SUCCESS, {"pipeline": "p-0", "step": "s-0"}) is None


def test_a_short_idle_expiry_from_config() -> None:
    config = ExporterConfig.parse({"idle_expiry": "2d", "defaults": {"success_window": "1d"}})
    tracker, registry, _ = tracker_for(config.series, now=T0 + 100)
    tracker.on_job("ADDED", flood_job(0))
    tracker.tick(T0 + 100 + 2 * DAY)
    assert registry.get_sample_value(c.PROM_EXPORTER_TRACKED_STEPS) == 1
    tracker.tick(T0 + 100 + 2 * DAY + 1)
    assert registry.get_sample_value(c.PROM_EXPORTER_TRACKED_STEPS) == 0


def test_allow_lists_of_namespaces_and_pipelines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mlobs.exporter")
    series = SeriesLimits(allowed_namespaces=("ml-*", "batch"), allowed_pipelines=("train-*",))
    tracker, registry, records = tracker_for(series)
    tracker.on_job("ADDED", flood_job(0, "ml-a", "train-x"))  # both match
    tracker.on_job("ADDED", flood_job(1, "batch", "train-y"))
    tracker.on_job("ADDED", flood_job(2, "other", "train-x"))  # namespace refused
    tracker.on_job("ADDED", flood_job(3, "ml-a", "etl"))  # pipeline refused
    tracker.on_job("ADDED", flood_job(4, "ML-A", "train-x"))  # globs are case-sensitive
    tracker.on_job("ADDED", flood_job(5, "batch-2", "Train-x"))
    assert registry.get_sample_value(c.PROM_EXPORTER_TRACKED_STEPS) == 2
    assert registry.get_sample_value(c.PROM_EXPORTER_REFUSED_STEPS) == 4
    assert registry.get_sample_value(c.PROM_RUNS_TOTAL, _succeeded("train-x", "s-0")) == 1
    assert registry.get_sample_value(c.PROM_RUNS_TOTAL, _succeeded("etl", "s-3")) is None
    assert len(records.sent) == 6
    [line] = [r.getMessage() for r in caplog.records if "not tracking" in r.getMessage()]
    assert line == (
        "not tracking pipeline/step train-x/s-2 (namespace other): the namespace is not in "
        "allowed_namespaces; its runs get run records but no metrics"
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"max_pipeline_steps": 0},
            "config.max_pipeline_steps: expected a whole number of at least 1, got 0",
        ),
        (
            {"max_pipeline_steps": True},
            "config.max_pipeline_steps: expected a whole number of at least 1, got True",
        ),
        (
            {"max_pipeline_steps": "2000"},
            "config.max_pipeline_steps: expected a whole number of at least 1, got '2000'",
        ),
        (
            {"idle_expiry": "a week"},
            "config.idle_expiry: expected a duration such as 30m or 6h, got 'a week'",
        ),
        (
            {"idle_expiry": "1d"},
            "config.idle_expiry: 86400 s is not longer than the longest success_window (93600 s): a "
            "pipeline would stop being alerted on before MLPipelineNoRecentSuccess could fire",
        ),
        (
            {"allowed_namespaces": "ml-*"},
            "config.allowed_namespaces: expected a list of glob patterns, got 'ml-*'",
        ),
        (
            {"allowed_pipelines": ["train-*", ""]},
            "config.allowed_pipelines[1]: expected a non-empty glob pattern, got ''",
        ),
        ({"allowed_pipelines": [3]}, "config.allowed_pipelines[0]: expected a non-empty glob pattern, got 3"),
    ],
)
def test_series_config_errors_name_the_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        ExporterConfig.parse(raw)
    assert str(err.value) == message


def test_series_limits_refuse_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_pipeline_steps: expected a whole number of at least 1, got -1"):
        SeriesLimits(max_pipeline_steps=-1)
    with pytest.raises(ValueError, match="idle_expiry: expected a positive number of seconds, got 0"):
        SeriesLimits(idle_expiry=0)


# ---- the chart's exporter values ------------------------------------------------------------------


def chart_docs(values: dict[str, Any]) -> list[dict[str, Any]]:
    out = helm_python.Chart.load(CORE).render(values, name="mlobs", namespace="mlobs", is_install=True)
    return [d for text in out.values() for d in yaml.safe_load_all(text) if d]


def exporter_config(values: dict[str, Any]) -> ExporterConfig:
    [cm] = [
        d for d in chart_docs(values) if d["kind"] == "ConfigMap" and "exporter.yaml" in d.get("data", {})
    ]
    return ExporterConfig.parse(yaml.safe_load(cm["data"]["exporter.yaml"]), "exporter.yaml")


def test_the_chart_renders_the_series_limits_into_the_exporter_config() -> None:
    assert exporter_config({}).series == SeriesLimits() == SeriesLimits(2000, 7 * DAY, (), ())
    values = {
        "exporter": {
            "maxPipelineSteps": 50,
            "idleExpiry": "3d",
            "allowedNamespaces": ["ml-*"],
            "allowedPipelines": ["train-*", "etl"],
        }
    }
    assert exporter_config(values).series == SeriesLimits(50, 3 * DAY, ("ml-*",), ("train-*", "etl"))


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"maxPipelineSteps": 0}, "maxPipelineSteps"),
        ({"idleExpiry": "a week"}, "idleExpiry"),
        ({"allowedPipelines": [""]}, "allowedPipelines"),
        ({"allowedNamespace": ["ml"]}, "allowedNamespace"),
    ],
)
def test_the_values_schema_refuses_bad_series_limits(values: dict[str, Any], key: str) -> None:
    result = helm_python.lint(CORE, {"exporter": values}, strict=True)
    assert any(key in e for e in result["errors"]), result["errors"]


# ---- RBAC: exactly the calls the exporter makes ----------------------------------------------------

RULES = [
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
]


def exporter_roles(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The exporter's (Cluster)Roles; the node forwarders' own is checked in tests/test_chart_fluentd.py."""
    roles = [d for d in chart_docs(values) if d["kind"] in ("ClusterRole", "Role")]
    return [d for d in roles if not d["metadata"]["name"].endswith("-fluentd-forwarder")]


def test_the_exporter_roles_are_exactly_list_and_watch() -> None:
    cluster = exporter_roles({})
    assert [(d["kind"], d["rules"]) for d in cluster] == [("ClusterRole", RULES)]
    namespaced = exporter_roles({"exporter": {"namespaces": ["ml-a", "ml-b"]}})
    assert [(d["kind"], d["metadata"]["namespace"], d["rules"]) for d in namespaced] == [
        ("Role", "ml-a", RULES),
        ("Role", "ml-b", RULES),
    ]


_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def api_call(method: str, path: str) -> tuple[str, str, str, str | None]:
    """(API group, resource, verb, namespace) of a request, by the Kubernetes authorizer's rules."""
    url = urlparse(path)
    parts = [p for p in url.path.split("/") if p]
    group, rest = ("", parts[2:]) if parts[:1] == ["api"] else (parts[1], parts[3:])
    namespace = None
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    named = len(rest) > 1
    if method == "GET":
        watching = parse_qs(url.query).get("watch") == ["true"]
        verb = "watch" if watching else ("get" if named else "list")
    else:
        verb = _VERBS[method]
    return group, rest[0], verb, namespace


def test_api_call_names_verbs_as_the_authorizer_does() -> None:
    """The checker below can fail: a get, a create or a namespaced call reads as one."""
    assert api_call("GET", "/api/v1/pods?labelSelector=x") == ("", "pods", "list", None)
    assert api_call("GET", "/apis/batch/v1/jobs?watch=true") == ("batch", "jobs", "watch", None)
    assert api_call("GET", "/api/v1/namespaces/ml/pods/p-1") == ("", "pods", "get", "ml")
    assert api_call("POST", "/apis/batch/v1/namespaces/ml/jobs") == ("batch", "jobs", "create", "ml")


def calls_made(api: FakeKubeServer, start_app: Callable[..., Running], config: ExporterConfig) -> set[Any]:
    """Every API call of an exporter that lists, watches, relists after 410 and retries an error."""
    app = start_app(config)
    wait_for(lambda: get(app.url + "/readyz")[0] == 200, 20, "the lists")
    relisted = sum(v or 0 for v in errors(app, c.PROM_EXPORTER_RELISTS).values())
    api.kube.compact()
    wait_for(
        lambda: sum(v or 0 for v in errors(app, c.PROM_EXPORTER_RELISTS).values()) >= relisted + 2,
        10,
        "relists",
    )
    api.kube.fail_requests = 2
    api.kube.send_event("pods", {"type": "ERROR", "object": {"code": 500}})
    wait_for(lambda: api.kube.fail_requests == 0, 10, "the failing requests")
    wait_for(lambda: get(app.url + "/readyz")[0] == 200, 10, "recovery")
    app.close()
    return {api_call(m, p) for m, p in api.kube.requests}


def test_the_roles_grant_exactly_the_calls_the_exporter_makes(
    api: FakeKubeServer, start_app: Callable[..., Running]
) -> None:
    granted = {
        (g, r, v)
        for rule in RULES
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    calls = calls_made(api, start_app, ExporterConfig())
    assert {(g, r, v) for g, r, v, _ in calls} == granted
    assert {ns for *_, ns in calls} == {None}, "cluster-wide: a ClusterRole"
    api.kube.requests.clear()
    calls = calls_made(api, start_app, ExporterConfig(namespaces=("ml-a", "ml-b")))
    assert {(g, r, v) for g, r, v, _ in calls} == granted
    assert {ns for *_, ns in calls} == {"ml-a", "ml-b"}, "namespaced: a Role in each"


# ---- HTTP: slow, idle and greedy clients ----------------------------------------------------------


class Server:
    """An HttpServer with small limits, on 127.0.0.1:0."""

    def __init__(self, **kw: Any) -> None:
        self.registry = CollectorRegistry()
        self.server = HttpServer("127.0.0.1", 0, self.registry, lambda: True, lambda: True, **kw)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.server.port}"

    def connect(self, data: bytes = b"") -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.server.port), timeout=5)
        if data:
            sock.sendall(data)
        return sock


@pytest.fixture
def server() -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def make(**kw: Any) -> Server:
        made.append(Server(**kw))
        return made[-1]

    yield make
    for s in made:
        s.server.close()


def closed(sock: socket.socket) -> bool:
    """The peer has closed (EOF or reset); False while it is open and silent."""
    sock.setblocking(False)
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def reply(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_half_sent_request_is_closed_at_the_timeout(server: Callable[..., Server]) -> None:
    s = server(timeout=0.5)
    start = time.monotonic()
    sock = s.connect(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    wait_for(lambda: closed(sock), 5, "the half-sent request to be closed")
    assert 0.5 <= time.monotonic() - start < 2.0
    assert s.server.open_connections == 0


def test_a_dribbling_client_is_closed_at_the_deadline_not_per_byte(server: Callable[..., Server]) -> None:
    s = server(timeout=0.6)
    start = time.monotonic()
    sock = s.connect(b"G")
    while not closed(sock):
        assert time.monotonic() - start < 2.0, "bytes every 50 ms must not keep the connection open"
        try:
            sock.send(b"E")
        except OSError:
            break
        time.sleep(0.05)  # the client's pace: the thing under test
    assert time.monotonic() - start >= 0.6


@pytest.mark.parametrize(
    "head",
    [b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n", b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"b" * 9000 + b"\r\n"],
    ids=["request line", "headers"],
)
def test_an_oversized_head_gets_431(server: Callable[..., Server], head: bytes) -> None:
    s = server(max_head_bytes=8192)
    sock = s.connect(head)
    assert reply(sock).startswith(b"HTTP/1.0 431 Request Header Fields Too Large\r\n")
    ok = s.connect(b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"c" * 8000 + b"\r\n\r\n")  # just under
    assert reply(ok).startswith(b"HTTP/1.0 200 OK\r\n")


def test_at_the_cap_the_oldest_idle_connection_makes_room(server: Callable[..., Server]) -> None:
    s = server(max_connections=4, timeout=30)
    idle = [s.connect() for _ in range(4)]
    wait_for(lambda: s.server.open_connections == 4, 5, "4 connections")
    fifth = s.connect()
    wait_for(lambda: closed(idle[0]), 5, "the oldest idle connection to be closed")
    assert [closed(x) for x in [*idle[1:], fifth]] == [False, False, False, False]
    assert s.server.open_connections == 4
    assert get(s.url + "/healthz") == (200, "ok\n"), "a request still gets through"
    assert closed(idle[1]), "the request's connection made room"
    wait_for(lambda: s.server.open_connections == 3, 5, "the request's connection to be closed")


def test_when_every_slot_is_busy_a_new_connection_is_refused_at_once(server: Callable[..., Server]) -> None:
    release = threading.Event()

    class Slow:
        def collect(self) -> Iterator[Any]:
            release.wait(10)
            return iter(())

    s = server(max_connections=2, workers=1)
    s.registry.register(Slow())  # type: ignore[arg-type]
    busy = [s.connect(b"GET /metrics HTTP/1.1\r\n\r\n") for _ in range(2)]  # one in the worker, one queued
    wait_for(lambda: s.server.open_connections == 2, 5, "two busy connections")
    start = time.monotonic()
    third = s.connect(b"GET /healthz HTTP/1.1\r\n\r\n")
    assert reply(third).startswith(b"HTTP/1.0 503 Service Unavailable\r\n")
    assert time.monotonic() - start < 1.0
    release.set()
    assert [reply(b).split(b"\r\n")[0] for b in busy] == [b"HTTP/1.0 200 OK"] * 2


def test_the_endpoints_and_prometheus_content_negotiation(server: Callable[..., Server]) -> None:
    s = server()
    assert get(s.url + "/healthz") == (200, "ok\n")
    assert get(s.url + "/readyz") == (200, "ok\n")
    assert get(s.url + "/nope")[0] == 404
    sock = s.connect(b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n")
    head = reply(sock).split(b"\r\n\r\n")[0].decode()
    assert "Content-Type: application/openmetrics-text; version=1.0.0;" in head, "prometheus_client's handler"
    sock = s.connect(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert reply(sock).startswith(b"HTTP/1.0 501 ")


@pytest.mark.parametrize("kind", list(EXPOSITIONS))
def test_metrics_are_prometheus_clients_exposition_negotiated_and_gzipped(
    server: Callable[..., Server], kind: str
) -> None:
    s = server()
    stats = ExporterStats()
    s.registry.register(ExporterCollector(stats, RunTracker(Thresholds())))
    stats.bump(stats.watch_errors, "pods")
    request = urllib.request.Request(s.url + "/metrics", headers=EXPOSITIONS[kind][0])
    with urllib.request.urlopen(request, timeout=5) as resp:
        status, body, headers = resp.status, resp.read(), dict(resp.headers)
    assert (status, resp.version) == (200, 10)  # HTTP/1.0: the body ends with the connection
    samples = exposed(kind, body, headers)
    assert samples[(c.PROM_EXPORTER_WATCH_ERRORS, ("pods",))] == 1.0
    assert samples[(c.PROM_EXPORTER_WATCH_ERRORS, ("jobs",))] == 0.0
    assert get(s.url + "/healthz") == (200, "ok\n"), "the probes stay beside it"


def test_http_limits_refuse_bad_arguments() -> None:
    registry = CollectorRegistry()
    for kw, message in (
        ({"timeout": 0}, "timeout: expected a positive number of seconds, got 0"),
        ({"max_connections": 0}, "max_connections: expected a whole number of at least 1, got 0"),
        ({"workers": 0}, "workers: expected a whole number of at least 1, got 0"),
        ({"max_head_bytes": 100}, "max_head_bytes: expected a whole number of at least 1024, got 100"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            HttpServer("127.0.0.1", 0, registry, lambda: True, lambda: True, **kw)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--http-timeout", "0", "argument --http-timeout: expected a positive number of seconds, got '0'"),
        (
            "--http-timeout",
            "soon",
            "argument --http-timeout: expected a positive number of seconds, got 'soon'",
        ),
        (
            "--http-max-connections",
            "0",
            "argument --http-max-connections: expected a whole number of at least 1",
        ),
    ],
)
def test_bad_http_flags_name_the_flag(flag: str, value: str, message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "exporters.pipeline_exporter", flag, value],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 2
    assert message in proc.stderr


def thread_count(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def socket_count(pid: int) -> int:
    return sum(1 for fd in Path(f"/proc/{pid}/fd").iterdir() if _readlink(fd).startswith("socket:"))


def _readlink(path: Path) -> str:
    try:
        return str(path.readlink())
    except FileNotFoundError:  # closed while listing
        return ""


# main + the SDK's spooler and delivery threads + a watcher for jobs and one for pods + the
# HTTP loop + its workers.
EXPECTED_THREADS = 1 + 2 + 2 + 1 + HTTP_WORKERS


def test_a_thousand_idle_connections_do_not_hold_the_exporter(
    api: FakeKubeServer, tmp_path: Path, forward_server: Callable[..., Any]
) -> None:
    cap, timeout = 64, 3.0
    exporter = Exporter(
        api.url,
        tmp_path / "home",
        forward_server().port,
        "--http-timeout",
        str(timeout),
        "--http-max-connections",
        str(cap),
    )
    clients: list[socket.socket] = []
    try:
        wait_for(lambda: exporter.get("/readyz")[0] == 200, 20, "the exporter to list")
        pid = exporter.proc.pid
        assert thread_count(pid) == EXPECTED_THREADS
        baseline = socket_count(pid)
        clients = [
            socket.create_connection(("127.0.0.1", int(exporter.url.rsplit(":", 1)[1]))) for _ in range(1000)
        ]
        for sock in clients[-200:]:  # and 200 of them have sent half a request
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: exporter\r\nAccept: */*\r\n")
        wait_for(lambda: socket_count(pid) == baseline + cap, 5, "the server to hold exactly its cap")
        assert thread_count(pid) == EXPECTED_THREADS
        start = time.monotonic()
        status, text = exporter.get("/metrics")
        assert status == 200 and c.PROM_EXPORTER_OBJECT_ERRORS in text
        assert time.monotonic() - start < 2.0
        assert thread_count(pid) == EXPECTED_THREADS
        wait_for(lambda: all(closed(s) for s in clients), timeout + 5, "every idle connection to be closed")
        wait_for(lambda: socket_count(pid) == baseline, 5, "the server's sockets back to its baseline")
        assert exporter.get("/healthz") == (200, "ok\n")
        assert thread_count(pid) == EXPECTED_THREADS
    finally:
        for sock in clients:
            sock.close()
        exporter.stop()
