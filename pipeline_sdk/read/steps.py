"""Step runs and their attempts, put together from the run stream and the exporter's run records.

A step run is (run id, step, attempt).  Several steps of one pipeline execution may
share its run id (an Argo workflow's name, a Kubeflow run id), and a step run id
that is run again (a notebook cell, a retried Job's next pod) gets a new attempt:

* an attempt's key is its ``attempt`` tag: "1", "2"... numbered by the SDK, or the
  pod's name in Kubernetes, or what ``MLOBS_ATTEMPT`` said; a point written before
  the tag existed reads as attempt "1" (:data:`.query.ABSENT_TAGS`);
* attempts are numbered for readers by when they started, 1 the earliest: the SDK's
  ``started`` event, else the exporter's ``start_ns``, else the attempt's first event;
* the latest attempt is what a reader shows unless asked for another one.

The exporter's record carries the attempt of the pod it saw last, so it decides the
status of that attempt only (an OOM-killed pod cannot report its own end).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .. import contract as c
from ..validation import unescape_text
from .query import ReadError, Row, RunNotFound, ns_datetime

RUNNING = "running"  # the status of a run that has started and not (yet) ended
RUN_STATUSES = (RUNNING, c.RunStatus.SUCCEEDED.value, c.RunStatus.FAILED.value, c.RunStatus.CANCELLED.value)
ALL_ATTEMPTS = "all"  # compare(attempt=): every attempt of each run
RUN_COLUMNS = (  # a step run, as runs() lists it (its latest attempt)
    "run_id",
    "pipeline",
    "step",
    "attempt",  # its number: 1 the earliest
    "attempt_key",  # its tag: "1", "2"... or a pod's name
    "status",
    "reason",
    "started",
    "ended",
    "duration_ms",
    "exit_code",
    "error",
    "host",
)
ATTEMPT_COLUMNS = ("attempt", "key", "status", "reason", "started", "ended", "duration_ms", "error")
EXECUTION_COLUMNS = ("run_id", "pipeline", "status", "started", "ended", "duration_ms", "steps")
SUMMARY_KEYS = {  # run()["system"]'s keys -> the end event's fields
    "samples": c.FIELD_SYSTEM_SAMPLES,
    "errors": c.FIELD_SYSTEM_ERRORS,
    "cpu_seconds": c.FIELD_CPU_SECONDS,
    "mean_cpu_percent": c.FIELD_MEAN_CPU_PERCENT,
    "peak_rss_bytes": c.FIELD_PEAK_RSS_BYTES,
    "memory_limit_bytes": c.FIELD_MEMORY_LIMIT_BYTES,
    "cpu_limit_cores": c.FIELD_CPU_LIMIT_CORES,
}
_STATUS_ORDER = {c.RunStatus.FAILED.value: 0, RUNNING: 1, c.RunStatus.CANCELLED.value: 2}  # else: succeeded
_LATEST = datetime.max.replace(tzinfo=UTC)


class AmbiguousRun(ReadError, ValueError):
    """A run id names several step runs and the call needs one: ``steps`` lists them."""

    def __init__(self, run_id: str, steps: Sequence[str]) -> None:
        self.run_id, self.steps = run_id, tuple(steps)
        super().__init__(self.hint("step="))

    def hint(self, how: str) -> str:
        """The message, telling the caller to pass ``how`` (``step=``, or the CLI's ``--step``)."""
        return f"run id {self.run_id!r} has steps {', '.join(self.steps)}: pass {how}"


@dataclass
class Attempt:
    """One attempt of a step run: its lifecycle events (time order) and the exporter's record of it."""

    key: str
    events: list[Row] = field(default_factory=list)
    record: Row | None = None

    @property
    def started_event(self) -> Row | None:
        return next((e for e in self.events if e.tags.get(c.TAG_STATUS) == c.RunStatus.STARTED.value), None)

    @property
    def start_ns(self) -> int:
        """When it started, for numbering: see the module's docstring."""
        started = self.started_event
        if started is not None:
            return started.time_ns
        if self.record is not None and c.FIELD_START_NS in self.record.fields:
            return int(self.record.fields[c.FIELD_START_NS])
        return min([e.time_ns for e in self.events] + ([self.record.time_ns] if self.record else []))


@dataclass
class StepRun:
    """The attempts of (run id, step), in the order they started."""

    run_id: str
    step: str
    attempts: list[Attempt]

    def number_of(self, key: str) -> int:
        return next(n for n, a in enumerate(self.attempts, 1) if a.key == key)


@dataclass(frozen=True)
class Scope:
    """Which points a call reads: a run id, and the step and attempt when the run's events name them."""

    run_id: str
    step: str | None = None
    attempt: str | None = None

    def equal(self) -> dict[str, str]:
        equal = {c.TAG_RUN_ID: self.run_id}
        if self.step is not None:
            equal[c.TAG_STEP] = self.step
        if self.attempt is not None:
            equal[c.TAG_ATTEMPT] = self.attempt
        return equal


def attempt_key(tags: Mapping[str, str]) -> str:
    return tags.get(c.TAG_ATTEMPT) or c.FIRST_ATTEMPT


def gather(events: Iterable[Row], records: Iterable[Row]) -> dict[str, dict[str, StepRun]]:
    """run id -> step -> its step run, from run events and run records (each in time order)."""
    found: dict[tuple[str, str], dict[str, Attempt]] = {}

    def attempt_of(row: Row) -> Attempt:
        attempts = found.setdefault((row.tags.get(c.TAG_RUN_ID, ""), row.tags.get(c.TAG_STEP, "")), {})
        key = attempt_key(row.tags)
        return attempts.setdefault(key, Attempt(key))

    for row in events:
        attempt_of(row).events.append(row)
    for row in records:
        attempt_of(row).record = row  # the last record of an attempt wins
    runs: dict[str, dict[str, StepRun]] = {}
    for (run_id, step), attempts in sorted(found.items()):
        ordered = sorted(attempts.values(), key=lambda a: (a.start_ns, a.key))
        runs.setdefault(run_id, {})[step] = StepRun(run_id, step, ordered)
    return runs


# ---- arguments ------------------------------------------------------------------------------------------


def check_step(step: object) -> str | None:
    if step is not None and (type(step) is not str or not step.strip()):
        raise ValueError(f"step={step!r} is invalid: must be a step name (a non-empty string)")
    return step


def check_attempt(attempt: object, *, every: bool = False) -> int | str | None:
    """An attempt as a call takes it: None (the latest), its number (1 the earliest) or its key."""
    if attempt is None:
        return None
    if isinstance(attempt, int) and not isinstance(attempt, bool) and attempt >= 1:
        return attempt
    if isinstance(attempt, str) and attempt.strip():
        return attempt
    also = f", or {ALL_ATTEMPTS!r}" if every else ""
    raise ValueError(
        f"attempt={attempt!r} is invalid: must be an attempt number (1 or more) or an attempt's key{also}"
    )


def choose_step(run_id: str, steps: Mapping[str, StepRun], step: str | None) -> StepRun:
    """The step run ``step`` names, or the run's only one; raises when there is none or several."""
    if step is not None:
        if step not in steps:
            raise RunNotFound(f"run {run_id!r} has no step {step!r}; its steps: {', '.join(sorted(steps))}")
        return steps[step]
    if len(steps) == 1:
        return next(iter(steps.values()))
    raise AmbiguousRun(run_id, sorted(steps))


def pick(run: StepRun, attempt: int | str | None) -> int:
    """The number of the attempt asked for: by number, by key, or the latest (None)."""
    if attempt is None:
        return len(run.attempts)
    if isinstance(attempt, int):
        if attempt <= len(run.attempts):
            return attempt
    else:
        for n, a in enumerate(run.attempts, 1):
            if a.key == attempt:
                return n
    listed = ", ".join(f"{n} (key {a.key})" for n, a in enumerate(run.attempts, 1))
    raise RunNotFound(
        f"run {run.run_id!r} (step {run.step}) has no attempt {attempt!r}; its attempts: {listed}"
    )


# ---- what is shown --------------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    return unescape_text(str(value)) if value is not None else None


def _end(attempt: Attempt) -> Row | None:
    ends = [e for e in attempt.events if e.tags.get(c.TAG_STATUS) != c.RunStatus.STARTED.value]
    return max(ends, key=lambda e: e.time_ns) if ends else None


def summary(run: StepRun, number: int) -> dict[str, Any]:
    """An attempt of a step run, the exporter's record winning over the SDK's own end (RUN_COLUMNS)."""
    attempt = run.attempts[number - 1]
    record = attempt.record
    events = attempt.events
    identity: Mapping[str, str] = record.tags if record is not None else (events[0].tags if events else {})
    started, end = attempt.started_event, _end(attempt)
    status = end.tags.get(c.TAG_STATUS) if end is not None else RUNNING
    start_ns = started.time_ns if started is not None else None
    end_ns = end.time_ns if end is not None else None
    duration = end.fields.get(c.FIELD_DURATION_MS) if end is not None else None
    reason = exit_code = None
    if record is not None:
        status = record.tags.get(c.TAG_STATUS, status)
        reason = record.tags.get(c.TAG_REASON)
        exit_code = record.fields.get(c.FIELD_EXIT_CODE)
        start_ns = start_ns if start_ns is not None else record.fields.get(c.FIELD_START_NS)
        end_ns = end_ns if end_ns is not None else record.fields.get(c.FIELD_END_NS)
        duration = duration if duration is not None else record.fields.get(c.FIELD_EXECUTION_TIME_MS)
    error = None
    if end is not None and c.FIELD_ERROR_TYPE in end.fields:
        message = _text(end.fields.get(c.FIELD_ERROR_MESSAGE)) or ""
        error = f"{_text(end.fields[c.FIELD_ERROR_TYPE])}: {message}".rstrip(": ")
    return {
        "run_id": run.run_id,
        "pipeline": identity.get(c.TAG_PIPELINE),
        "step": run.step,
        "attempt": number,
        "attempt_key": attempt.key,
        "status": status,
        "reason": reason,
        "started": ns_datetime(int(start_ns)) if start_ns is not None else None,
        "ended": ns_datetime(int(end_ns)) if end_ns is not None else None,
        "duration_ms": duration,
        "exit_code": exit_code,
        "error": error,
        "host": _text(started.fields.get(c.FIELD_HOST)) if started is not None else None,
    }


def attempt_rows(run: StepRun) -> list[dict[str, Any]]:
    """Every attempt of a step run, the earliest first (ATTEMPT_COLUMNS)."""
    rows = []
    for n in range(1, len(run.attempts) + 1):
        row = summary(run, n)
        row["key"] = row["attempt_key"]
        rows.append({k: row[k] for k in ATTEMPT_COLUMNS})
    return rows


def details(run: StepRun, number: int) -> dict[str, Any]:
    """The Kubernetes side from the attempt's record (when there is one), its traceback and system summary."""
    attempt = run.attempts[number - 1]
    out: dict[str, Any] = {}
    if attempt.record is not None:
        record = attempt.record
        out.update(
            namespace=record.tags.get(c.TAG_NAMESPACE),
            pod=_text(record.fields.get(c.FIELD_POD)),
            node=_text(record.fields.get(c.FIELD_NODE)),
            image=_text(record.fields.get(c.FIELD_IMAGE)),
            pods=record.fields.get(c.FIELD_ATTEMPTS),
        )
    end = _end(attempt)
    out["traceback"] = _text(end.fields.get(c.FIELD_TRACEBACK)) if end is not None else None
    out["system"] = system_summary(end)
    return out


def system_of(run: StepRun, number: int) -> dict[str, Any] | None:
    """The system summary of an attempt of a step run (see :func:`system_summary`)."""
    return system_summary(_end(run.attempts[number - 1]))


def system_summary(end: Row | None) -> dict[str, Any] | None:
    """What an attempt's end event says its process used (SUMMARY_KEYS); None when it was not sampled."""
    if end is None or c.FIELD_SYSTEM_SAMPLES not in end.fields:
        return None
    return {key: end.fields.get(field) for key, field in SUMMARY_KEYS.items()}


def execution(run_id: str, steps: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """A pipeline execution from its steps' summaries: failed steps first, then by start."""
    rows = sorted(steps, key=lambda s: (s["status"] != c.RunStatus.FAILED.value, s["started"] or _LATEST))
    status = min((s["status"] for s in rows), key=lambda s: _STATUS_ORDER.get(s, len(_STATUS_ORDER)))
    starts = [s["started"] for s in rows if s["started"] is not None]
    ends = [s["ended"] for s in rows]
    started = min(starts) if starts else None
    ended = max(ends) if ends and None not in ends and status != RUNNING else None
    duration = (ended - started) / timedelta(milliseconds=1) if started and ended else None
    pipelines = ", ".join(sorted({s["pipeline"] for s in rows if s["pipeline"]}))
    return dict(
        zip(
            EXECUTION_COLUMNS,
            (run_id, pipelines or None, status, started, ended, duration, rows),
            strict=True,
        )
    )
