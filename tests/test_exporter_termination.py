"""A failed run's error, in the step's own words: the failing container's termination message.

Kubernetes keeps what a container wrote to its termination message file (the SDK writes a failed
run's summary there), or with ``terminationMessagePolicy: FallbackToLogsOnError`` the tail of its
log, as ``terminated.message``.  The exporter makes it one line: the ``error`` label of
``mlobs_pipeline_last_failure_info`` (cut at 200 characters, "" when there is none) and the run
record's ``error`` field (whole), each attempt with its own.  The pods are real ``V1Pod`` models
(testing.kube_objects, their container statuses built here from ``V1ContainerStatus``), fed to the
tracker as the watch hands them over, and once through the fake API to the whole exporter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client import V1ContainerState, V1ContainerStateTerminated, V1ContainerStatus
from prometheus_client import CollectorRegistry

from exporters.pipeline_exporter.app import ExporterApp
from exporters.pipeline_exporter.collectors import ExporterStats, RunCollector
from exporters.pipeline_exporter.config import ExporterConfig
from exporters.pipeline_exporter.figures import FinishedRun
from exporters.pipeline_exporter.kube import MalformedObject
from exporters.pipeline_exporter.records import RecordSender
from exporters.pipeline_exporter.tracker import RunTracker
from pipeline_sdk import Client, LocalTransport
from pipeline_sdk import contract as c
from pipeline_sdk.local_store import DB_NAME, LocalStore
from pipeline_sdk.testing import kube_objects as k
from pipeline_sdk.testing.kube_fake import FakeKubeServer
from pipeline_sdk.validation import MAX_TEXT_LENGTH
from tests.conftest import ROOT, wait_for

T0 = 1_795_000_000.0
SUMMARY = "FloatingPointError: loss diverged at epoch 3\n  at /app/train.py:42 in fit"  # as the SDK writes it
SUMMARY_LINE = "FloatingPointError: loss diverged at epoch 3 at /app/train.py:42 in fit"
LOG_TAIL = (  # FallbackToLogsOnError: the last lines of a step that failed before the SDK ran
    "epoch 1 loss 0.91\n"
    "epoch 2 loss 0.72\n"
    "Traceback (most recent call last):\n"
    '  File "/app/train.py", line 3, in <module>\n'
    "    import torch\n"
    "ModuleNotFoundError: No module named 'torch'\n"
)
LOG_TAIL_LINE = (
    "epoch 1 loss 0.91 epoch 2 loss 0.72 Traceback (most recent call last): "
    "File \"/app/train.py\", line 3, in <module> import torch ModuleNotFoundError: No module named 'torch'"
)


# ---- pods with messages, from the client's models ----------------------------------------------------


def terminated(reason: str, code: int, finished: float, message: str | None) -> V1ContainerState:
    return V1ContainerState(
        terminated=V1ContainerStateTerminated(
            reason=reason,
            exit_code=code,
            started_at=k.ts(finished - 10),
            finished_at=k.ts(finished),
            message=message,
        )
    )


def with_status(pod: dict[str, Any], status: V1ContainerStatus) -> dict[str, Any]:
    """``pod`` (testing.kube_objects) with its one container's status replaced by ``status``."""
    pod["status"]["containerStatuses"] = [k.serialise(status)]
    return pod


def failed_pod(
    run: k.RunSpec,
    attempt: int,
    message: str | None,
    *,
    started: float = T0,
    finished: float = T0 + 30,
    reason: str = "Error",
    code: int = 1,
    bare: bool = False,
) -> dict[str, Any]:
    """A pod whose container ended non-zero with ``message`` as its termination message."""
    pod = k.pod(run, attempt, "Failed", started=started, terminated=(reason, code, finished), bare=bare)
    status = V1ContainerStatus(
        name="main",
        image=k.IMAGE,
        image_id="",
        ready=False,
        restart_count=0,
        state=terminated(reason, code, finished, message),
    )
    return with_status(pod, status)


def restarted_pod(
    run: k.RunSpec, phase: str, *, restarts: int, last: str | None, now: str | None = None
) -> dict[str, Any]:
    """A pod (restartPolicy OnFailure) whose container restarted ``restarts`` times, the last
    restart's termination message ``last``; ``now`` the message of its current, final failure."""
    pod = k.pod(run, 0, phase, started=T0)
    pod["spec"]["restartPolicy"] = "OnFailure"
    state = (
        terminated("Error", 2, T0 + 50, now)
        if now is not None
        else V1ContainerState(running=k8s.V1ContainerStateRunning(started_at=k.ts(T0 + 25)))
    )
    status = V1ContainerStatus(
        name="main",
        image=k.IMAGE,
        image_id="",
        ready=phase == "Running",
        restart_count=restarts,
        state=state,
        last_state=terminated("Error", 1, T0 + 20, last),
    )
    return with_status(pod, status)


