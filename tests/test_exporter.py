"""The pipeline exporter's run tracking and metrics, fed with Jobs and Pods built from client models.

Over 400 lines, one concern: what the tracker makes of runs, pinned value by value
(outcomes, histogram buckets at their bounds, attempts, start times, waiting states).
"""

from __future__ import annotations

import inspect
import json
import logging
from typing import Any, get_type_hints

import pytest
from prometheus_client import CollectorRegistry

from exporters.pipeline_exporter import tracker as tracker_module
from exporters.pipeline_exporter.collectors import ExporterCollector, ExporterStats, RunCollector
from exporters.pipeline_exporter.config import ConfigError, ExporterConfig, Limits, SeriesLimits, Thresholds
from exporters.pipeline_exporter.figures import FinishedRun, RecordSink
from exporters.pipeline_exporter.kube import Raw
from exporters.pipeline_exporter.tracker import RunTracker
from pipeline_sdk import contract as c
from pipeline_sdk.testing import kube_objects as k

T0 = 1_795_000_000.0


class Clock:
    def __init__(self, now: float = T0 + 10_000) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Records:
    def __init__(self) -> None:
        self.sent: list[FinishedRun] = []

    def send(self, record: FinishedRun) -> None:
        self.sent.append(record)


def make(
    config: ExporterConfig | None = None, **kw: Any
) -> tuple[RunTracker, CollectorRegistry, Records, Clock]:
    clock = Clock()
    records = Records()
    tracker = RunTracker((config or ExporterConfig()).thresholds, records, clock=clock, **kw)
    registry = CollectorRegistry()
    registry.register(RunCollector(tracker))
    registry.register(ExporterCollector(ExporterStats(), tracker))
    return tracker, registry, records, clock


def wire(obj: Any) -> Any:
    """An object as the watch hands it over: JSON text, parsed (no string is shared with the code)."""
    return json.loads(json.dumps(obj))


def play(tracker: RunTracker, steps: list[k.Step], seen_before: float | None = None) -> None:
    for resource, action, obj in steps:
        handler = tracker.on_job if resource == "jobs" else tracker.on_pod
        handler(wire("DELETED" if action == "delete" else "MODIFIED"), wire(obj), seen_before)


def runs(registry: CollectorRegistry, pipeline: str, step: str, status: str, reason: str) -> float | None:
    labels = {"pipeline": pipeline, "step": step, "status": status, "reason": reason}
    return registry.get_sample_value(c.PROM_RUNS_TOTAL, labels)


def gauge(registry: CollectorRegistry, name: str, pipeline: str = "train", step: str = "fit") -> float | None:
    return registry.get_sample_value(name, {"pipeline": pipeline, "step": step})


def test_every_annotation_in_the_tracker_resolves() -> None:
    """As typing.get_type_hints and runtime type checkers read them (mypy checks them statically)."""
    defined = [
        v for v in vars(tracker_module).values() if getattr(v, "__module__", None) == tracker_module.__name__
    ]
    assert {v.__name__ for v in defined} >= {"RunTracker", "_Run", "_historical"}
    for obj in defined:
        get_type_hints(obj)
        for member in vars(obj).values() if inspect.isclass(obj) else ():
            if inspect.isfunction(member):
                get_type_hints(member)
    seen_before = {"seen_before": float | None, "return": type(None)}
    assert get_type_hints(RunTracker.on_job) == {"event_type": str, "raw": Raw, **seen_before}
    assert get_type_hints(RunTracker.tick) == {"now": float | None, "return": type(None)}
    hints = get_type_hints(RunTracker.__init__)
    assert (hints["thresholds"], hints["records"], hints["series"]) == (
        Thresholds | None,
        RecordSink | None,
        SeriesLimits | None,
    )


@pytest.mark.parametrize(
    ("scenario", "status", "reason", "exit_code"),
    [
        (k.succeeding, "succeeded", "Completed", None),
        (k.oom_killed, "failed", "OOMKilled", 137),
        (k.backoff_limit, "failed", "BackoffLimitExceeded", 1),
        (k.evicted, "failed", "Evicted", None),
        (k.deadline_exceeded, "failed", "DeadlineExceeded", None),
    ],
)
def test_run_outcomes(scenario, status: str, reason: str, exit_code: int | None) -> None:  # type: ignore[no-untyped-def]
    tracker, registry, records, _ = make()
    run = k.RunSpec("train", "fit", "r1", backoff_limit=1)
    play(tracker, scenario(run, T0 + 10, T0 + 70))
    assert runs(registry, "train", "fit", status, reason) == 1
    total = sum(runs(registry, "train", "fit", s.value, r.value) or 0 for s, r in c.RUN_OUTCOMES)
    assert total == 1, "counted exactly once"
    [record] = records.sent
    assert (record.run_id, record.pipeline, record.step, record.namespace) == ("r1", "train", "fit", "ml")
    assert (record.status.value, record.reason.value, record.exit_code) == (status, reason, exit_code)
    assert (record.start, record.end) == (T0 + 10, T0 + 70)
    assert record.image == k.IMAGE and record.pod is not None and record.node == "kind-worker"
    duration_count = registry.get_sample_value(
        c.PROM_RUN_DURATION + "_count", {"pipeline": "train", "step": "fit", "status": status}
    )
    assert duration_count == 1
    assert gauge(registry, c.PROM_RUNS_IN_PROGRESS) == 0


def test_every_outcome_series_starts_at_zero() -> None:
    tracker, registry, _, _ = make()
    play(tracker, [("jobs", "apply", k.job(k.RunSpec("train", "fit", "r1")))])  # just created
    for status, reason in c.RUN_OUTCOMES:
        assert runs(registry, "train", "fit", status.value, reason.value) == 0
    for reason in c.FAILURE_REASONS:
        labels = {"pipeline": "train", "step": "fit", "reason": reason.value}
        assert registry.get_sample_value(c.PROM_POD_FAILURES, labels) == 0
    assert gauge(registry, c.PROM_LAST_SUCCESS) == 0 and gauge(registry, c.PROM_LAST_FAILURE) == 0
    assert gauge(registry, c.PROM_RUNS_IN_PROGRESS) == 1


def test_backoff_limit_zero_reports_the_exit_code_as_error() -> None:
    tracker, registry, records, _ = make()
    run = k.RunSpec("train", "fit", "r1", backoff_limit=0)
    play(tracker, k.backoff_limit(run, T0, T0 + 5, attempts=1, exit_code=3))
    assert (records.sent[0].reason, records.sent[0].exit_code) == (c.RunReason.ERROR, 3)
    assert runs(registry, "train", "fit", "failed", "Error") == 1


def test_retried_attempts_count_as_pod_failures_even_when_the_run_succeeds() -> None:
    tracker, registry, records, _ = make()
    run = k.RunSpec("train", "fit", "r1", backoff_limit=2)
    play(
        tracker,
        [
            ("pods", "apply", k.pod(run, 0, "Failed", started=T0, terminated=("OOMKilled", 137, T0 + 5))),
            ("jobs", "apply", k.job(run, started=T0, active=1, failed=1)),
            (
                "pods",
                "apply",
                k.pod(run, 1, "Succeeded", started=T0 + 6, terminated=("Completed", 0, T0 + 9)),
            ),
            (
                "jobs",
                "apply",
                k.job(run, started=T0, failed=1, succeeded=1, condition=("Complete", None, T0 + 9)),
            ),
        ],
    )
    assert runs(registry, "train", "fit", "succeeded", "Completed") == 1
    oom = {"pipeline": "train", "step": "fit", "reason": "OOMKilled"}
    assert registry.get_sample_value(c.PROM_POD_FAILURES, oom) == 1
    assert records.sent[0].attempts == 2


