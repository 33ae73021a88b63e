"""A Job retried three times, end to end: every attempt is a step run attempt of its own.

The Job and its pods are real ``V1Job``/``V1Pod`` objects served by the fake Kubernetes
API (pipeline_sdk/testing/kube_fake.py) to the exporter, which runs in-process: its watchers over HTTP,
the tracker, and the record sender through a real SDK client into the local store.
Each pod's step is the SDK in a process of its own, with the environment the chart gives
a pod (its Downward API entries, resolved against that pod), writing to the same store.
Attempts 1 and 2 raise, attempt 3 succeeds; the read API then reads it all back.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml
from kubernetes import client as k8s

from exporters.pipeline_exporter.app import ExporterApp
from exporters.pipeline_exporter.collectors import ExporterStats
from exporters.pipeline_exporter.config import ExporterConfig
from exporters.pipeline_exporter.figures import AttemptRecord, FinishedRun
from exporters.pipeline_exporter.records import RecordSender
from pipeline_sdk import Client, LocalTransport
from pipeline_sdk import contract as c
from pipeline_sdk.local_store import DB_NAME, LocalStore
from pipeline_sdk.read import ReadClient
from pipeline_sdk.testing import kube_objects as k
from pipeline_sdk.testing.kube_fake import FakeKubeServer
from tests.conftest import ROOT, wait_for

CHART = ROOT / "charts" / "mlobs-core"
STEP = textwrap.dedent(
    """
    import sys

    import pipeline_sdk

    attempt = int(sys.argv[1])
    with pipeline_sdk.run() as run:  # the identity and the attempt from the pod's environment
        for epoch in range(3):
            run.log_metric("loss", attempt + epoch / 10, step=epoch)
        if attempt < 3:
            raise RuntimeError(f"bad shard on attempt {attempt}")
    """
)
SUFFIXES = (
    "zq9xk",
    "m4t7c",
    "a2b3c",
)  # the pods' names, in the order they are created: they sort the other way


# ---- the pod's environment, as the chart injects it --------------------------------------------------


@cache
def chart_step_env() -> tuple[dict[str, Any], ...]:
    """The env of the chart's demo step container (its run identity comes from the Downward API)."""
    out = helm_python.Chart.load(CHART).render(
        {"demo": {"runSuffix": "x1"}}, name="mlobs", namespace="mlobs", is_install=True
    )
    jobs = [d for text in out.values() for d in yaml.safe_load_all(text) if d and d["kind"] == "Job"]
    [diverge] = [j for j in jobs if j["metadata"]["name"] == "demo-diverge-x1"]
    [container] = diverge["spec"]["template"]["spec"]["containers"]
    return tuple(container["env"])


def field_ref(pod: dict[str, Any], path: str) -> str:
    """The value the kubelet gives a Downward API ``fieldRef`` of ``pod``."""
    label = re.fullmatch(r"metadata\.labels\['([^']+)'\]", path)
    if label is not None:
        return str(pod["metadata"]["labels"][label.group(1)])
    if path in ("metadata.name", "metadata.namespace"):
        return str(pod["metadata"][path.removeprefix("metadata.")])
    raise ValueError(f"fieldPath {path!r} is not one this test resolves")


def pod_env(pod: dict[str, Any], home: Path) -> dict[str, str]:
    """The chart's Downward API entries resolved against ``pod``, and the local store under ``home``."""
    refs = {
        e["name"]: field_ref(pod, e["valueFrom"]["fieldRef"]["fieldPath"])
        for e in chart_step_env()
        if "fieldRef" in e.get("valueFrom", {})
    }
    assert set(refs) == {c.ENV_PIPELINE, c.ENV_STEP, c.ENV_RUN_ID, c.ENV_POD_NAME}
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLOBS_")}
    return {**env, **refs, c.ENV_HOME: str(home)}  # no Fluentd here: the local store