# ---- the tracker, as the watch feeds it ----------------------------------------------------------------


class Records:
    def __init__(self) -> None:
        self.sent: list[FinishedRun] = []

    def send(self, record: FinishedRun) -> None:
        self.sent.append(record)


def make() -> tuple[RunTracker, CollectorRegistry, Records]:
    records = Records()
    tracker = RunTracker(ExporterConfig().thresholds, records, clock=lambda: T0 + 10_000)
    registry = CollectorRegistry()
    registry.register(RunCollector(tracker))
    return tracker, registry, records


def wire(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def feed(tracker: RunTracker, *events: tuple[str, dict[str, Any]]) -> None:
    for resource, obj in events:
        (tracker.on_job if resource == "jobs" else tracker.on_pod)("MODIFIED", wire(obj))


def info(registry: CollectorRegistry, pipeline: str = "train", step: str = "fit") -> list[dict[str, str]]:
    """The labels of every last-failure info series of a pipeline/step."""
    return [
        dict(sample.labels)
        for family in registry.collect()
        if family.name == c.PROM_LAST_FAILURE_INFO
        for sample in family.samples
        if sample.labels[c.PROM_LABEL_PIPELINE] == pipeline and sample.labels[c.PROM_LABEL_STEP] == step
    ]


def failed_job(run: k.RunSpec, *pods: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A Job whose pods all failed, then its Failed condition (its retries used up)."""
    done = k.job(run, started=T0, failed=len(pods), condition=("Failed", "BackoffLimitExceeded", T0 + 60))
    return [("jobs", k.job(run, started=T0, active=1)), *(("pods", p) for p in pods), ("jobs", done)]


def test_a_bare_pods_termination_message_is_its_runs_error() -> None:
    tracker, registry, records = make()
    run = k.RunSpec("train", "fit", "r1")
    feed(tracker, ("pods", failed_pod(run, 0, SUMMARY, bare=True, code=3)))
    assert info(registry) == [
        {
            "pipeline": "train",
            "step": "fit",
            "run_id": "r1",
            "reason": "Error",
            "exit_code": "3",
            "namespace": "ml",
            "error": SUMMARY_LINE,
            "pod": "train-fit-r1-0",
        }
    ]
    [record] = records.sent
    assert (record.error, [a.error for a in record.per_attempt]) == (SUMMARY_LINE, [SUMMARY_LINE])


def test_a_jobs_error_is_its_last_failed_pods_log_tail_and_each_attempt_keeps_its_own() -> None:
    tracker, registry, records = make()
    run = k.RunSpec("train", "fit", "r2", backoff_limit=1)
    first = failed_pod(run, 0, "RuntimeError: bad shard 7", started=T0, finished=T0 + 20)
    second = failed_pod(run, 1, LOG_TAIL, started=T0 + 30, finished=T0 + 50)
    feed(tracker, *failed_job(run, first, second))
    [labels] = info(registry)
    assert (labels["reason"], labels["error"], labels["pod"]) == (
        "BackoffLimitExceeded",
        LOG_TAIL_LINE,
        "train-fit-r2-1",
    )
    [record] = records.sent
    assert record.error == LOG_TAIL_LINE
    assert [(a.pod, a.error) for a in record.per_attempt] == [
        ("train-fit-r2-0", "RuntimeError: bad shard 7"),
        ("train-fit-r2-1", LOG_TAIL_LINE),
    ]


def test_control_characters_and_line_breaks_become_single_spaces() -> None:
    tracker, registry, records = make()
    raw = "\x1b[31mRuntimeError\x1b[0m: bad\x00 shard\r\n\tat   step 2\u2028next\x07\n\n"
    feed(tracker, ("pods", failed_pod(k.RunSpec("train", "fit", "r3"), 0, raw, bare=True)))
    want = "[31mRuntimeError [0m: bad shard at step 2 next"
    assert [labels["error"] for labels in info(registry)] == [want]
    assert records.sent[0].error == want


def test_a_10_kb_message_is_cut_to_200_characters_on_the_label_and_kept_whole_in_the_record(
    tmp_path: Path,
) -> None:
    tracker, registry, records = make()
    message = "ValueError: " + "0123456789" * 1_000  # 10,012 characters
    feed(tracker, ("pods", failed_pod(k.RunSpec("train", "fit", "r4"), 0, message, bare=True)))
    [labels] = info(registry)
    assert len(labels["error"]) == 200
    assert labels["error"] == message[:199] + "…"
    [record] = records.sent
    assert record.error == message and len(record.error) == 10_012
    # And the whole of it reaches the store through the SDK's writer.
    client = Client(LocalTransport(tmp_path / DB_NAME), home=tmp_path / "spool")
    stats = ExporterStats()
    RecordSender(client, stats).send(record)
    assert client.flush(10)
    client.close()
    assert (stats.records_sent, stats.records_dropped) == (1, 0)
    store = LocalStore(tmp_path / DB_NAME)
    [point] = store.points(c.RUN_RECORD.measurement, "r4")
    store.close()
    assert point.fields[c.FIELD_ERROR] == message


def test_a_message_past_what_the_store_takes_is_cut_and_a_surrogate_escaped_so_the_record_is_sent(
    tmp_path: Path,
) -> None:
    tracker, _, records = make()
    huge = "x" * (MAX_TEXT_LENGTH + 5)
    feed(tracker, ("pods", failed_pod(k.RunSpec("train", "fit", "r5"), 0, huge, bare=True)))
    feed(tracker, ("pods", failed_pod(k.RunSpec("train", "fit", "r6"), 0, "bad \udcff byte", bare=True)))
    cut, odd = (r.error for r in records.sent)
    assert len(cut) == MAX_TEXT_LENGTH and cut.endswith("…") and cut[:-1] == "x" * (MAX_TEXT_LENGTH - 1)
    assert odd == "bad \\udcff byte"
    client = Client(LocalTransport(tmp_path / DB_NAME), home=tmp_path / "spool")
    stats = ExporterStats()
    for record in records.sent:
        RecordSender(client, stats).send(record)
    assert client.flush(10)
    client.close()
    assert (stats.records_sent, stats.records_dropped) == (2, 0)


def test_no_message_is_an_empty_error_label_and_no_record_field(tmp_path: Path) -> None:
    tracker, registry, records = make()
    feed(tracker, ("pods", failed_pod(k.RunSpec("train", "fit", "r7"), 0, None, bare=True)))
    [labels] = info(registry)
    assert c.PROM_LABEL_ERROR in labels and labels[c.PROM_LABEL_ERROR] == ""
    assert records.sent[0].error == ""
    # An OOM-killed or evicted pod says nothing either.
    feed(
        tracker,
        *((r, obj) for r, _, obj in k.oom_killed(k.RunSpec("train", "fit", "r8"), T0 + 100, T0 + 130)),
    )
    [labels] = info(registry)
    assert (labels["run_id"], labels["reason"], labels["error"]) == ("r8", "OOMKilled", "")
    client = Client(LocalTransport(tmp_path / DB_NAME), home=tmp_path / "spool")
    RecordSender(client, ExporterStats()).send(records.sent[0])
    assert client.flush(10)
    client.close()
    store = LocalStore(tmp_path / DB_NAME)
    [point] = store.points(c.RUN_RECORD.measurement, "r7")
    store.close()
    assert c.FIELD_ERROR not in point.fields


def test_a_retried_attempts_message_comes_from_its_last_state() -> None:
    """restartPolicy OnFailure: the container restarted in place; the Job gave up while it
    was running again, so the only words are the last restart's (``lastState.terminated``)."""
    tracker, registry, records = make()
    run = k.RunSpec("train", "fit", "r9", backoff_limit=1)
    pod = restarted_pod(
        run, "Running", restarts=1, last="OSError: shard 3 unreadable\n  at /app/io.py:9 in load"
    )
    feed(tracker, ("jobs", k.job(run, started=T0, active=1)), ("pods", pod))
    done = k.job(run, started=T0, failed=1, condition=("Failed", "BackoffLimitExceeded", T0 + 40))
    feed(tracker, ("jobs", done))
    tracker.settle_all()
    [labels] = info(registry)
    assert (labels["reason"], labels["error"]) == (
        "BackoffLimitExceeded",
        "OSError: shard 3 unreadable at /app/io.py:9 in load",
    )
    assert records.sent[0].error == "OSError: shard 3 unreadable at /app/io.py:9 in load"


def test_a_pods_own_failure_speaks_over_its_earlier_restart() -> None:
    tracker, registry, records = make()
    run = k.RunSpec("train", "fit", "r10")
    pod = restarted_pod(run, "Failed", restarts=2, last="first words", now="KeyError: 'label'")
    feed(tracker, *failed_job(run, pod))
    assert [labels["error"] for labels in info(registry)] == ["KeyError: 'label'"]
    assert [a.error for a in records.sent[0].per_attempt] == ["KeyError: 'label'"]


def test_one_series_per_pipeline_step_replaced_by_the_next_failure() -> None:
    tracker, registry, _ = make()
    feed(tracker, ("pods", failed_pod(k.RunSpec("train", "fit", "a"), 0, "first", bare=True)))
    feed(
        tracker,
        ("pods", failed_pod(k.RunSpec("train", "fit", "b"), 0, "second", bare=True, finished=T0 + 90)),
    )
    assert [(labels["run_id"], labels["error"]) for labels in info(registry)] == [("b", "second")]


# ---- the whole exporter, with the SDK's own summary --------------------------------------------------

FAILING_STEP = textwrap.dedent(
    """
    import pipeline_sdk

    def fit():
        raise FloatingPointError("loss diverged at epoch 3")

    with pipeline_sdk.run(pipeline="train", step="fit", run_id="sdk-1"):
        fit()
    """
)


def sdk_summary(tmp_path: Path) -> str:
    """What the SDK leaves in its termination message file when the step raises."""
    path = tmp_path / "termination-log"
    env = {"PATH": "/usr/bin:/bin", c.ENV_TERMINATION_LOG: str(path), c.ENV_HOME: str(tmp_path / "sdk")}
    done = subprocess.run(
        [sys.executable, "-c", FAILING_STEP],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    return path.read_text()


@pytest.fixture
def api() -> Iterator[FakeKubeServer]:
    server = FakeKubeServer()
    yield server
    server.close()


def test_the_sdks_summary_reaches_the_metric_and_the_record_through_the_api(
    api: FakeKubeServer, tmp_path: Path
) -> None:
    summary = sdk_summary(tmp_path)
    assert summary == "FloatingPointError: loss diverged at epoch 3\n  at <string>:5 in fit"
    client = Client(LocalTransport(tmp_path / DB_NAME), home=tmp_path / "spool")
    stats = ExporterStats()
    app = ExporterApp(
        ExporterConfig(),
        k8s.ApiClient(k8s.Configuration(host=api.url)),
        RecordSender(client, stats),
        stats=stats,
        settle=0.1,
        backoff=(0.02, 0.2),
        host="127.0.0.1",
        port=0,
    )
    stop = threading.Event()
    app.start()
    thread = threading.Thread(target=app.run, args=(stop, 0.05), daemon=True)
    thread.start()
    try:
        wait_for(app.ready, 20, "the exporter to list jobs and pods")
        run = k.RunSpec("train", "fit", "sdk-1")
        *pod_events, done = failed_job(run, failed_pod(run, 0, summary))
        for resource, obj in pod_events:
            api.kube.apply(resource, obj)
        # The two watches are two streams: the pod's end first, as the kubelet reports it first.
        wait_for(lambda: stats.watch_events["pods"] == 1, 20, "the pod's event")
        api.kube.apply(*done)
        wait_for(lambda: stats.records_sent == 1, 20, "the run record")
        [labels] = info(app.registry)
        assert labels["error"] == "FloatingPointError: loss diverged at epoch 3 at <string>:5 in fit"
        assert client.flush(10)
    finally:
        stop.set()
        thread.join(10)
        app.close()
        client.close(timeout=5)
    store = LocalStore(tmp_path / DB_NAME)
    [point] = store.points(c.RUN_RECORD.measurement, "sdk-1")
    store.close()
    assert point.fields[c.FIELD_ERROR] == "FloatingPointError: loss diverged at epoch 3 at <string>:5 in fit"
    assert point.tags[c.TAG_REASON] == "Error"


def test_an_evicted_pods_error_is_the_kubelets_message() -> None:
    tracker, registry, records = make()
    run = k.RunSpec("train", "fit", "r11")
    pod = k.pod(run, 0, "Failed", started=T0, pod_reason="Evicted")
    pod["status"]["message"] = "The node was low on resource: memory. Container main was using 3Gi."
    feed(tracker, *failed_job(run, pod))
    [labels] = info(registry)
    assert (labels["reason"], labels["error"]) == (
        "Evicted",
        "The node was low on resource: memory. Container main was using 3Gi.",
    )
    assert records.sent[0].per_attempt[0].error == labels["error"]


def test_a_message_that_is_not_text_is_a_malformed_pod_naming_the_field() -> None:
    tracker, registry, records = make()
    pod = failed_pod(k.RunSpec("train", "fit", "r12"), 0, "fine", bare=True)
    pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"] = {"text": "no"}
    with pytest.raises(
        MalformedObject,
        match=r"^status\.containerStatuses\[0\]\.state\.terminated\.message: "
        r"expected a string, got dict$",
    ):
        feed(tracker, ("pods", pod))
    assert (info(registry), records.sent) == ([], []), "nothing changed: the watcher skips and counts it"