def test_last_failure_gauges_and_info() -> None:
    tracker, registry, _, _ = make()
    play(tracker, k.oom_killed(k.RunSpec("train", "fit", "bad-1"), T0, T0 + 30))
    play(tracker, k.succeeding(k.RunSpec("train", "fit", "ok-1"), T0 + 40, T0 + 50))
    assert gauge(registry, c.PROM_LAST_FAILURE) == T0 + 30
    assert gauge(registry, c.PROM_LAST_FAILURE_START) == T0
    assert gauge(registry, c.PROM_LAST_SUCCESS) == T0 + 50
    info = {
        "pipeline": "train",
        "step": "fit",
        "run_id": "bad-1",
        "reason": "OOMKilled",
        "exit_code": "137",
        "namespace": "ml",
        "error": "",  # k.oom_killed's pods say nothing (tests/test_exporter_termination.py has words)
        "pod": "train-fit-bad-1-0",
    }
    assert registry.get_sample_value(c.PROM_LAST_FAILURE_INFO, info) == T0 + 30, "value: the run's end"
    play(tracker, k.backoff_limit(k.RunSpec("train", "fit", "bad-2", backoff_limit=1), T0 + 60, T0 + 80))
    assert registry.get_sample_value(c.PROM_LAST_FAILURE_INFO, info) is None, "one series: replaced"
    info.update(run_id="bad-2", reason="BackoffLimitExceeded", exit_code="1", pod="train-fit-bad-2-1")
    assert registry.get_sample_value(c.PROM_LAST_FAILURE_INFO, info) == T0 + 80


def test_a_finished_run_is_not_counted_again() -> None:
    tracker, registry, records, _ = make()
    run = k.RunSpec("train", "fit", "r1")
    steps = k.succeeding(run, T0, T0 + 5)
    play(tracker, steps)
    play(tracker, steps[-1:])  # the same Job again (a relist, a label change...)
    play(tracker, [("jobs", "delete", steps[-1][2])])  # and its deletion by the TTL controller
    assert runs(registry, "train", "fit", "succeeded", "Completed") == 1
    assert runs(registry, "train", "fit", "cancelled", "Deleted") == 0
    assert len(records.sent) == 1


def test_restart_does_not_recount_or_realert() -> None:
    """A new exporter lists runs that finished before it started: gauges yes, counters no."""
    run = k.RunSpec("train", "fit", "r1", backoff_limit=1)
    history = k.backoff_limit(run, T0, T0 + 20)
    final = [s for s in history if s[0] == "jobs"][-1:] + [s for s in history if s[0] == "pods"][-1:]
    tracker, registry, records, _ = make()
    play(tracker, final, seen_before=float("inf"))  # the initial list
    tracker.settle_all()
    assert runs(registry, "train", "fit", "failed", "BackoffLimitExceeded") == 0
    labels = {"pipeline": "train", "step": "fit", "reason": "Error"}
    assert registry.get_sample_value(c.PROM_POD_FAILURES, labels) == 0
    assert records.sent == []
    assert gauge(registry, c.PROM_LAST_FAILURE) == T0 + 20, "the alert's condition survives the restart"
    assert gauge(registry, c.PROM_LAST_SUCCESS) == 0


def test_a_relist_counts_what_finished_during_the_gap_only() -> None:
    tracker, registry, _, _ = make()
    old, new = k.RunSpec("train", "fit", "old"), k.RunSpec("train", "fit", "new")
    last_sync = T0 + 100
    play(tracker, k.succeeding(old, T0, T0 + 50)[-1:], seen_before=last_sync)  # ended before the gap
    play(tracker, k.succeeding(new, T0 + 90, T0 + 150)[-1:], seen_before=last_sync)  # ended in the gap
    assert runs(registry, "train", "fit", "succeeded", "Completed") == 1


def test_a_failed_job_waits_for_its_pods_reason() -> None:
    tracker, _, records, _ = make(settle=2.0)
    run = k.RunSpec("train", "fit", "r1")
    oom = k.oom_killed(run, T0, T0 + 30)
    job_failed, pod_failed = oom[4], oom[3]
    play(tracker, [job_failed])  # the Job's watch ran ahead of the Pod's
    assert records.sent == []
    play(tracker, [pod_failed])
    assert records.sent[0].reason is c.RunReason.OOM_KILLED
    # without the pod, the Job's own reason is used once the settle time is over
    tracker2, _, records2, clock2 = make(settle=2.0)
    play(tracker2, [k.oom_killed(k.RunSpec("train", "fit", "r2"), T0, T0 + 30)[4]])
    tracker2.tick(clock2.now + 1)
    assert records2.sent == []
    tracker2.tick(clock2.now + 3)
    assert records2.sent[0].reason is c.RunReason.BACKOFF_LIMIT_EXCEEDED


def test_image_pull_failure_after_grace() -> None:
    tracker, registry, records, clock = make(image_pull_grace=60)
    play(tracker, k.image_pull(k.RunSpec("train", "fit", "r1")))
    tracker.tick(clock.now + 59)
    assert records.sent == []
    tracker.tick(clock.now + 61)
    assert records.sent[0].reason is c.RunReason.IMAGE_PULL
    assert runs(registry, "train", "fit", "failed", "ImagePullBackOff") == 1


def test_deleted_while_running_is_cancelled() -> None:
    tracker, registry, _, _ = make()
    run = k.RunSpec("train", "fit", "r1")
    play(
        tracker,
        [
            ("jobs", "apply", k.job(run, started=T0, active=1)),
            ("pods", "apply", k.pod(run, 0, "Running", started=T0)),
        ],
    )
    assert gauge(registry, c.PROM_RUNS_IN_PROGRESS) == 1
    assert gauge(registry, c.PROM_OLDEST_RUNNING_START) == T0
    play(tracker, [("jobs", "delete", k.job(run, started=T0, active=1))])
    assert runs(registry, "train", "fit", "cancelled", "Deleted") == 1
    assert gauge(registry, c.PROM_OLDEST_RUNNING_START) is None, "absent when nothing runs"


def test_bare_pod_runs() -> None:
    tracker, registry, records, _ = make()
    run = k.RunSpec("serve", "batch", "p1")
    play(
        tracker,
        [("pods", "apply", k.pod(run, 0, "Failed", started=T0, terminated=("Error", 2, T0 + 3), bare=True))],
    )
    assert runs(registry, "serve", "batch", "failed", "Error") == 1
    assert records.sent[0].exit_code == 2


def test_run_id_falls_back_to_the_job_name() -> None:
    tracker, _, records, _ = make()
    run = k.RunSpec("train", "fit", "r1")
    steps = k.succeeding(run, T0, T0 + 1)
    for _, _, obj in steps:
        obj["metadata"]["labels"].pop(c.LABEL_RUN_ID)
        obj.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {}).pop(
            c.LABEL_RUN_ID, None
        )
    play(tracker, steps)
    assert records.sent[0].run_id == run.name


def test_thresholds_per_pipeline_and_step() -> None:
    config = ExporterConfig.parse(
        {
            "defaults": {"max_duration": "2h", "success_window": "1d"},
            "pipelines": {"train": {"success_window": "25h", "steps": {"fit": {"max_duration": 90}}}},
        }
    )
    assert config.thresholds.limits("train", "fit") == Limits(max_duration=90.0, success_window=25 * 3600.0)
    assert config.thresholds.limits("train", "eval") == Limits(
        max_duration=7200.0, success_window=25 * 3600.0
    )
    assert config.thresholds.limits("etl", "load") == Limits(max_duration=7200.0, success_window=86400.0)
    tracker, registry, _, _ = make(config)
    play(tracker, [("jobs", "apply", k.job(k.RunSpec("train", "fit", "r1")))])
    assert gauge(registry, c.PROM_MAX_DURATION) == 90
    assert gauge(registry, c.PROM_SUCCESS_WINDOW) == 25 * 3600


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"defaults": {"max_duration": "soon"}}, "config.defaults.max_duration: expected a duration"),
        (
            {"pipelines": {"train": {"max_durations": "1h"}}},
            "config.pipelines.train: unknown keys ['max_durations']",
        ),
        ({"namespace": ["ml"]}, "config: unknown keys ['namespace']"),
        ({"namespaces": "ml"}, "config.namespaces: expected a list"),
        ({"finished_runs_memory": 0}, "config.finished_runs_memory: expected a whole number"),
    ],
)
def test_config_errors_name_the_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", "\\[").replace("]", "\\]")):
        ExporterConfig.parse(raw)


