"""Prometheus collectors of the pipeline exporter: one per concern.

Each ``collect()`` builds its metric families from a snapshot taken under the
tracker's lock, so a scrape sees one consistent state.  Labels are bounded
(pipeline, step, status, reason); the run id appears only on the last-failure
info gauge (with its error and pod), one series per pipeline/step at a time.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline_sdk import contract as c

from .figures import DURATION_BUCKETS
from .tracker import RunTracker

PS = (c.PROM_LABEL_PIPELINE, c.PROM_LABEL_STEP)


def _base(name: str) -> str:
    """prometheus_client adds ``_total`` to counters itself."""
    return name.removesuffix("_total")


class RunCollector(Collector):
    """Runs by pipeline/step: outcomes, durations, in progress, last success and failure."""

    def __init__(self, tracker: RunTracker) -> None:
        self._tracker = tracker

    def collect(self) -> Iterator[Metric]:
        snap = self._tracker.snapshot()
        runs = CounterMetricFamily(
            _base(c.PROM_RUNS_TOTAL),
            "Finished runs of a pipeline step, by status and reason.",
            labels=(*PS, c.PROM_LABEL_STATUS, c.PROM_LABEL_REASON),
        )
        pod_failures = CounterMetricFamily(
            _base(c.PROM_POD_FAILURES),
            "Failed attempts (pods or container restarts) of a pipeline step, by reason.",
            labels=(*PS, c.PROM_LABEL_REASON),
        )
        duration = HistogramMetricFamily(
            c.PROM_RUN_DURATION, "Wall time of finished runs.", labels=(*PS, c.PROM_LABEL_STATUS)
        )
        in_progress = GaugeMetricFamily(c.PROM_RUNS_IN_PROGRESS, "Runs pending or running.", labels=PS)
        last_success = GaugeMetricFamily(
            c.PROM_LAST_SUCCESS, "End of the last successful run (0: none).", labels=PS
        )
        last_failure = GaugeMetricFamily(
            c.PROM_LAST_FAILURE, "End of the last failed run (0: none).", labels=PS
        )
        failure_start = GaugeMetricFamily(
            c.PROM_LAST_FAILURE_START, "Start of the last failed run (0: none).", labels=PS
        )
        failure_info = GaugeMetricFamily(
            c.PROM_LAST_FAILURE_INFO,
            "The last failed run of a pipeline step (one series, replaced on each failure); value: its end.",
            labels=(
                *PS,
                c.PROM_LABEL_RUN_ID,
                c.PROM_LABEL_REASON,
                c.PROM_LABEL_EXIT_CODE,
                c.PROM_LABEL_NAMESPACE,
                c.PROM_LABEL_ERROR,
                c.PROM_LABEL_POD,
            ),
        )
        oldest = GaugeMetricFamily(c.PROM_OLDEST_RUNNING_START, "Start of the oldest running run.", labels=PS)
        max_duration = GaugeMetricFamily(
            c.PROM_MAX_DURATION, "Configured: a run running longer is stuck.", labels=PS
        )
        window = GaugeMetricFamily(
            c.PROM_SUCCESS_WINDOW, "Configured: a pipeline step must succeed this often.", labels=PS
        )
        for (pipeline, step), stats in sorted(snap.steps.items()):
            ps = [pipeline, step]
            for (status, reason), count in stats.runs.items():
                runs.add_metric([*ps, status.value, reason.value], count)
            for reason, count in stats.pod_failures.items():
                pod_failures.add_metric([*ps, reason.value], count)
            for status, buckets in stats.duration_buckets.items():
                pairs = [(repr(bound), float(n)) for bound, n in zip(DURATION_BUCKETS, buckets, strict=True)]
                pairs.append(("+Inf", float(stats.duration_count[status])))
                duration.add_metric([*ps, status.value], pairs, stats.duration_sum[status])
            in_progress.add_metric(ps, snap.in_progress.get((pipeline, step), 0))
            last_success.add_metric(ps, stats.last_success)
            last_failure.add_metric(ps, stats.last_failure)
            failure_start.add_metric(ps, stats.last_failure_start)
            if stats.last_failure_info is not None:
                # The value is the run's end, so a query can pick the newest of the series a
                # restart leaves behind for a few minutes (topk by value).
                failure_info.add_metric([*ps, *stats.last_failure_info], stats.last_failure)
            if (pipeline, step) in snap.oldest_running:
                oldest.add_metric(ps, snap.oldest_running[(pipeline, step)])
            limits = self._tracker.thresholds.limits(pipeline, step)
            max_duration.add_metric(ps, limits.max_duration)
            window.add_metric(ps, limits.success_window)
        yield from (runs, pod_failures, duration, in_progress, last_success, last_failure, failure_start)
        yield from (failure_info, oldest, max_duration, window)


class ExporterStats:
    """Counters of the exporter's own work, bumped by the watchers and the record sink."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.watch_events: Counter[str] = Counter()
        self.watch_errors: Counter[str] = Counter()
        self.relists: Counter[str] = Counter()
        self.object_errors: Counter[str] = Counter()
        self.records_sent = 0
        self.records_dropped = 0

    def bump(self, counter: Counter[str], resource: str) -> None:
        with self._lock:
            counter[resource] += 1


class ExporterCollector(Collector):
    """The exporter's own health: watch events and errors, relists, malformed objects, memory,
    pipeline/step pairs tracked and refused, run records."""

    RESOURCES = ("jobs", "pods")

    def __init__(self, stats: ExporterStats, tracker: RunTracker) -> None:
        self._stats = stats
        self._tracker = tracker

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        for name, doc, counter in (
            (c.PROM_EXPORTER_WATCH_EVENTS, "Watch events processed.", s.watch_events),
            (c.PROM_EXPORTER_WATCH_ERRORS, "Errors talking to the Kubernetes API.", s.watch_errors),
            (c.PROM_EXPORTER_RELISTS, "Full lists (at start, and after a watch expired).", s.relists),
            (c.PROM_EXPORTER_OBJECT_ERRORS, "Malformed API objects skipped.", s.object_errors),
        ):
            family = CounterMetricFamily(_base(name), doc, labels=(c.PROM_LABEL_RESOURCE,))
            for resource in self.RESOURCES:
                family.add_metric([resource], counter[resource])
            yield family
        sizes = self._tracker.sizes()
        yield GaugeMetricFamily(
            c.PROM_EXPORTER_TRACKED_RUNS,
            "Runs held in memory (active, and finished ones remembered).",
            value=sizes.runs,
        )
        yield GaugeMetricFamily(
            c.PROM_EXPORTER_TRACKED_STEPS,
            "Pipeline/step pairs with series (at most max_pipeline_steps).",
            value=sizes.steps,
        )
        yield CounterMetricFamily(
            _base(c.PROM_EXPORTER_REFUSED_STEPS),
            "Runs of pipeline/step pairs refused series (the cap was full, or not allow-listed).",
            value=sizes.refused,
        )
        yield CounterMetricFamily(_base(c.PROM_EXPORTER_RECORDS), "Run records sent.", value=s.records_sent)
        yield CounterMetricFamily(
            _base(c.PROM_EXPORTER_RECORDS_DROPPED),
            "Run records the transport refused (queue or spool full).",
            value=s.records_dropped,
        )
