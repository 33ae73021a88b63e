"""Runs, as Kubernetes sees them: pending, running, then succeeded, failed or cancelled.

A run is a Job labelled ``mlobs.io/pipeline`` (with its pods as attempts), or such a
Pod with no Job.  The tracker folds Job and Pod events into runs and, when a run
finishes, updates the per pipeline/step figures the metrics are made of and hands
the run, with a record of each of its attempts, to the record sink.

Each pod of a run is an attempt, named by the pod (the SDK in it tags its events with
the same name).  The last attempt is the pod created last (by creationTimestamp, then
name), whatever order the events came in: it carries the run's outcome, and each
earlier one its own (a pod that failed, its reason and exit code).  A run keeps at
most ``max_attempts`` pods (the newest): an older one is dropped, counted in
``dropped_attempts`` and logged, and later events of it (or of any pod created before
it) are ignored.

Over 400 lines, one concern: the state of runs and their attempts, kept in one place so
that a run's outcome and its attempts' records are decided together.

Two rules keep alerts honest across restarts and watch gaps:

* A run that had already finished before the exporter saw it (the initial list, or
  a relist that finds it finished before the last sync) is *historical*: it sets the
  last-success/failure gauges but is never counted, so counters that restart at 0
  show no phantom increase and nothing is re-alerted.
* A finished run is remembered (a bounded LRU of keys), so a later event for it,
  such as its deletion by the TTL controller, is not counted twice.

And two keep the series bounded, whatever labels pods carry (``SeriesLimits``):

* A run of a new pipeline/step pair gets series only while fewer than
  ``max_pipeline_steps`` pairs have them, and only if the allow-lists match its
  namespace and pipeline.  A refused run is still followed to its end and gets its
  run record; it is counted in ``refused_total`` and logged, at most once a minute.
* A pair with no run in progress loses its series (``tick``) ``idle_expiry`` after
  its last run was counted (or, for a run that had finished before the exporter saw
  it, after that run's end); its next run starts them again from 0.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline_sdk import contract as c
from pipeline_sdk.ratelog import RateLimitedLog

from .config import SeriesLimits, Thresholds
from .figures import AttemptRecord, FinishedRun, RecordSink, Sizes, Snapshot, StepKey, StepStats, copy_stats
from .kube import Failure, Identity, JobView, PodView, Raw, job_view, pod_view
from .messages import error_label

R = c.RunReason
S = c.RunStatus
RunKey = tuple[str, str]  # (namespace, "job/<name>" or "pod/<name>")
log = logging.getLogger("mlobs.exporter")


@dataclass
class _Attempt:
    """One pod of a run, as its events told it."""

    name: str
    order: tuple[float, str]  # (creationTimestamp, name): the greatest is the run's last attempt
    phase: str = "Pending"
    started: float | None = None
    finished: float | None = None  # its containers' last finish
    node: str | None = None
    image: str | None = None
    failure: Failure | None = None  # why the pod failed (phase Failed)
    restart_failure: Failure | None = None  # why a container of it last restarted in place
    restarts: dict[str, int] = field(default_factory=dict)  # container -> the restart count counted


@dataclass
class _Run:
    key: RunKey
    ident: Identity
    run_id: str
    created: float
    is_job: bool
    counted: bool  # its pair has series; False: refused (run record only)
    started: float | None = None
    running: bool = False
    image: str | None = None
    attempts: int = 0
    backoff_limit: int = 6
    job_failed_pods: int = 0
    pods: dict[str, _Attempt] = field(default_factory=dict)  # by uid: the newest max_attempts pods
    dropped_pods: int = 0
    dropped_below: tuple[float, str] | None = None  # the order of the newest pod dropped
    failed_pods: int = 0  # pods whose failure was seen
    waiting: c.RunReason | None = None
    waiting_since: float | None = None
    # a Job marked Failed whose attempts' reasons may still be on their way
    deferred: tuple[str | None, float, float, bool] | None = None  # (reason, end, deadline, historical)


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
        series: SeriesLimits | None = None,
        max_attempts: int = 100,
    ) -> None:
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts: expected a whole number of at least 1, got {max_attempts!r}")
        self.thresholds = thresholds or Thresholds()
        self.series = series or SeriesLimits()
        self._records = records
        self._clock = clock
        self._settle = settle
        self._grace = image_pull_grace
        self._max_finished = max_finished
        self._max_attempts = max_attempts
        self._lock = threading.Lock()
        self._active: dict[RunKey, _Run] = {}
        self._finished: OrderedDict[RunKey, None] = OrderedDict()
        self._steps: dict[StepKey, StepStats] = {}
        self._refusals = RateLimitedLog(log, 60.0)
        self.finished_total = 0  # runs finished (counted or historical) since start
        self.refused_total = 0  # runs whose pair was refused series
        self.dropped_attempts = 0  # pods past a run's max_attempts: no run record of their own

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
                    run,
                    S.FAILED,
                    failure.reason,
                    exit_code=failure.exit_code,
                    end=end,
                    historical=historical,
                    error=failure.message,
                )
            elif event_type == "DELETED":
                self._finish(run, S.CANCELLED, R.DELETED, exit_code=None, end=self._clock(), historical=False)

    def tick(self, now: float | None = None) -> None:
        """Settle deferred Job failures and runs stuck on an image pull, and expire idle
        pipeline/step pairs; call every second or so."""
        now = self._clock() if now is None else now
        with self._lock:
            busy = {(r.ident.pipeline, r.ident.step) for r in self._active.values() if r.counted}
            for sk, stats in list(self._steps.items()):
                if sk not in busy and now - stats.last_active > self.series.idle_expiry:
                    del self._steps[sk]
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
            steps = {k: copy_stats(v) for k, v in self._steps.items()}
            in_progress: dict[StepKey, int] = dict.fromkeys(steps, 0)
            oldest: dict[StepKey, float] = {}
            for run in self._active.values():
                if not run.counted:
                    continue
                sk = (run.ident.pipeline, run.ident.step)
                in_progress[sk] = in_progress.get(sk, 0) + 1
                if run.running and run.started is not None:
                    oldest[sk] = min(oldest.get(sk, run.started), run.started)
            return Snapshot(steps, in_progress, oldest, len(self._active) + len(self._finished))

    def sizes(self) -> Sizes:
        """How much the tracker holds, without copying it (for the exporter's own metrics)."""
        with self._lock:
            return Sizes(len(self._active) + len(self._finished), len(self._steps), self.refused_total)

    # ---- internals -------------------------------------------------------------------------

    def _new_run(self, key: RunKey, ident: Identity, name: str, created: float | None, is_job: bool) -> _Run:
        run = _Run(
            key=key,
            ident=ident,
            run_id=ident.run_id or name,
            created=created if created is not None else self._clock(),
            is_job=is_job,
            counted=self._admit(ident),
        )
        self._active[key] = run
        return run

    def _admit(self, ident: Identity) -> bool:
        """Whether a new run's pair has series (made at 0 now); counts and logs a refusal."""
        sk = (ident.pipeline, ident.step)
        why = self.series.refusal(ident.namespace, ident.pipeline)
        if why is None and sk in self._steps:
            return True
        if why is None and len(self._steps) < self.series.max_pipeline_steps:
            self._steps[sk] = StepStats()
            return True
        self.refused_total += 1
        self._refusals.warning(
            "refused",
            "not tracking pipeline/step %s/%s (namespace %s): %s; its runs get run records but no metrics",
            ident.pipeline,
            ident.step,
            ident.namespace,
            why or f"{len(self._steps)} pairs tracked, the max_pipeline_steps cap",
        )
        return False

    def _stats(self, run: _Run) -> StepStats | None:
        """The run's pair's figures; None for a refused run (or a pair expired meanwhile)."""
        return self._steps.get((run.ident.pipeline, run.ident.step)) if run.counted else None

    def _update_from_job(self, run: _Run, view: JobView) -> None:
        if view.ident.run_id:
            run.run_id = view.ident.run_id
        run.started = view.started or run.started
        run.attempts = max(run.attempts, view.attempts)
        run.backoff_limit = view.backoff_limit
        run.job_failed_pods = view.failed
        run.image = run.image or view.image

    def _update_from_pod(self, run: _Run, view: PodView, seen_before: float | None) -> None:
        attempt = self._attempt(run, view)
        run.attempts = max(run.attempts, len(run.pods) + run.dropped_pods)
        if attempt is None:
            return
        attempt.phase = view.phase
        attempt.started = view.started if view.started is not None else attempt.started
        attempt.finished = view.finished if view.finished is not None else attempt.finished
        attempt.node = view.node or attempt.node
        attempt.image = view.image or attempt.image
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
            if attempt.failure is None:
                run.failed_pods += 1
                self._count_failure(run, view.failure, historical)
            attempt.failure = view.failure
        for container, restarts, failure in view.restart_failures:
            counted = attempt.restarts.get(container)
            if counted is not None and restarts <= counted:
                continue  # seen already, or an older status of the pod
            attempt.restarts[container] = restarts
            attempt.restart_failure = failure
            self._count_failure(run, failure, historical)

    def _attempt(self, run: _Run, view: PodView) -> _Attempt | None:
        """The pod's attempt; None for a pod dropped by the cap (or created before one that was)."""
        attempt = run.pods.get(view.uid)
        if attempt is not None:
            return attempt
        order = (view.created if view.created is not None else self._clock(), view.name)
        if run.dropped_below is not None and order <= run.dropped_below:
            return None
        attempt = run.pods[view.uid] = _Attempt(view.name, order)
        if len(run.pods) <= self._max_attempts:
            return attempt
        uid, oldest = min(run.pods.items(), key=lambda item: item[1].order)
        del run.pods[uid]
        run.dropped_pods += 1
        run.dropped_below = oldest.order
        self.dropped_attempts += 1
        kind, name = run.key[1].split("/", 1)
        self._refusals.warning(
            "attempts",
            "%s %s/%s (pipeline/step %s/%s): more than %d pods; the oldest, %s, "
            "gets no run record of its own",
            kind,
            run.ident.namespace,
            name,
            run.ident.pipeline,
            run.ident.step,
            self._max_attempts,
            oldest.name,
        )
        return None if oldest is attempt else attempt

    def _count_failure(self, run: _Run, failure: Failure, historical: bool) -> None:
        stats = self._stats(run)
        if not historical and stats is not None:
            stats.pod_failures[failure.reason] += 1

    def _attempts_known(self, run: _Run) -> bool:
        """Every failed pod the Job counts has been seen (so the last one's reason is known)."""
        return run.failed_pods >= max(run.job_failed_pods, 1)

    def _finish_failed_job(
        self, run: _Run, condition_reason: str | None, end: float, historical: bool
    ) -> None:
        last = _last_failure(run)
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
        error = last.message if last else ""
        self._finish(run, S.FAILED, reason, exit_code=exit_code, end=end, historical=historical, error=error)

    def _finish(
        self,
        run: _Run,
        status: c.RunStatus,
        reason: c.RunReason,
        *,
        exit_code: int | None,
        end: float,
        historical: bool,
        error: str = "",
    ) -> None:
        """``error``: a failed run's last words (kube.last_words), "" for none."""
        del self._active[run.key]
        self._finished[run.key] = None
        while len(self._finished) > self._max_finished:
            self._finished.popitem(last=False)
        self.finished_total += 1
        start = min(run.started or run.created, end)
        attempts = sorted(run.pods.values(), key=lambda a: a.order)
        last = attempts[-1] if attempts else None
        stats = self._stats(run)
        if stats is not None:
            stats.last_active = max(stats.last_active, end if historical else max(end, self._clock()))
            if status is S.SUCCEEDED:
                stats.last_success = max(stats.last_success, end)
            elif status is S.FAILED and end >= stats.last_failure:
                stats.last_failure, stats.last_failure_start = end, start
                code = "" if exit_code is None else str(exit_code)
                pod = last.name if last else ""
                ns = run.ident.namespace
                stats.last_failure_info = (run.run_id, reason.value, code, ns, error_label(error), pod)
        if historical:
            return
        if stats is not None:
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
                    node=last.node if last else None,
                    pod=last.name if last else None,
                    attempts=max(run.attempts, 1),
                    per_attempt=_records(attempts, run.image, (status, reason, exit_code, error), end),
                    error=error,
                )
            )