# ---- values pinned exactly (the mutation test found these loose) ----------------------------------


def duration_samples(registry: CollectorRegistry, status: str = "succeeded") -> dict[str, float]:
    """The duration histogram of train/fit for ``status``: {le: cumulative count}, _count and _sum."""
    out: dict[str, float] = {}
    for metric in registry.collect():
        for s in metric.samples:
            if s.labels.get("status") != status or not s.name.startswith(c.PROM_RUN_DURATION):
                continue
            key = s.labels["le"] if s.name.endswith("_bucket") else s.name.removeprefix(c.PROM_RUN_DURATION)
            out[key] = s.value
    return out


def test_duration_buckets_are_cumulative_with_inclusive_bounds() -> None:
    tracker, registry, _, _ = make()
    for i, seconds in enumerate((10, 11, 30, 86400, 86401)):
        play(tracker, k.succeeding(k.RunSpec("train", "fit", f"r{i}"), T0, T0 + seconds))
    assert duration_samples(registry) == {
        "10.0": 1,  # exactly 10 s is in le=10
        "30.0": 3,
        "60.0": 3,
        "300.0": 3,
        "600.0": 3,
        "1800.0": 3,
        "3600.0": 3,
        "7200.0": 3,
        "14400.0": 3,
        "28800.0": 3,
        "86400.0": 4,  # exactly a day is in le=86400
        "+Inf": 5,
        "_count": 5,
        "_sum": 10 + 11 + 30 + 86400 + 86401,
    }
    assert duration_samples(registry, "failed") == {}, "no histogram for a status with no runs"


def test_finished_total_counts_counted_and_historical_runs_once() -> None:
    tracker, _, records, _ = make()
    play(tracker, k.succeeding(k.RunSpec("train", "fit", "a"), T0, T0 + 1))
    assert tracker.finished_total == 1
    play(tracker, k.succeeding(k.RunSpec("train", "fit", "a"), T0, T0 + 1)[-1:])  # the same run again
    assert tracker.finished_total == 1
    play(tracker, k.succeeding(k.RunSpec("train", "fit", "b"), T0, T0 + 1)[-1:], seen_before=float("inf"))
    assert tracker.finished_total == 2, "a historical run is finished, though not counted"
    assert len(records.sent) == 1


def test_a_jobs_own_counts_of_attempts_are_its_attempts() -> None:
    tracker, _, records, _ = make()
    run = k.RunSpec("train", "fit", "r1", backoff_limit=6)
    play(tracker, [("jobs", "apply", k.job(run, started=T0, active=1))])
    done = k.job(run, started=T0, active=1, succeeded=2, failed=3, condition=("Complete", None, T0 + 9))
    play(tracker, [("jobs", "apply", done)])
    assert records.sent[0].attempts == 1 + 2 + 3, "active + succeeded + failed, with no pod seen"


@pytest.mark.parametrize("order", [(1, 0), (0, 1)], ids=["later first", "earlier first"])
def test_the_earliest_pod_start_is_the_runs_start(order: tuple[int, int]) -> None:
    tracker, _, records, _ = make()
    run = k.RunSpec("train", "fit", "r1", backoff_limit=1)
    starts = {0: T0 + 5, 1: T0 + 50}
    play(tracker, [("jobs", "apply", k.job(run, active=1))])  # no startTime of its own
    for attempt in order:
        play(tracker, [("pods", "apply", k.pod(run, attempt, "Running", started=starts[attempt]))])
    play(tracker, [("jobs", "apply", k.job(run, succeeded=1, condition=("Complete", None, T0 + 60)))])
    assert (records.sent[0].start, records.sent[0].end) == (T0 + 5, T0 + 60)


def test_waiting_starts_at_the_first_pending_pull_error_and_fails_at_exactly_the_grace() -> None:
    tracker, registry, records, clock = make(image_pull_grace=60)
    run = k.RunSpec("train", "fit", "r1")
    since = clock.now
    play(tracker, [("pods", "apply", k.pod(run, 0, "Pending", waiting="ErrImagePull"))])
    clock.now += 30  # a second report of the same wait does not restart the grace
    play(tracker, [("pods", "apply", k.pod(run, 0, "Pending", waiting="ImagePullBackOff"))])
    tracker.tick(since + 59.999)
    assert records.sent == []
    tracker.tick(since + 60)
    [record] = records.sent
    assert (record.status, record.reason, record.end) == (
        c.RunStatus.FAILED,
        c.RunReason.IMAGE_PULL,
        since + 60,
    )
    assert runs(registry, "train", "fit", "failed", "ImagePullBackOff") == 1


def test_running_clears_a_wait_and_plain_pending_sets_none() -> None:
    tracker, _, records, clock = make(image_pull_grace=60)
    run = k.RunSpec("train", "fit", "r1")
    play(tracker, [("pods", "apply", k.pod(run, 0, "Pending", waiting="ImagePullBackOff"))])
    play(tracker, [("pods", "apply", k.pod(run, 0, "Running", started=clock.now))])
    tracker.tick(clock.now + 3600)
    assert records.sent == [], "the image came: no failure"
    other = k.RunSpec("train", "fit", "r2")
    play(tracker, [("pods", "apply", k.pod(other, 0, "Pending"))])  # scheduling: no waiting reason
    tracker.tick(clock.now + 3600)
    assert records.sent == []
    config = k.RunSpec("train", "fit", "r3")
    play(tracker, [("pods", "apply", k.pod(config, 0, "Pending", waiting="CreateContainerConfigError"))])
    tracker.tick(clock.now + 60)
    assert [r.reason for r in records.sent] == [c.RunReason.CONFIG_ERROR]


def test_only_a_pending_pod_waits() -> None:
    """A failed attempt still showing a pull error does not start the grace: the Job retries."""
    tracker, _, records, clock = make(image_pull_grace=60)
    run = k.RunSpec("train", "fit", "r1", backoff_limit=2)
    play(tracker, [("jobs", "apply", k.job(run, active=1))])
    play(tracker, [("pods", "apply", k.pod(run, 0, "Failed", waiting="ImagePullBackOff"))])
    tracker.tick(clock.now + 3600)
    assert records.sent == []


# ---- defaults, boundaries and orderings, pinned (the mutation test found these loose too) -----------

R = c.RunReason


def records_of(records: Records) -> list[tuple[str, str, str, float, float]]:
    return [(r.run_id, r.status.value, r.reason.value, r.start, r.end) for r in records.sent]


def test_the_default_settle_time_and_image_pull_grace_are_exact() -> None:
    tracker, registry, records, clock = make()  # settle 2 s, grace 120 s
    play(tracker, [k.oom_killed(k.RunSpec("train", "fit", "job"), T0, T0 + 30)[4]])  # no pod seen
    settled_at = clock.now + 2
    tracker.tick(settled_at - 0.001)
    assert records.sent == []
    tracker.tick(settled_at)
    assert records_of(records) == [("job", "failed", "BackoffLimitExceeded", T0, T0 + 30)]
    since = clock.now
    play(
        tracker,
        [("pods", "apply", k.pod(k.RunSpec("train", "fit", "pull"), 0, "Pending", waiting="ErrImagePull"))],
    )
    clock.now = since + 119.999
    tracker.tick()  # the tracker's own clock
    assert len(records.sent) == 1
    clock.now = since + 120
    tracker.tick()
    assert records.sent[1].reason is R.IMAGE_PULL and records.sent[1].end == since + 120
    assert runs(registry, "train", "fit", "failed", "ImagePullBackOff") == 1


