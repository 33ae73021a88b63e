"""The exporter as a process: the real ``kubernetes`` client against the fake API over HTTP,
run records through the SDK to a real Forward receiver, and its HTTP endpoints."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline_sdk import contract as c
from pipeline_sdk.testing import kube_objects as k
from pipeline_sdk.testing.kube_fake import FakeKubeServer
from tests.conftest import ForwardServerProcess, wait_for
from tests.support.exporter_process import Exporter

T0 = 1_795_000_000.0


@pytest.fixture
def api() -> Iterator[FakeKubeServer]:
    server = FakeKubeServer()
    yield server
    server.close()


@pytest.fixture
def start_exporter(tmp_path: Path, api: FakeKubeServer) -> Iterator[Callable[..., Exporter]]:
    started: list[Exporter] = []

    def start(fluentd_port: int, *extra: str) -> Exporter:
        exporter = Exporter(api.url, tmp_path / f"home-{len(started)}", fluentd_port, *extra)
        started.append(exporter)
        wait_for(lambda: exporter.get("/readyz")[0] == 200, 20, "the exporter to list jobs and pods")
        return exporter

    yield start
    for exporter in started:
        exporter.stop()


def apply(api: FakeKubeServer, steps: list[k.Step]) -> None:
    for resource, action, obj in steps:
        if action == "delete":
            api.kube.delete(resource, obj["metadata"]["namespace"], obj["metadata"]["name"])
        else:
            api.kube.apply(resource, obj)


def runs(
    exporter: Exporter, status: str, reason: str, pipeline: str = "train", step: str = "fit"
) -> float | None:
    return exporter.value(c.PROM_RUNS_TOTAL, pipeline=pipeline, step=step, status=status, reason=reason)


def test_runs_reach_metrics_and_records(api: FakeKubeServer, start_exporter, forward_server) -> None:  # type: ignore[no-untyped-def]
    fluentd: ForwardServerProcess = forward_server()
    exporter = start_exporter(fluentd.port)
    assert exporter.get("/healthz")[0] == 200
    apply(api, k.succeeding(k.RunSpec("train", "fit", "ok-1"), T0, T0 + 60))
    apply(api, k.oom_killed(k.RunSpec("train", "fit", "oom-1"), T0 + 100, T0 + 130))
    apply(api, k.backoff_limit(k.RunSpec("train", "fit", "bl-1", backoff_limit=1), T0 + 200, T0 + 260))
    wait_for(lambda: runs(exporter, "failed", "BackoffLimitExceeded") == 1, 20, "the third run to be counted")
    assert runs(exporter, "succeeded", "Completed") == 1
    assert runs(exporter, "failed", "OOMKilled") == 1
    assert exporter.value(c.PROM_LAST_FAILURE, pipeline="train", step="fit") == T0 + 260
    assert exporter.value(c.PROM_EXPORTER_WATCH_EVENTS, resource="jobs") == 3 + 3 + 4  # every Job event

    wait_for(lambda: fluentd.event_count() == 4, 20, "a run record per attempt at the Forward receiver")
    records = {r[c.TAG_RUN_ID]: (t, r) for m in fluentd.received() for t, r in m.entries}
    attempts = sorted((r[c.TAG_RUN_ID], r[c.TAG_ATTEMPT]) for m in fluentd.received() for _, r in m.entries)
    # A failed Job waits for its pods, so their names are known; ok-1's Job may be seen complete
    # before its pod (two watch streams), and then its one record is attempt "1".
    assert [a for a in attempts if a[0] != "ok-1"] == [
        ("bl-1", "train-fit-bl-1-0"),
        ("bl-1", "train-fit-bl-1-1"),
        ("oom-1", "train-fit-oom-1-0"),
    ], "bl-1 ran two pods: a record each"
    assert len([a for a in attempts if a[0] == "ok-1"]) == 1
    assert {m.tag for m in fluentd.received()} == {c.RUN_RECORD.tag}
    t, oom = records["oom-1"]
    assert t == int((T0 + 130) * 1e9), "a record's time is the run's end: a resend writes the same point"
    assert {key: oom[key] for key in (c.TAG_STATUS, c.TAG_REASON, c.FIELD_EXIT_CODE, c.TAG_NAMESPACE)} == {
        c.TAG_STATUS: "failed",
        c.TAG_REASON: "OOMKilled",
        c.FIELD_EXIT_CODE: 137,
        c.TAG_NAMESPACE: "ml",
    }
    assert oom[c.FIELD_EXECUTION_TIME_MS] == 30_000.0
    assert (oom[c.FIELD_START_NS], oom[c.FIELD_END_NS]) == (int((T0 + 100) * 1e9), int((T0 + 130) * 1e9))
    assert (oom[c.FIELD_IMAGE], oom[c.FIELD_NODE], oom[c.FIELD_ATTEMPTS]) == (k.IMAGE, "kind-worker", 1)
    bl = {r[c.TAG_ATTEMPT]: r for m in fluentd.received() for _, r in m.entries if r[c.TAG_RUN_ID] == "bl-1"}
    assert {a: (r[c.TAG_REASON], r[c.FIELD_EXIT_CODE], r[c.FIELD_ATTEMPTS]) for a, r in bl.items()} == {
        "train-fit-bl-1-0": ("Error", 1, 2),  # the first attempt: its own reason
        "train-fit-bl-1-1": ("BackoffLimitExceeded", 1, 2),  # the last: the run's
    }


def test_expired_watch_relists_without_double_counting(
    api: FakeKubeServer, start_exporter, forward_server
) -> None:  # type: ignore[no-untyped-def]
    exporter = start_exporter(forward_server().port)
    apply(api, k.succeeding(k.RunSpec("train", "fit", "before"), T0, T0 + 10))
    wait_for(lambda: runs(exporter, "succeeded", "Completed") == 1, 20, "the first run")
    relists = exporter.value(c.PROM_EXPORTER_RELISTS, resource="jobs")
    api.kube.compact()  # every watch's resourceVersion is now too old: 410 Gone
    now = time.time()  # a run that ends in the gap: after the exporter's last sync
    apply(api, k.succeeding(k.RunSpec("train", "fit", "during"), now, now + 1)[-1:])
    wait_for(
        lambda: (exporter.value(c.PROM_EXPORTER_RELISTS, resource="jobs") or 0) > (relists or 0),
        20,
        "a relist after 410 Gone",
    )
    wait_for(lambda: runs(exporter, "succeeded", "Completed") == 2, 20, "the run that ended in the gap")
    assert runs(exporter, "succeeded", "Completed") == 2, "the run listed again is not counted twice"


def test_api_errors_are_counted_and_retried(api: FakeKubeServer, start_exporter, forward_server) -> None:  # type: ignore[no-untyped-def]
    exporter = start_exporter(forward_server().port)
    api.kube.fail_requests = 4
    api.kube.compact()  # force new requests
    now = time.time()  # the run ends during the outage, after the last sync: it must count
    apply(api, k.succeeding(k.RunSpec("train", "fit", "r1"), now, now + 1))
    wait_for(lambda: runs(exporter, "succeeded", "Completed") == 1, 30, "recovery after API errors")
    errors = sum(exporter.value(c.PROM_EXPORTER_WATCH_ERRORS, resource=r) or 0 for r in ("jobs", "pods"))
    assert errors >= 4
    assert exporter.get("/healthz")[0] == 200


def test_a_restarted_exporter_does_not_recount(api: FakeKubeServer, start_exporter, forward_server) -> None:  # type: ignore[no-untyped-def]
    fluentd = forward_server()
    first = start_exporter(fluentd.port)
    apply(api, k.oom_killed(k.RunSpec("train", "fit", "oom-1"), T0, T0 + 30))
    wait_for(lambda: runs(first, "failed", "OOMKilled") == 1, 20, "the failure")
    first.stop()
    second = start_exporter(fluentd.port)
    wait_for(lambda: second.value(c.PROM_LAST_FAILURE, pipeline="train", step="fit") == T0 + 30, 20, "gauges")
    assert runs(second, "failed", "OOMKilled") == 0, "counters restart at 0 and stay there: no re-alert"
    oom = {"pipeline": "train", "step": "fit", "reason": "OOMKilled"}
    assert second.value(c.PROM_POD_FAILURES, **oom) == 0
    info = second.value(
        c.PROM_LAST_FAILURE_INFO,
        pipeline="train",
        step="fit",
        run_id="oom-1",
        reason="OOMKilled",
        exit_code="137",
        namespace="ml",
        error="",
        pod="train-fit-oom-1-0",
    )
    assert info == T0 + 30, "the last failure's details survive the restart"
    wait_for(lambda: fluentd.event_count() >= 1, 10, "the first exporter's record")
    assert fluentd.event_count() == 1, "no second record for the old run"


def test_not_ready_until_listed_and_404(api: FakeKubeServer, tmp_path: Path, forward_server) -> None:  # type: ignore[no-untyped-def]
    api.kube.fail_requests = 10**6  # the API is down from the start
    exporter = Exporter(api.url, tmp_path / "home", forward_server().port)
    try:
        wait_for(lambda: exporter.get("/healthz")[0] == 200, 10, "liveness")
        assert exporter.get("/readyz")[0] == 503
        assert exporter.get("/nope")[0] == 404
        api.kube.fail_requests = 0
        wait_for(lambda: exporter.get("/readyz")[0] == 200, 40, "readiness once the API answers")
    finally:
        exporter.stop()