def test_a_pods_environment_is_resolved_from_the_pod() -> None:
    run = k.RunSpec("train", "fit", "r7")
    pod = k.pod(run, 0, "Running", name="train-fit-r7-q2w9z")
    env = pod_env(pod, Path("/tmp/h"))
    assert {key: env[key] for key in (c.ENV_PIPELINE, c.ENV_STEP, c.ENV_RUN_ID, c.ENV_POD_NAME)} == {
        c.ENV_PIPELINE: "train",
        c.ENV_STEP: "fit",
        c.ENV_RUN_ID: "r7",
        c.ENV_POD_NAME: "train-fit-r7-q2w9z",
    }
    assert env[c.ENV_HOME] == "/tmp/h" and c.ENV_FLUENTD_HOST not in env
    with pytest.raises(ValueError, match=r"fieldPath 'spec.nodeName' is not one this test resolves"):
        field_ref(pod, "spec.nodeName")


# ---- the exporter, in-process ------------------------------------------------------------------------


class Running:
    """An ExporterApp against the fake API, its records through a real client to ``store``."""

    def __init__(self, api: FakeKubeServer, store: Path, spool_home: Path) -> None:
        self.client = Client(LocalTransport(store), home=spool_home)
        self.stats = ExporterStats()
        self.app = ExporterApp(
            ExporterConfig(),
            k8s.ApiClient(k8s.Configuration(host=api.url)),
            RecordSender(self.client, self.stats),
            stats=self.stats,
            settle=0.1,
            backoff=(0.02, 0.2),
            host="127.0.0.1",
            port=0,
        )
        self.stop = threading.Event()
        self.app.start()
        self.thread = threading.Thread(target=self.app.run, args=(self.stop, 0.05), daemon=True)
        self.thread.start()
        wait_for(self.app.ready, 20, "the exporter to list jobs and pods")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.app.close()
        self.client.close(timeout=5)


@pytest.fixture
def api() -> Iterator[FakeKubeServer]:
    server = FakeKubeServer()
    yield server
    server.close()