def test_a_jobs_failure_settles_at_exactly_its_deadline() -> None:
    tracker, _, records, clock = make(settle=5.0)
    play(tracker, [k.oom_killed(k.RunSpec("train", "fit", "r1"), T0, T0 + 30)[4]])
    tracker.tick(clock.now + 4.999)
    assert records.sent == []
    tracker.tick(clock.now + 5.0)
    assert [r.reason for r in records.sent] == [R.BACKOFF_LIMIT_EXCEEDED]


def test_the_oldest_finished_run_is_the_one_forgotten() -> None:
    tracker, registry, records, _ = make(max_finished=2)
    finals = [k.succeeding(k.RunSpec("train", "fit", f"r{i}"), T0 + i, T0 + i + 1)[-1:] for i in range(3)]
    for final in finals:
        play(tracker, final)
    play(tracker, finals[2])  # the newest is remembered
    assert runs(registry, "train", "fit", "succeeded", "Completed") == 3
    play(tracker, finals[0])  # the oldest was forgotten
    assert runs(registry, "train", "fit", "succeeded", "Completed") == 4
    assert [r.run_id for r in records.sent] == ["r0", "r1", "r2", "r0"]


def test_runs_in_progress_and_runs_held_count_every_run_once() -> None:
    series = SeriesLimits(allowed_pipelines=("train",))
    tracker, registry, _, _ = make(series=series)
    play(
        tracker,
        [("pods", "apply", k.pod(k.RunSpec("etl", "load", "e1"), 0, "Running", started=T0, bare=True))],
    )
    for i in range(3):
        play(
            tracker, [("jobs", "apply", k.job(k.RunSpec("train", "fit", f"live-{i}"), started=T0, active=1))]
        )
    for i in range(5):
        play(tracker, k.succeeding(k.RunSpec("train", "eval", f"done-{i}"), T0, T0 + 1)[-1:])
    assert gauge(registry, c.PROM_RUNS_IN_PROGRESS) == 3
    assert gauge(registry, c.PROM_RUNS_IN_PROGRESS, step="eval") == 0
    assert gauge(registry, c.PROM_RUNS_IN_PROGRESS, "etl", "load") is None, "a refused pair has no series"
    assert tracker.snapshot().tracked == 1 + 3 + 5
    assert tracker.sizes() == (9, 2, 1)
    assert registry.get_sample_value(c.PROM_EXPORTER_TRACKED_RUNS) == 9


def test_a_run_refused_at_its_start_stays_uncounted_when_its_pair_gets_series_later() -> None:
    tracker, registry, records, clock = make(series=SeriesLimits(max_pipeline_steps=1, idle_expiry=60))
    play(tracker, k.succeeding(k.RunSpec("a", "fit", "a1"), T0, T0 + 1))  # the one pair with series
    early, late = k.RunSpec("b", "fit", "b1"), k.RunSpec("b", "fit", "b2")
    play(tracker, [("jobs", "apply", k.job(early, started=T0, active=1))])  # refused: the cap is reached
    tracker.tick(clock.now + 61)  # pair a expires, which makes room
    play(tracker, [("jobs", "apply", k.job(late, started=T0, active=1))])  # admitted: b gets series
    assert gauge(registry, c.PROM_RUNS_IN_PROGRESS, "b", "fit") == 1
    for run in (early, late):
        play(
            tracker,
            [("jobs", "apply", k.job(run, started=T0, succeeded=1, condition=("Complete", None, T0 + 9)))],
        )
    assert runs(registry, "b", "fit", "succeeded", "Completed") == 1, "only the run that started with series"
    assert [r.run_id for r in records.sent] == ["a1", "b1", "b2"] and tracker.refused_total == 1


def test_only_a_run_seen_running_has_a_running_start() -> None:
    tracker, registry, _, _ = make()
    run = k.RunSpec("train", "fit", "r1", backoff_limit=2)
    play(
        tracker,
        [
            ("jobs", "apply", k.job(run, started=T0, active=1)),
            ("pods", "apply", k.pod(run, 0, "Failed", started=T0, terminated=("Error", 1, T0 + 1))),
            ("pods", "apply", k.pod(run, 1, "Pending")),  # the retry waits for a node: nothing runs
            ("pods", "apply", k.pod(k.RunSpec("train", "fit", "lost"), 0, "Unknown", started=T0, bare=True)),
        ],
    )
    assert gauge(registry, c.PROM_RUNS_IN_PROGRESS) == 2
    assert gauge(registry, c.PROM_OLDEST_RUNNING_START) is None, "pending, failed or unknown is not running"
    for i, start in ((2, T0 + 50), (3, T0 + 5)):  # later first
        other = k.RunSpec("train", "fit", f"r{i}")
        play(tracker, [("pods", "apply", k.pod(other, 0, "Running", started=start, bare=True))])
    assert gauge(registry, c.PROM_OLDEST_RUNNING_START) == T0 + 5


def test_a_bare_pods_run_record_and_its_phases() -> None:
    tracker, registry, records, clock = make()
    run = k.RunSpec("serve", "batch", "p1")
    play(tracker, [("pods", "apply", k.pod(run, 0, "Unknown", started=T0, bare=True))])  # its node is lost
    play(tracker, [("pods", "apply", k.pod(run, 0, "Running", started=T0, bare=True))])
    assert records.sent == [] and gauge(registry, c.PROM_RUNS_IN_PROGRESS, "serve", "batch") == 1
    failed = k.pod(run, 0, "Failed", started=T0, terminated=("Error", 2, T0 + 3), bare=True)
    tracker.on_pod(wire("ADDED"), wire(failed))
    [record] = records.sent
    assert (record.status, record.reason, record.exit_code, record.start, record.end) == (
        c.RunStatus.FAILED,
        R.ERROR,
        2,
        T0,
        T0 + 3,
    )
    assert (record.image, record.node, record.pod, record.attempts) == (
        k.IMAGE,
        "kind-worker",
        run.name + "-0",
        1,
    )
    ok = k.RunSpec("serve", "batch", "p2")
    play(
        tracker,
        [
            (
                "pods",
                "apply",
                k.pod(ok, 0, "Succeeded", started=T0, terminated=("Completed", 0, T0 + 8), bare=True),
            )
        ],
    )
    gone = k.RunSpec("serve", "batch", "p3")
    play(tracker, [("pods", "apply", k.pod(gone, 0, "Running", started=T0, bare=True))])
    play(tracker, [("pods", "delete", k.pod(gone, 0, "Running", started=T0, bare=True))])
    assert records_of(records)[1:] == [
        ("p2", "succeeded", "Completed", T0, T0 + 8),
        ("p3", "cancelled", "Deleted", T0, clock.now),
    ]
    assert runs(registry, "serve", "batch", "cancelled", "Deleted") == 1


def test_objects_built_in_code_read_as_objects_from_the_wire() -> None:
    """The same runs from objects whose strings are the code's own (as a test or a client builds them)."""
    tracker, registry, records, _ = make()
    for name, phase, terminated in (
        ("p1", "Failed", ("Error", 2, T0 + 3)),
        ("p2", "Succeeded", ("Completed", 0, T0 + 4)),
    ):
        tracker.on_pod(
            "MODIFIED",
            k.pod(k.RunSpec("serve", "batch", name), 0, phase, started=T0, terminated=terminated, bare=True),
        )
    run = k.RunSpec("train", "fit", "r1")
    for resource, _, obj in k.oom_killed(run, T0, T0 + 30):
        handler = tracker.on_job if resource == "jobs" else tracker.on_pod
        handler("MODIFIED", obj)
    assert records_of(records) == [
        ("p1", "failed", "Error", T0, T0 + 3),
        ("p2", "succeeded", "Completed", T0, T0 + 4),
        ("r1", "failed", "OOMKilled", T0, T0 + 30),
    ]
    assert runs(registry, "serve", "batch", "failed", "Error") == 1


