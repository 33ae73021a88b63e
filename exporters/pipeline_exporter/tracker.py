"""Runs, as Kubernetes sees them: pending, running, then succeeded, failed or cancelled.

A run is a Job labelled ``mlobs.io/pipeline`` (with its pods as attempts), or such a
Pod with no Job.  The tracker folds Job and Pod events into runs and, when a run
finishes, updates the per pipeline/step figures the metrics are made of and hands
the run record to the record sink.

Two rules keep alerts honest across restarts and watch gaps:

* A run that had already finished before the exporter saw it (the initial list, or
  a relist that finds it finished before the last sync) is *historical*: it sets the
  last-success/failure gauges but is never counted, so counters that restart at 0
  show no phantom increase and nothing is re-alerted.
* A finished run is remembered (a bounded LRU of keys), so a later event for it,
  such as its deletion by the TTL controller, is not counted twice.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pipeline_sdk import contract as c

from .config import Thresholds
from .kube import Failure, Identity, JobView, PodView, Raw, job_view, pod_view

R = c.RunReason
S = c.RunStatus
DURATION_BUCKETS = (10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0)
RunKey = tuple[str, str]  # (namespace, "job/<name>" or "pod/<name>")


@dataclass(frozen=True)
class FinishedRun:
    """A run record: what the exporter knows of a run that has ended."""

    run_id: str
    pipeline: str
    step: str
    namespace: str
    status: c.RunStatus
    reason: c.RunReason
    exit_code: int | None
    start: float
    end: float
    image: str | None
    node: str | None
    pod: str | None
    attempts: int


class RecordSink(Protocol):
    def send(self, record: FinishedRun) -> None: ...


@dataclass
class _Run:
    key: RunKey
    ident: Identity
    run_id: str
    created: float
    is_job: bool
    started: float | None = None
    running: bool = False
    image: str | None = None
    node: str | None = None
    pod: str | None = None
    attempts: int = 0
    backoff_limit: int = 6
    job_failed_pods: int = 0
    pods_seen: set[str] = field(default_factory=set)
    failures_seen: set[str] = field(default_factory=set)
    last_failure: Failure | None = None
    waiting: c.RunReason | None = None
    waiting_since: float | None = None
    # a Job marked Failed whose attempts' reasons may still be on their way
    deferred: tuple[str | None, float, float, bool] | None = None  # (reason, end, deadline, historical)


@dataclass
class StepStats:
    """The figures of one pipeline/step that the metrics expose."""

    runs: dict[tuple[c.RunStatus, c.RunReason], int] = field(
        default_factory=lambda: dict.fromkeys(c.RUN_OUTCOMES, 0)
    )
    pod_failures: dict[c.RunReason, int] = field(default_factory=lambda: dict.fromkeys(c.FAILURE_REASONS, 0))
    duration_buckets: dict[c.RunStatus, list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0] * len(DURATION_BUCKETS))
    )
    duration_sum: dict[c.RunStatus, float] = field(default_factory=lambda: defaultdict(float))
    duration_count: dict[c.RunStatus, int] = field(default_factory=lambda: defaultdict(int))
    last_success: float = 0.0
    last_failure: float = 0.0
    last_failure_start: float = 0.0
    last_failure_info: tuple[str, str, str, str] | None = None  # run_id, reason, exit code, namespace

    def observe(self, status: c.RunStatus, seconds: float) -> None:
        buckets = self.duration_buckets[status]
        for i, bound in enumerate(DURATION_BUCKETS):
            if seconds <= bound:
                buckets[i] += 1
        self.duration_sum[status] += seconds
        self.duration_count[status] += 1


@dataclass(frozen=True)
class Snapshot:
    """A consistent copy of the tracker's figures, for one scrape."""

    steps: dict[tuple[str, str], StepStats]
    in_progress: dict[tuple[str, str], int]
    oldest_running: dict[tuple[str, str], float]
    tracked: int


