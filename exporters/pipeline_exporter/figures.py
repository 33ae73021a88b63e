"""What runs add up to: the run record of one run and its attempts, and the figures of one pipeline/step.

The tracker (``tracker.py``) keeps these up to date as Job and Pod events come in; the
collectors (``collectors.py``) read a :class:`Snapshot` of them for each scrape, and the
record sink (``records.py``) sends each :class:`FinishedRun` to InfluxDB.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from pipeline_sdk import contract as c

DURATION_BUCKETS = (10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0)
StepKey = tuple[str, str]  # (pipeline, step)


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt (pod) of a finished run: what its own run record says."""

    pod: str  # the pod's name: the attempt's key, as the SDK in that pod tags its events (MLOBS_POD_NAME)
    status: c.RunStatus  # the pod's own outcome; the last pod's is the run's
    reason: c.RunReason
    exit_code: int | None
    start: float  # the pod's start (its creation when it never started)
    end: float  # its containers' last finish; else when the next pod was created, or the run's end
    node: str | None
    image: str | None
    error: str = ""  # a failed pod's last words (its termination message, one line); "" for none


@dataclass(frozen=True)
class FinishedRun:
    """What the exporter knows of a run that has ended: the run, and each attempt it kept."""

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
    pod: str | None  # the last pod: the one created last
    attempts: int  # pods the Job started (retries + 1)
    per_attempt: tuple[AttemptRecord, ...] = ()  # the pods, the earliest created first; () for no pod seen
    error: str = ""  # a failed run's last words: its failing container's termination message, one line


class RecordSink(Protocol):
    def send(self, record: FinishedRun) -> None: ...


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
    # run_id, reason, exit code, namespace, error (label-cut), pod: the labels of the info series
    last_failure_info: tuple[str, str, str, str, str, str] | None = None
    # Idle expiry counts from here: when a run was last counted, or the end of the newest
    # historical one (so a pipeline retired long ago does not come back with every restart).
    last_active: float = 0.0

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

    steps: dict[StepKey, StepStats]
    in_progress: dict[StepKey, int]
    oldest_running: dict[StepKey, float]
    tracked: int  # runs held in memory


class Sizes(NamedTuple):
    runs: int  # runs held in memory: active, and finished ones remembered
    steps: int  # pipeline/step pairs with series
    refused: int  # runs refused series (cap or allow-lists) since start


def copy_stats(stats: StepStats) -> StepStats:
    """A copy that later events do not change (for a snapshot)."""
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