def test_added_and_modified_events_do_not_end_a_run_only_deleted_does() -> None:
    tracker, registry, records, _ = make()
    run = k.RunSpec("train", "fit", "r1")
    for event in ("ADDED", "MODIFIED", "BOOKMARK"):
        tracker.on_job(wire(event), wire(k.job(run, started=T0, active=1)))
        bare = k.RunSpec("train", "fit", "bare")
        tracker.on_pod(wire(event), wire(k.pod(bare, 0, "Running", started=T0, bare=True)))
    assert records.sent == [] and gauge(registry, c.PROM_RUNS_IN_PROGRESS) == 2
    tracker.on_job(wire("DELETED"), wire(k.job(run, started=T0, active=1)))
    assert [(r.run_id, r.reason) for r in records.sent] == [("r1", R.DELETED)]


def test_a_run_id_comes_from_the_first_object_that_has_one() -> None:
    tracker, _, records, _ = make()
    unlabelled = k.RunSpec("train", "fit", "r1")
    pod = k.pod(unlabelled, 0, "Running", started=T0)
    del pod["metadata"]["labels"][c.LABEL_RUN_ID]
    play(tracker, [("pods", "apply", pod)])  # the pod comes first: the run is named after its Job
    job = k.job(unlabelled, started=T0, succeeded=1, condition=("Complete", None, T0 + 5))
    del job["metadata"]["labels"][c.LABEL_RUN_ID]
    del job["spec"]["template"]["metadata"]["labels"][c.LABEL_RUN_ID]
    play(tracker, [("jobs", "apply", job)])
    labelled = k.RunSpec("train", "fit", "r2")
    pod2 = k.pod(labelled, 0, "Running", started=T0)
    del pod2["metadata"]["labels"][c.LABEL_RUN_ID]
    play(tracker, [("pods", "apply", pod2)])
    play(
        tracker,
        [("jobs", "apply", k.job(labelled, started=T0, succeeded=1, condition=("Complete", None, T0 + 5)))],
    )
    assert [r.run_id for r in records.sent] == [unlabelled.name, "r2"]


def test_a_job_seen_without_pods_keeps_its_own_start_image_and_creation() -> None:
    tracker, _, records, clock = make()
    early = k.RunSpec("train", "fit", "r1", created=T0 - 100)
    play(
        tracker,
        [("jobs", "apply", k.job(early, started=T0, succeeded=1, condition=("Complete", None, T0 + 9)))],
    )
    unstarted = k.RunSpec("train", "fit", "r2", created=T0 - 50)
    play(tracker, [("jobs", "apply", k.job(unstarted)), ("jobs", "delete", k.job(unstarted))])
    undated = k.job(k.RunSpec("train", "fit", "r3"))
    del undated["metadata"]["creationTimestamp"]
    first_seen = clock.now
    play(tracker, [("jobs", "apply", undated)])
    clock.now += 30
    play(tracker, [("jobs", "delete", undated)])
    assert records_of(records) == [
        ("r1", "succeeded", "Completed", T0, T0 + 9),
        ("r2", "cancelled", "Deleted", T0 - 50, first_seen),
        ("r3", "cancelled", "Deleted", first_seen, first_seen + 30),
    ]
    assert [(r.image, r.attempts, r.pod, r.node) for r in records.sent] == [(k.IMAGE, 1, None, None)] * 3


def test_the_pods_image_wins_over_the_jobs_template() -> None:
    tracker, _, records, _ = make()
    for i, pod_first in enumerate((False, True)):
        run = k.RunSpec("train", "fit", f"r{i}")
        pod = k.pod(run, 0, "Running", started=T0)
        pod["spec"]["containers"][0]["image"] = "ghcr.io/mlobs/demo-train:0.2.0"
        job = ("jobs", "apply", k.job(run, started=T0, active=1))
        steps = [("pods", "apply", pod), job] if pod_first else [job, ("pods", "apply", pod)]
        done = k.job(run, started=T0, succeeded=1, condition=("Complete", None, T0 + 9))
        play(tracker, [*steps, ("jobs", "apply", done)])
    assert [r.image for r in records.sent] == ["ghcr.io/mlobs/demo-train:0.2.0"] * 2


def with_restart(pod: dict[str, Any], restarts: int, reason: str, code: int) -> dict[str, Any]:
    """The pod after its container was restarted in place (restartPolicy OnFailure)."""
    status = pod["status"]["containerStatuses"][0]
    status["restartCount"] = restarts
    status["lastState"] = {
        "terminated": {"reason": reason, "exitCode": code, "finishedAt": "2026-11-18T20:00:00Z"}
    }
    return pod


def test_restarts_in_place_count_as_pod_failures_once_each() -> None:
    tracker, registry, _, _ = make()
    run = k.RunSpec("train", "fit", "r1")
    play(tracker, [("jobs", "apply", k.job(run, started=T0, active=1))])
    oom = {"pipeline": "train", "step": "fit", "reason": "OOMKilled"}
    error = {**oom, "reason": "Error"}
    for restarts, reason, code in ((1, "OOMKilled", 137), (1, "OOMKilled", 137), (2, "Error", 1)):
        play(
            tracker,
            [("pods", "apply", with_restart(k.pod(run, 0, "Running", started=T0), restarts, reason, code))],
        )
    assert registry.get_sample_value(c.PROM_POD_FAILURES, oom) == 1, "the same restart seen twice"
    assert registry.get_sample_value(c.PROM_POD_FAILURES, error) == 1
    listed = k.RunSpec("train", "fit", "r2")
    old = with_restart(k.pod(listed, 0, "Running", started=T0), 3, "OOMKilled", 137)
    play(tracker, [("pods", "apply", old)], seen_before=float("inf"))  # restarted before the exporter began
    assert registry.get_sample_value(c.PROM_POD_FAILURES, oom) == 1


def test_a_relist_does_not_count_an_attempt_that_failed_before_the_last_sync() -> None:
    tracker, registry, records, _ = make()  # the clock is far past the last sync
    run = k.RunSpec("train", "fit", "r1")
    steps = k.oom_killed(run, T0, T0 + 30)
    play(tracker, [steps[3], steps[4]], seen_before=T0 + 100)
    oom = {"pipeline": "train", "step": "fit", "reason": "OOMKilled"}
    assert registry.get_sample_value(c.PROM_POD_FAILURES, oom) == 0
    assert records.sent == [] and gauge(registry, c.PROM_LAST_FAILURE) == T0 + 30


def test_a_run_ending_exactly_at_the_last_sync_is_history() -> None:
    tracker, registry, records, _ = make()
    last_sync = T0 + 100
    for name, end in (("before", T0 + 99), ("at", last_sync), ("after", T0 + 101)):
        play(tracker, k.succeeding(k.RunSpec("train", "fit", name), T0, end)[-1:], seen_before=last_sync)
    assert [r.run_id for r in records.sent] == ["after"]
    assert runs(registry, "train", "fit", "succeeded", "Completed") == 1
    assert gauge(registry, c.PROM_LAST_SUCCESS) == T0 + 101


def failed_job(run: k.RunSpec, failed: int, reason: str | None, end: float = T0 + 30) -> k.Step:
    return ("jobs", "apply", k.job(run, started=T0, failed=failed, condition=("Failed", reason, end)))