def _last_failure(run: _Run) -> Failure | None:
    """Why the newest pod that failed failed: the pod's own failure, else its last restart's."""
    failed = [a for a in run.pods.values() if a.failure is not None or a.restart_failure is not None]
    newest = max(failed, key=lambda a: a.order, default=None)
    return None if newest is None else newest.failure or newest.restart_failure


def _records(
    attempts: list[_Attempt],
    image: str | None,
    outcome: tuple[c.RunStatus, c.RunReason, int | None, str],
    end: float,
) -> tuple[AttemptRecord, ...]:
    """A record of each attempt (earliest first): the last has the run's outcome, an earlier one its own.

    An earlier pod that had not ended when the run did has the run's status and reason (the
    Job stopped it); an ended pod that no container finish dates (an eviction) ends when the
    next pod was created, if that was not before it started, else with the run.
    """
    out = []
    for i, attempt in enumerate(attempts):
        status, reason, exit_code, error = outcome
        later = attempts[i + 1].order[0] if i + 1 < len(attempts) else None
        start = attempt.started if attempt.started is not None else attempt.order[0]
        ended = attempt.phase in ("Succeeded", "Failed")
        if attempt.finished is not None:
            stop = attempt.finished
        elif ended and later is not None and later >= start:
            stop = later
        else:
            stop = end
        if later is not None:
            if attempt.phase == "Succeeded":
                status, reason, exit_code, error = S.SUCCEEDED, R.COMPLETED, None, ""
            elif attempt.failure is not None:
                failure = attempt.failure
                status, reason, exit_code, error = (
                    S.FAILED,
                    failure.reason,
                    failure.exit_code,
                    failure.message,
                )
            else:
                exit_code, error = None, ""
        out.append(
            AttemptRecord(
                pod=attempt.name,
                status=status,
                reason=reason,
                exit_code=exit_code,
                start=min(start, stop),
                end=stop,
                node=attempt.node,
                image=attempt.image or image,
                error=error,
            )
        )
    return tuple(out)


def _historical(end: float, seen_before: float | None) -> bool:
    return seen_before is not None and end <= seen_before