class RunTracker:
    """Folds Job and Pod events into runs; thread-safe."""

    def __init__(
        self,
        thresholds: Thresholds | None = None,
        records: RecordSink | None = None,
        *,
        clock: Callable[[], float] = time.time,
        settle: float = 2.0,
        image_pull_grace: float = 120.0,
        max_finished: int = 50_000,
    ) -> None:
        self.thresholds = thresholds or Thresholds()
        self._records = records
        self._clock = clock
        self._settle = settle
        self._grace = image_pull_grace
        self._max_finished = max_finished
        self._lock = threading.Lock()
        self._active: dict[RunKey, _Run] = {}
        self._finished: OrderedDict[RunKey, None] = OrderedDict()
        self._steps: dict[tuple[str, str], StepStats] = {}
        self.finished_total = 0  # runs finished (counted or historical) since start

    # ---- events ------------------------------------------------------------------------

    def on_job(self, event_type: str, raw: Raw, seen_before: float | None = None) -> None:
        """A Job event.  ``seen_before``: finished before this time means historical."""
        view = job_view(raw)
        if view is None:
            return
        key = (view.ident.namespace, "job/" + view.name)
        with self._lock:
            if key in self._finished:
                return
            run = self._active.get(key) or self._new_run(key, view.ident, view.name, view.created, True)
            self._update_from_job(run, view)
            if view.condition == "Complete":
                end = view.finished or self._clock()
                self._finish(
                    run,
                    S.SUCCEEDED,
                    R.COMPLETED,
                    exit_code=None,
                    end=end,
                    historical=_historical(end, seen_before),
                )
            elif view.condition == "Failed":
                end = view.finished or self._clock()
                historical = _historical(end, seen_before)
                if self._attempts_known(run):
                    self._finish_failed_job(run, view.condition_reason, end, historical)
                else:
                    run.deferred = (view.condition_reason, end, self._clock() + self._settle, historical)
            elif event_type == "DELETED":
                self._finish(run, S.CANCELLED, R.DELETED, exit_code=None, end=self._clock(), historical=False)

    def on_pod(self, event_type: str, raw: Raw, seen_before: float | None = None) -> None:
        """A Pod event: an attempt of a Job's run, or a run of its own."""
        view = pod_view(raw)
        if view is None:
            return
        key = (view.ident.namespace, ("job/" + view.job) if view.job else ("pod/" + view.name))
        with self._lock:
            if key in self._finished:
                return
            run = self._active.get(key)
            if run is None:
                run = self._new_run(
                    key, view.ident, view.job or view.name, view.started, view.job is not None
                )
            self._update_from_pod(run, view, seen_before)
            if view.job is not None:
                if run.deferred is not None and self._attempts_known(run):
                    reason, end, _, historical = run.deferred
                    self._finish_failed_job(run, reason, end, historical)
                return
            end = view.finished or self._clock()
            historical = _historical(end, seen_before)
            if view.phase == "Succeeded":
                self._finish(run, S.SUCCEEDED, R.COMPLETED, exit_code=None, end=end, historical=historical)
            elif view.phase == "Failed" and view.failure is not None:
                failure = view.failure
                self._finish(
                    run, S.FAILED, failure.reason, exit_code=failure.exit_code, end=end, historical=historical
                )
            elif event_type == "DELETED":
                self._finish(run, S.CANCELLED, R.DELETED, exit_code=None, end=self._clock(), historical=False)

    def tick(self, now: float | None = None) -> None:
        """Settle deferred Job failures and runs stuck on an image pull; call every second or so."""
        now = self._clock() if now is None else now
        with self._lock:
            for run in list(self._active.values()):
                if run.deferred is not None and now >= run.deferred[2]:
                    reason, end, _, historical = run.deferred
                    self._finish_failed_job(run, reason, end, historical)
                elif (
                    run.waiting is not None
                    and run.waiting_since is not None
                    and now - run.waiting_since >= self._grace
                ):
                    self._finish(run, S.FAILED, run.waiting, exit_code=None, end=now, historical=False)

    def settle_all(self) -> None:
        """Finish every deferred Job failure now (both initial lists are in)."""
        with self._lock:
            for run in list(self._active.values()):
                if run.deferred is not None:
                    reason, end, _, historical = run.deferred
                    self._finish_failed_job(run, reason, end, historical)

    # ---- reading -------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        with self._lock:
            steps = {k: _copy_stats(v) for k, v in self._steps.items()}
            in_progress: dict[tuple[str, str], int] = dict.fromkeys(steps, 0)
            oldest: dict[tuple[str, str], float] = {}
            for run in self._active.values():
                sk = (run.ident.pipeline, run.ident.step)
                in_progress[sk] = in_progress.get(sk, 0) + 1
                if run.running and run.started is not None:
                    oldest[sk] = min(oldest.get(sk, run.started), run.started)
            return Snapshot(steps, in_progress, oldest, len(self._active) + len(self._finished))

    # ---- internals -------------------------------------------------------------------------

    def _new_run(self, key: RunKey, ident: Identity, name: str, created: float | None, is_job: bool) -> _Run:
        run = _Run(
            key=key,
            ident=ident,
            run_id=ident.run_id or name,
            created=created if created is not None else self._clock(),
            is_job=is_job,
        )
        self._active[key] = run
        self._stats(ident)
        return run

    def _stats(self, ident: Identity) -> StepStats:
        sk = (ident.pipeline, ident.step)
        stats = self._steps.get(sk)
        if stats is None:
            stats = self._steps[sk] = StepStats()
        return stats

    def _update_from_job(self, run: _Run, view: JobView) -> None:
        if view.ident.run_id:
            run.run_id = view.ident.run_id
        run.started = view.started or run.started
        run.attempts = max(run.attempts, view.attempts)
        run.backoff_limit = view.backoff_limit
        run.job_failed_pods = view.failed
        run.image = run.image or view.image

    def _update_from_pod(self, run: _Run, view: PodView, seen_before: float | None) -> None:
        run.pods_seen.add(view.uid)
        run.attempts = max(run.attempts, len(run.pods_seen))
        run.pod = view.name
        run.node = view.node or run.node
        run.image = view.image or run.image
        if view.started is not None and (run.started is None or view.started < run.started):
            run.started = view.started
        if view.phase == "Running":
            run.running = True
            run.waiting = run.waiting_since = None
        elif view.phase == "Pending" and view.waiting is not None:
            run.waiting = view.waiting
            run.waiting_since = run.waiting_since or self._clock()
        historical = _historical(view.finished or self._clock(), seen_before)
        if view.failure is not None:
            self._attempt_failed(run, "pod/" + view.uid, view.failure, historical)
        for container, restarts, failure in view.restart_failures:
            self._attempt_failed(run, f"{view.uid}/{container}/{restarts}", failure, historical)

    def _attempt_failed(self, run: _Run, key: str, failure: Failure, historical: bool) -> None:
        if key in run.failures_seen:
            return
        run.failures_seen.add(key)
        run.last_failure = failure
        if not historical:
            self._stats(run.ident).pod_failures[failure.reason] += 1

    def _attempts_known(self, run: _Run) -> bool:
        """Every failed pod the Job counts has been seen (so the last one's reason is known)."""
        seen = sum(1 for key in run.failures_seen if key.startswith("pod/"))
        return seen >= max(run.job_failed_pods, 1)

    def _finish_failed_job(
        self, run: _Run, condition_reason: str | None, end: float, historical: bool
    ) -> None:
        last = run.last_failure
        exit_code = last.exit_code if last else None
        reason: c.RunReason
        if last is not None and last.reason in (R.OOM_KILLED, R.EVICTED):
            reason = last.reason  # the root cause says more than "retries used up"
        elif condition_reason == "DeadlineExceeded":
            reason = R.DEADLINE_EXCEEDED
        elif condition_reason == "BackoffLimitExceeded":
            no_retries = run.backoff_limit == 0 and last is not None and last.reason is R.ERROR
            reason = R.ERROR if no_retries else R.BACKOFF_LIMIT_EXCEEDED
        elif last is not None:
            reason = last.reason
        else:
            reason = R.UNKNOWN
        self._finish(run, S.FAILED, reason, exit_code=exit_code, end=end, historical=historical)

    def _finish(
        self,
        run: _Run,
        status: c.RunStatus,
        reason: c.RunReason,
        *,
        exit_code: int | None,
        end: float,
        historical: bool,
    ) -> None:
        del self._active[run.key]
        self._finished[run.key] = None
        while len(self._finished) > self._max_finished:
            self._finished.popitem(last=False)
        self.finished_total += 1
        stats = self._stats(run.ident)
        start = min(run.started or run.created, end)
        if status is S.SUCCEEDED:
            stats.last_success = max(stats.last_success, end)
        elif status is S.FAILED and end >= stats.last_failure:
            stats.last_failure, stats.last_failure_start = end, start
            code = "" if exit_code is None else str(exit_code)
            stats.last_failure_info = (run.run_id, reason.value, code, run.ident.namespace)
        if historical:
            return
        stats.runs[(status, reason)] += 1
        stats.observe(status, end - start)
        if self._records is not None:
            self._records.send(
                FinishedRun(
                    run_id=run.run_id,
                    pipeline=run.ident.pipeline,
                    step=run.ident.step,
                    namespace=run.ident.namespace,
                    status=status,
                    reason=reason,
                    exit_code=exit_code,
                    start=start,
                    end=end,
                    image=run.image,
                    node=run.node,
                    pod=run.pod,
                    attempts=max(run.attempts, 1),
                )
            )


def _historical(end: float, seen_before: float | None) -> bool:
    return seen_before is not None and end <= seen_before


def _copy_stats(stats: StepStats) -> StepStats:
    copy = StepStats(
        runs=dict(stats.runs),
        pod_failures=dict(stats.pod_failures),
        last_success=stats.last_success,
        last_failure=stats.last_failure,
        last_failure_start=stats.last_failure_start,
        last_failure_info=stats.last_failure_info,
    )
    for status, buckets in stats.duration_buckets.items():
        copy.duration_buckets[status] = list(buckets)
        copy.duration_sum[status] = stats.duration_sum[status]
        copy.duration_count[status] = stats.duration_count[status]
    return copy