def failed_pod(run: k.RunSpec, attempt: int, reason: str, code: int) -> k.Step:
    return (
        "pods",
        "apply",
        k.pod(run, attempt, "Failed", started=T0, terminated=(reason, code, T0 + 10 * attempt + 9)),
    )


def test_a_failed_job_waits_until_every_failed_pod_it_counts_was_seen() -> None:
    tracker, _, records, clock = make()
    run = k.RunSpec("train", "fit", "r1", backoff_limit=1)
    play(tracker, [failed_pod(run, 0, "Error", 1), failed_job(run, 2, "BackoffLimitExceeded")])
    assert records.sent == [], "the second attempt's reason is still on its way"
    play(tracker, [failed_pod(run, 1, "OOMKilled", 137)])
    assert [(r.reason, r.exit_code, r.attempts) for r in records.sent] == [(R.OOM_KILLED, 137, 2)]
    stale = k.RunSpec("train", "fit", "r2", backoff_limit=1)  # the Job's count lags its pods
    play(
        tracker,
        [
            failed_pod(stale, 0, "Error", 1),
            failed_pod(stale, 1, "Error", 2),
            failed_job(stale, 1, "BackoffLimitExceeded"),
        ],
    )
    assert [(r.reason, r.exit_code) for r in records.sent[1:]] == [(R.BACKOFF_LIMIT_EXCEEDED, 2)]
    early = k.RunSpec("train", "fit", "r3")  # failed before any pod did (its deadline, say)
    play(tracker, [failed_job(early, 0, "DeadlineExceeded")])
    assert len(records.sent) == 2
    tracker.tick(clock.now + 2)
    assert [(r.run_id, r.reason, r.exit_code) for r in records.sent[2:]] == [
        ("r3", R.DEADLINE_EXCEEDED, None)
    ]


@pytest.mark.parametrize(
    ("condition_reason", "pod", "reason", "exit_code"),
    [
        ("PodFailurePolicy", ("Error", 3), R.ERROR, 3),  # a reason the tracker does not map: the pod's
        (None, ("Error", 4), R.ERROR, 4),
        (None, None, R.UNKNOWN, None),
        ("DeadlineExceeded", ("Error", 5), R.DEADLINE_EXCEEDED, 5),
        ("BackoffLimitExceeded", ("OOMKilled", 137), R.OOM_KILLED, 137),
    ],
)
def test_a_failed_jobs_reason(
    condition_reason: str | None, pod: tuple[str, int] | None, reason: c.RunReason, exit_code: int | None
) -> None:
    tracker, registry, records, clock = make()
    run = k.RunSpec("train", "fit", "r1", backoff_limit=1)
    steps = [failed_pod(run, 0, *pod)] if pod else []
    play(tracker, [*steps, failed_job(run, len(steps), condition_reason)])
    tracker.tick(clock.now + 2)
    assert [(r.reason, r.exit_code) for r in records.sent] == [(reason, exit_code)]
    assert runs(registry, "train", "fit", "failed", reason.value) == 1


@pytest.mark.parametrize(
    ("pod_reason", "reason"),
    [
        (None, R.BACKOFF_LIMIT_EXCEEDED),
        ("DeadlineExceeded", R.BACKOFF_LIMIT_EXCEEDED),
        ("Evicted", R.EVICTED),
    ],
)
def test_no_retries_is_an_error_only_for_an_exit_code(pod_reason: str | None, reason: c.RunReason) -> None:
    """With backoffLimit 0, a non-zero exit is reported as Error; any other cause keeps the Job's reason."""
    tracker, _, records, _ = make()
    run = k.RunSpec("train", "fit", "r1", backoff_limit=0)
    pod = k.pod(
        run, 0, "Failed", started=T0, pod_reason=pod_reason
    )  # no exit code: Unknown, or the pod's reason
    play(tracker, [("pods", "apply", pod), failed_job(run, 1, "BackoffLimitExceeded")])
    assert [r.reason for r in records.sent] == [reason]


def test_the_last_failure_is_the_latest_end_and_a_cancelled_run_is_not_one() -> None:
    tracker, registry, _, _ = make()

    def info(run_id: str) -> float | None:
        labels = {"pipeline": "train", "step": "fit", "run_id": run_id, "reason": "OOMKilled"}
        return registry.get_sample_value(
            c.PROM_LAST_FAILURE_INFO,
            {**labels, "exit_code": "137", "namespace": "ml", "error": "", "pod": f"train-fit-{run_id}-0"},
        )

    play(tracker, k.oom_killed(k.RunSpec("train", "fit", "late"), T0 + 10, T0 + 30))
    play(tracker, k.oom_killed(k.RunSpec("train", "fit", "early"), T0, T0 + 20))  # ended before: ignored
    assert (info("late"), info("early"), gauge(registry, c.PROM_LAST_FAILURE_START)) == (
        T0 + 30,
        None,
        T0 + 10,
    )
    play(tracker, k.oom_killed(k.RunSpec("train", "fit", "same"), T0 + 20, T0 + 30))  # same end: the newer
    assert (info("late"), info("same"), gauge(registry, c.PROM_LAST_FAILURE_START)) == (
        None,
        T0 + 30,
        T0 + 20,
    )
    gone = k.RunSpec("train", "fit", "gone")
    play(
        tracker, [("jobs", "apply", k.job(gone, started=T0 + 40, active=1)), ("jobs", "delete", k.job(gone))]
    )
    assert gauge(registry, c.PROM_LAST_FAILURE) == T0 + 30 and info("same") == T0 + 30
    assert gauge(registry, c.PROM_LAST_SUCCESS) == 0


def test_a_duration_is_end_minus_start_whatever_the_epoch() -> None:
    tracker, registry, _, _ = make()
    play(tracker, k.succeeding(k.RunSpec("train", "fit", "r1", created=1.0), 5.0, 100.0))  # 1970
    assert duration_samples(registry)["_sum"] == 95
    assert duration_samples(registry)["60.0"] == 0 and duration_samples(registry)["300.0"] == 1


def test_an_idle_pair_expires_after_its_last_run_whatever_the_epoch() -> None:
    tracker, registry, _, _ = make(series=SeriesLimits(idle_expiry=60))
    play(
        tracker,
        k.succeeding(k.RunSpec("train", "fit", "r1", created=1.0), 5.0, 300.0)[-1:],
        seen_before=float("inf"),
    )
    tracker.tick(360.0)  # exactly the expiry after the end: kept
    assert registry.get_sample_value(c.PROM_EXPORTER_TRACKED_STEPS) == 1
    tracker.tick(900.0)
    assert registry.get_sample_value(c.PROM_EXPORTER_TRACKED_STEPS) == 0


# ---- one run record per attempt: every pod of a Job, the last one by creation ----------------------


def attempts_of(
    record: FinishedRun,
) -> list[tuple[str | None, str, str, int | None, float, float, str | None]]:
    return [
        (a.pod, a.status.value, a.reason.value, a.exit_code, a.start, a.end, a.node)
        for a in record.per_attempt
    ]


def retried(run: k.RunSpec, names: list[str], tries: list[tuple[str, int]], span: float = 20) -> list[k.Step]:
    """A Job whose pods fail one after the other: pod i starts at T0 + i * span, ends 5 s later."""
    steps: list[k.Step] = [("jobs", "apply", k.job(run, started=T0, active=1))]
    for i, ((reason, code), name) in enumerate(zip(tries, names, strict=True)):
        t, node = T0 + span * i, f"node-{i}"
        steps += [
            ("pods", "apply", k.pod(run, i, "Running", started=t, name=name, node=node)),
            (
                "pods",
                "apply",
                k.pod(run, i, "Failed", started=t, terminated=(reason, code, t + 5), name=name, node=node),
            ),
            ("jobs", "apply", k.job(run, started=T0, active=int(i + 1 < len(tries)), failed=i + 1)),
        ]
    return steps