def step_in_pod(pod: dict[str, Any], attempt: int, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", STEP, str(attempt)],
        cwd=ROOT,
        env=pod_env(pod, home),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_job_retried_three_times_reads_back_as_three_attempts(api: FakeKubeServer, tmp_path: Path) -> None:
    home = tmp_path / "home"  # MLOBS_HOME of every pod: one local store
    exporter = Running(api, home / DB_NAME, tmp_path / "exporter-home")
    try:
        run = k.RunSpec("train", "fit", "r7", backoff_limit=2)
        names = [f"{run.name}-{s}" for s in SUFFIXES]
        # Pods created 10 s apart, a minute ago: their order is plain at the API's one-second resolution.
        base = float(int(time.time()) - 60)
        starts = [base + 10 * i for i in range(3)]
        codes, finals = [], []
        for i, (name, start) in enumerate(zip(names, starts, strict=True)):
            api.kube.apply("jobs", k.job(run, started=base, active=1, failed=i))
            running = k.pod(run, i, "Running", started=start, name=name, node=f"node-{i}")
            api.kube.apply("pods", running)
            done = step_in_pod(running, i + 1, home)
            codes.append(done.returncode)
            if done.returncode == 0:
                end = ("Completed", 0, start + 5)
                final = k.pod(run, i, "Succeeded", started=start, terminated=end, name=name, node=f"node-{i}")
            else:
                end = ("Error", done.returncode, start + 5)
                final = k.pod(run, i, "Failed", started=start, terminated=end, name=name, node=f"node-{i}")
            finals.append(final)
            api.kube.apply("pods", final)
        assert codes == [1, 1, 0], "attempts 1 and 2 raise, attempt 3 succeeds"
        late = finals[0]  # a late event of the oldest pod (an annotation added): never the last attempt
        late["metadata"]["annotations"] = {"example.com/late": "true"}
        api.kube.apply("pods", late)
        # The kubelet reports the pod's end before the Job controller marks the Job complete: the
        # watches are two streams, so let the pods' one deliver all 7 events first.
        wait_for(lambda: exporter.stats.watch_events["pods"] == 7, 20, "the pod events")
        complete = k.job(run, started=base, failed=2, succeeded=1, condition=("Complete", None, base + 26))
        api.kube.apply("jobs", complete)
        wait_for(lambda: exporter.stats.records_sent == 3, 20, "a run record per attempt")
        assert exporter.client.flush(10)
        registry = exporter.app.registry
        labels = {"pipeline": "train", "step": "fit"}
        outcome = {**labels, "status": "succeeded", "reason": "Completed"}
        assert registry.get_sample_value(c.PROM_RUNS_TOTAL, outcome) == 1, "the run is counted once"
        assert registry.get_sample_value(c.PROM_POD_FAILURES, {**labels, "reason": "Error"}) == 2
    finally:
        exporter.close()

    # What each side wrote, per attempt: the SDK in the pod, and the exporter.
    store = LocalStore(home / DB_NAME)
    sdk_ends = {
        p.tags[c.TAG_ATTEMPT]: p.tags[c.TAG_STATUS]
        for p in store.points(c.RUN.measurement, "r7")
        if p.tags[c.TAG_STATUS] != "started"
    }
    records = {p.tags[c.TAG_ATTEMPT]: p for p in store.points(c.RUN_RECORD.measurement, "r7")}
    store.close()
    assert sdk_ends == {names[0]: "failed", names[1]: "failed", names[2]: "succeeded"}
    assert {a: r.tags[c.TAG_STATUS] for a, r in records.items()} == sdk_ends, "the two sides agree"
    ns = [int(s * 1e9) for s in starts]
    assert {
        a: (
            r.tags[c.TAG_REASON],
            r.fields.get(c.FIELD_EXIT_CODE),
            r.fields[c.FIELD_POD],
            r.fields[c.FIELD_NODE],
        )
        for a, r in records.items()
    } == {
        names[0]: ("Error", 1, names[0], "node-0"),
        names[1]: ("Error", 1, names[1], "node-1"),
        names[2]: ("Completed", None, names[2], "node-2"),
    }
    assert {
        a: (r.fields[c.FIELD_START_NS], r.fields[c.FIELD_END_NS], r.time_ns) for a, r in records.items()
    } == {
        name: (start, start + 5 * 10**9, start + 5 * 10**9) for name, start in zip(names, ns, strict=True)
    }, "each attempt's own start and end; the point's time is its end"
    assert {r.fields[c.FIELD_ATTEMPTS] for r in records.values()} == {3}

    with ReadClient(home=home) as reader:
        shown = reader.run("r7")
        assert [
            (a["attempt"], a["key"], a["status"], a["reason"], a["error"]) for a in shown["attempts"]
        ] == [
            (1, names[0], "failed", "Error", "RuntimeError: bad shard on attempt 1"),
            (2, names[1], "failed", "Error", "RuntimeError: bad shard on attempt 2"),
            (3, names[2], "succeeded", "Completed", None),
        ]
        assert (shown["attempt"], shown["attempt_key"], shown["status"], shown["pod"], shown["pods"]) == (
            3,
            names[2],
            "succeeded",
            names[2],
            3,
        ), "the latest attempt is the succeeded one"
        for n in (1, 2, 3):
            series = [(p["step"], p["value"]) for p in reader.list_metrics("r7", "loss", attempt=n)]
            assert series == [(0, n + 0.0), (1, n + 0.1), (2, n + 0.2)], f"attempt {n}: its own, no merge"
        listed = [
            (r["run_id"], r["step"], r["attempt"], r["attempt_key"], r["status"]) for r in reader.runs()
        ]
        assert listed == [("r7", "fit", 3, names[2], "succeeded")], "the step run is listed once"


# ---- the record sender: a point per attempt -----------------------------------------------------------

T0 = 1_795_000_000.0
S, R = c.RunStatus, c.RunReason


def finished(*attempts: AttemptRecord) -> FinishedRun:
    return FinishedRun(
        run_id="r1",
        pipeline="train",
        step="fit",
        namespace="ml",
        status=S.FAILED,
        reason=R.BACKOFF_LIMIT_EXCEEDED,
        exit_code=2,
        start=T0,
        end=T0 + 30,
        image="img:1",
        node="node-b",
        pod=attempts[-1].pod if attempts else None,
        attempts=max(len(attempts), 1),
        per_attempt=attempts,
    )


def test_each_attempt_is_a_point_of_its_own_and_a_resend_writes_the_same_points(tmp_path: Path) -> None:
    client = Client(LocalTransport(tmp_path / DB_NAME), home=tmp_path / "spool")
    stats = ExporterStats()
    sender = RecordSender(client, stats)
    first = AttemptRecord("r1-x", S.FAILED, R.OOM_KILLED, 137, T0, T0 + 10, "node-a", None)
    last = AttemptRecord("r1-y", S.FAILED, R.BACKOFF_LIMIT_EXCEEDED, 2, T0 + 10, T0 + 10, "node-b", "img:2")
    for _ in range(2):  # at least once: the same points again
        sender.send(finished(first, last))  # the same end: the attempt tags tell the points apart
    sender.send(finished())  # a Job seen without pods: one point, attempt "1"
    assert client.flush(10)
    assert (stats.records_sent, stats.records_dropped) == (5, 0)
    store = LocalStore(tmp_path / DB_NAME)
    points = sorted(store.points(c.RUN_RECORD.measurement, "r1"), key=lambda p: p.tags[c.TAG_ATTEMPT])
    store.close()
    assert [(p.tags[c.TAG_ATTEMPT], p.time_ns) for p in points] == [
        ("1", int((T0 + 30) * 1e9)),
        ("r1-x", int((T0 + 10) * 1e9)),
        ("r1-y", int((T0 + 10) * 1e9)),
    ]
    assert [(p.tags[c.TAG_STATUS], p.tags[c.TAG_REASON]) for p in points] == [
        ("failed", "BackoffLimitExceeded"),
        ("failed", "OOMKilled"),
        ("failed", "BackoffLimitExceeded"),
    ]
    assert points[1].fields == {
        c.FIELD_START_NS: int(T0 * 1e9),
        c.FIELD_END_NS: int((T0 + 10) * 1e9),
        c.FIELD_EXECUTION_TIME_MS: 10_000.0,
        c.FIELD_ATTEMPTS: 2,
        c.FIELD_EXIT_CODE: 137,
        c.FIELD_IMAGE: "img:1",  # the run's image when the pod's is not known
        c.FIELD_NODE: "node-a",
        c.FIELD_POD: "r1-x",
    }
    assert (points[2].fields[c.FIELD_IMAGE], points[2].fields[c.FIELD_EXECUTION_TIME_MS]) == ("img:2", 0.0)
    assert c.FIELD_POD not in points[0].fields and points[0].fields[c.FIELD_NODE] == "node-b"
    assert {p.tags[c.TAG_NAMESPACE] for p in points} == {"ml"}
    client.close()
    sender.send(
        finished(first, last)
    )  # the client closed (the exporter shutting down): counted, never raised
    assert (stats.records_sent, stats.records_dropped) == (5, 2)


def test_a_record_with_a_value_the_store_cannot_take_is_dropped_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = Client(LocalTransport(tmp_path / DB_NAME), home=tmp_path / "spool")
    stats = ExporterStats()
    sender = RecordSender(client, stats)
    good = AttemptRecord("r1-x", S.FAILED, R.ERROR, 1, T0, T0 + 10, "node-a", None)
    bad = AttemptRecord("r1-y", S.FAILED, R.ERROR, 1, T0 + 10, T0 + 20, "node-\udcff", None)  # not UTF-8
    with caplog.at_level(logging.WARNING, "mlobs.exporter"):
        sender.send(finished(good, bad))
        sender.send(finished(good, bad))  # the same refusal within the minute: counted, not logged again
    assert (stats.records_sent, stats.records_dropped) == (2, 2)
    assert [r.getMessage() for r in caplog.records] == [
        "run record of r1 not sent: record['node']='node-\\udcff' is invalid: is not valid Unicode text "
        "(surrogates not allowed)"
    ]
    assert client.flush(10)
    store = LocalStore(tmp_path / DB_NAME)
    assert [p.tags[c.TAG_ATTEMPT] for p in store.points(c.RUN_RECORD.measurement, "r1")] == ["r1-x"]
    store.close()
    client.close()