def test_a_retried_job_has_a_record_per_attempt_each_with_its_own_outcome() -> None:
    tracker, registry, records, _ = make()
    run = k.RunSpec("train", "fit", "r1", backoff_limit=2)
    names = [f"{run.name}-{s}" for s in ("zq9xk", "m4t7c", "a2b3c")]  # created in this order: names sort back
    steps = retried(run, names, [("OOMKilled", 137), ("Error", 1), ("Error", 2)])
    play(tracker, [*steps, failed_job(run, 3, "BackoffLimitExceeded", T0 + 46)])
    [record] = records.sent
    assert attempts_of(record) == [
        (names[0], "failed", "OOMKilled", 137, T0, T0 + 5, "node-0"),
        (names[1], "failed", "Error", 1, T0 + 20, T0 + 25, "node-1"),
        (names[2], "failed", "BackoffLimitExceeded", 2, T0 + 40, T0 + 45, "node-2"),  # the run's outcome
    ]
    assert [a.image for a in record.per_attempt] == [k.IMAGE] * 3
    assert (record.reason, record.exit_code, record.pod, record.node, record.attempts) == (
        R.BACKOFF_LIMIT_EXCEEDED,
        2,
        names[2],
        "node-2",
        3,
    )
    assert (record.start, record.end) == (T0, T0 + 46)
    assert runs(registry, "train", "fit", "failed", "BackoffLimitExceeded") == 1, "the run is counted once"
    failures = {
        r: registry.get_sample_value(c.PROM_POD_FAILURES, {"pipeline": "train", "step": "fit", "reason": r})
        for r in ("OOMKilled", "Error")
    }
    assert failures == {"OOMKilled": 1, "Error": 2}, "pod failures: one per attempt"


def test_a_job_that_succeeds_on_a_retry_reports_the_failed_attempts_too() -> None:
    tracker, registry, records, _ = make()
    run = k.RunSpec("train", "fit", "r1", backoff_limit=2)
    names = [f"{run.name}-{s}" for s in ("b", "a")]
    steps = retried(run, names[:1], [("OOMKilled", 137)])
    done = k.pod(run, 1, "Succeeded", started=T0 + 20, terminated=("Completed", 0, T0 + 29), name=names[1])
    complete = k.job(run, started=T0, failed=1, succeeded=1, condition=("Complete", None, T0 + 30))
    play(tracker, [*steps, ("pods", "apply", done), ("jobs", "apply", complete)])
    [record] = records.sent
    assert attempts_of(record) == [
        (names[0], "failed", "OOMKilled", 137, T0, T0 + 5, "node-0"),
        (names[1], "succeeded", "Completed", None, T0 + 20, T0 + 29, "kind-worker"),
    ]
    assert (record.status, record.reason, record.exit_code, record.pod) == (
        c.RunStatus.SUCCEEDED,
        R.COMPLETED,
        None,
        names[1],
    )
    assert runs(registry, "train", "fit", "succeeded", "Completed") == 1


def test_the_last_attempt_is_the_pod_created_last_whatever_the_order_of_events() -> None:
    tracker, _, records, _ = make()
    run = k.RunSpec("train", "fit", "r1", backoff_limit=1)
    old = k.pod(run, 0, "Failed", started=T0, terminated=("Error", 3, T0 + 5), name="r1-b", node="node-a")
    new = k.pod(
        run, 1, "Succeeded", started=T0 + 10, terminated=("Completed", 0, T0 + 20), name="r1-a", node="node-b"
    )
    complete = k.job(run, started=T0, failed=1, succeeded=1, condition=("Complete", None, T0 + 21))
    play(
        tracker, [("pods", "apply", new), ("pods", "apply", old), ("jobs", "apply", complete)]
    )  # the old one late
    [record] = records.sent
    assert (record.pod, record.node) == ("r1-a", "node-b")
    assert [(a.pod, a.status.value) for a in record.per_attempt] == [
        ("r1-b", "failed"),
        ("r1-a", "succeeded"),
    ]
    # created in the same second: the name decides (the greater is the later), not the event order
    tie = k.RunSpec("train", "fit", "r2", backoff_limit=1)
    second = k.pod(tie, 0, "Failed", started=T0, terminated=("OOMKilled", 137, T0 + 5), name="r2-b")
    first = k.pod(tie, 1, "Failed", started=T0, terminated=("Error", 1, T0 + 6), name="r2-a")
    play(
        tracker,
        [("pods", "apply", second), ("pods", "apply", first), failed_job(tie, 2, "BackoffLimitExceeded")],
    )
    assert attempts_of(records.sent[1]) == [
        ("r2-a", "failed", "Error", 1, T0, T0 + 6, "kind-worker"),
        (
            "r2-b",
            "failed",
            "OOMKilled",
            137,
            T0,
            T0 + 5,
            "kind-worker",
        ),  # the last pod's OOM is the root cause
    ]
    assert (records.sent[1].reason, records.sent[1].exit_code, records.sent[1].pod) == (
        R.OOM_KILLED,
        137,
        "r2-b",
    )


def test_an_attempt_without_a_finish_ends_when_the_next_pod_was_created_or_with_the_run() -> None:
    tracker, _, records, clock = make()
    run = k.RunSpec("train", "fit", "r1", backoff_limit=2)
    e0 = k.pod(run, 0, "Failed", started=T0, pod_reason="Evicted")  # no container finished
    e1 = k.pod(run, 1, "Failed", started=T0 + 45, created=T0 + 30, pod_reason="Evicted")
    e2 = k.pod(run, 2, "Running", started=T0 + 50, created=T0 + 40)  # created before e1 started
    play(tracker, [("pods", "apply", p) for p in (e0, e1, e2)])
    play(tracker, [("jobs", "delete", k.job(run, active=1))])
    assert attempts_of(records.sent[0]) == [
        (run.name + "-0", "failed", "Evicted", None, T0, T0 + 30, "kind-worker"),  # when e1 replaced it
        (run.name + "-1", "failed", "Evicted", None, T0 + 45, clock.now, "kind-worker"),
        (run.name + "-2", "cancelled", "Deleted", None, T0 + 50, clock.now, "kind-worker"),
    ]
    side = k.RunSpec("train", "fit", "r2", backoff_limit=2)  # pods side by side (a parallel Job)
    p0 = k.pod(side, 0, "Failed", started=T0 + 9, created=T0, pod_reason="Evicted")
    p1 = k.pod(side, 1, "Pending", created=T0 + 9)  # created as p0 started; never started itself
    p2 = k.pod(side, 2, "Failed", started=T0 + 11, terminated=("Error", 2, T0 + 20))
    play(tracker, [("pods", "apply", p) for p in (p0, p1, p2)])
    play(tracker, [failed_job(side, 2, "BackoffLimitExceeded", T0 + 40)])
    assert attempts_of(records.sent[1]) == [
        (side.name + "-0", "failed", "Evicted", None, T0 + 9, T0 + 9, "kind-worker"),
        (
            side.name + "-1",
            "failed",
            "BackoffLimitExceeded",
            None,
            T0 + 9,
            T0 + 40,
            "kind-worker",
        ),  # not its own
        (side.name + "-2", "failed", "BackoffLimitExceeded", 2, T0 + 11, T0 + 20, "kind-worker"),
    ]


def test_a_run_keeps_the_newest_attempts_up_to_the_cap_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mlobs.exporter")
    tracker, registry, records, _ = make(max_attempts=3)
    kept: dict[int, list[int | str]] = {2: [0, "b", 1], 3: ["b", 1, 2], 4: [1, 2, 3], 5: [2, 3, 4]}
    for i, pods in enumerate((2, 3, 4, 5)):  # with the pod below: the cap, + 1, + 2, + 3
        run = k.RunSpec("train", "fit", f"r{pods}", backoff_limit=pods)
        names = [f"{run.name}-{j}" for j in range(pods)]
        steps = retried(run, names, [("Error", j + 1) for j in range(pods)], span=1)
        late = steps[2]  # the first pod's failure again: a relist, or a late event of a pod dropped by now
        # first seen last, created after the first pod and before the others: the oldest but one
        older = k.pod(
            run, 9, "Failed", started=T0, terminated=("OOMKilled", 137, T0 + 1), name=names[0] + "b"
        )
        play(tracker, [*steps, late, ("pods", "apply", older)])
        play(tracker, [failed_job(run, 1, "BackoffLimitExceeded", T0 + 60)])  # the Job's count lags
        spans = {j: (n, T0 + j, T0 + j + 5) for j, n in enumerate(names)} | {
            "b": (names[0] + "b", T0, T0 + 1)
        }
        assert [(a.pod, a.start, a.end) for a in records.sent[i].per_attempt] == [
            spans[j] for j in kept[pods]
        ]
        assert records.sent[i].attempts == min(pods + 1, 5), "every pod seen counts as an attempt"
    # r3 drops its first pod; r4 its first and the older one; r5 two, and never sees the older one,
    # which was created before a pod it dropped
    assert tracker.dropped_attempts == 0 + 1 + 2 + 2
    errors = {"pipeline": "train", "step": "fit", "reason": "Error"}
    assert registry.get_sample_value(c.PROM_POD_FAILURES, errors) == 2 + 3 + 4 + 5, "each failure once"
    oom = {**errors, "reason": "OOMKilled"}
    assert registry.get_sample_value(c.PROM_POD_FAILURES, oom) == 2, "the older pod, where it was kept"
    [line] = [r.getMessage() for r in caplog.records if "pods" in r.getMessage()]  # one line a minute
    assert line == (
        "job ml/train-fit-r3 (pipeline/step train/fit): more than 3 pods; the oldest, train-fit-r3-0, "
        "gets no run record of its own"
    )


def test_the_cap_of_attempts_is_a_whole_number_of_at_least_one() -> None:
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(
            ValueError, match=rf"^max_attempts: expected a whole number of at least 1, got {bad!r}$"
        ):
            RunTracker(max_attempts=bad)  # type: ignore[arg-type]
    tracker, _, records, _ = make(max_attempts=1)
    run = k.RunSpec("train", "fit", "r1", backoff_limit=1)
    play(tracker, [*retried(run, ["r1-a", "r1-b"], [("Error", 1), ("Error", 2)]), failed_job(run, 2, None)])
    assert [a.pod for a in records.sent[0].per_attempt] == ["r1-b"] and tracker.dropped_attempts == 1


def test_the_default_cap_of_attempts_is_a_hundred() -> None:
    tracker, registry, records, _ = make()
    for pods in (100, 101):
        run = k.RunSpec("train", "fit", f"r{pods}", backoff_limit=pods)
        steps = [
            k.pod(run, j, "Failed", started=T0 + j, terminated=("Error", 1, T0 + j)) for j in range(pods)
        ]
        play(tracker, [*(("pods", "apply", p) for p in steps), failed_job(run, 1, "BackoffLimitExceeded")])
    assert [(len(r.per_attempt), r.attempts) for r in records.sent] == [(100, 100), (100, 101)]
    assert records.sent[1].per_attempt[0].pod == "train-fit-r101-1" and tracker.dropped_attempts == 1
    errors = {"pipeline": "train", "step": "fit", "reason": "Error"}
    assert registry.get_sample_value(c.PROM_POD_FAILURES, errors) == 100 + 101, "each pod's failure"


def test_a_bare_pod_is_one_attempt_named_by_the_pod_and_a_job_without_pods_has_none() -> None:
    tracker, _, records, _ = make()
    run = k.RunSpec("serve", "batch", "p1")
    failed = k.pod(run, 0, "Failed", started=T0, terminated=("Error", 2, T0 + 3), bare=True, name="p1-pod")
    play(tracker, [("pods", "apply", failed)])
    assert attempts_of(records.sent[0]) == [("p1-pod", "failed", "Error", 2, T0, T0 + 3, "kind-worker")]
    alone = k.RunSpec("train", "fit", "r1")
    play(
        tracker,
        [("jobs", "apply", k.job(alone, started=T0, succeeded=1, condition=("Complete", None, T0 + 9)))],
    )
    assert records.sent[1].per_attempt == () and records.sent[1].pod is None


def test_a_restart_in_place_counts_once_per_new_count_and_its_reason_can_fail_the_job() -> None:
    tracker, registry, records, clock = make()
    run = k.RunSpec("train", "fit", "r1", backoff_limit=2)
    labels = {"pipeline": "train", "step": "fit"}
    for restarts, reason, code in ((0, "Error", 1), (2, "Error", 1), (1, "OOMKilled", 137), (2, "Error", 1)):
        pod = with_restart(k.pod(run, 0, "Running", started=T0), restarts, reason, code)
        play(tracker, [("pods", "apply", pod)])
    assert registry.get_sample_value(c.PROM_POD_FAILURES, {**labels, "reason": "Error"}) == 2, (
        "counts 0 and 2"
    )
    assert registry.get_sample_value(c.PROM_POD_FAILURES, {**labels, "reason": "OOMKilled"}) == 0, "stale"
    play(tracker, [failed_job(run, 0, "BackoffLimitExceeded")])  # the pod itself never failed
    tracker.tick(clock.now + 2)
    assert (records.sent[0].reason, records.sent[0].exit_code) == (R.BACKOFF_LIMIT_EXCEEDED, 1)
    oom = k.RunSpec("train", "fit", "r2")
    play(
        tracker, [("pods", "apply", with_restart(k.pod(oom, 0, "Running", started=T0), 1, "OOMKilled", 137))]
    )
    play(tracker, [failed_job(oom, 0, "BackoffLimitExceeded")])
    tracker.tick(clock.now + 2)
    assert (records.sent[1].reason, records.sent[1].exit_code) == (R.OOM_KILLED, 137)
    assert attempts_of(records.sent[1]) == [
        (oom.name + "-0", "failed", "OOMKilled", 137, T0, T0 + 30, "kind-worker")
    ]


# ---- the slow ones last: thousands of runs --------------------------------------------------------


def test_finished_runs_are_forgotten_after_the_bound() -> None:
    tracker, registry, _, _ = make(max_finished=100)
    for i in range(500):
        play(tracker, k.succeeding(k.RunSpec("train", "fit", f"r{i}"), T0 + i, T0 + i + 1)[-1:])
    assert tracker.snapshot().tracked == 100
    assert registry.get_sample_value(c.PROM_EXPORTER_TRACKED_RUNS) == 100
    assert runs(registry, "train", "fit", "succeeded", "Completed") == 500


def test_the_default_memory_of_finished_runs_is_fifty_thousand() -> None:
    tracker = RunTracker(clock=lambda: T0 + 100)
    done = k.job(
        k.RunSpec("train", "fit", "r"), started=T0, succeeded=1, condition=("Complete", None, T0 + 9)
    )

    def finish(i: int) -> None:
        tracker.on_job("ADDED", {**done, "metadata": {**done["metadata"], "name": f"j-{i}"}})

    for i in range(50_000):
        finish(i)
    assert (tracker.snapshot().tracked, tracker.finished_total) == (50_000, 50_000)
    finish(50_000)  # n + 1: the oldest is forgotten
    assert (tracker.snapshot().tracked, tracker.finished_total) == (50_000, 50_001)
    finish(1)  # still remembered: not counted again
    assert tracker.finished_total == 50_001
    finish(0)  # forgotten: its next event counts it again
    assert tracker.finished_total == 50_002
