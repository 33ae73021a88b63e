"""The model API's two HTTP metrics in one Prometheus registry, and their series by label values.

``http_requests_total{handler, method, status}`` and
``http_request_duration_seconds{handler, method}``: every known handler and method has its
series from the start, each status class at 0 (a series that first appears at 1 never shows
an ``increase``).  One pair per registry, shared by every middleware on it.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

from . import contract as c

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram

STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")  # created at 0 for every known handler and method


class HttpMetrics:
    """The two HTTP metrics in one registry, and their labelled series by label values."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import (  # noqa: PLC0415 - 60 ms of imports that only model APIs pay
            Counter,
            Histogram,
        )

        labels = (c.PROM_LABEL_HANDLER, c.PROM_LABEL_METHOD)
        self.requests = Counter(
            c.PROM_HTTP_REQUESTS,
            "HTTP requests by route template, method and status class",
            (*labels, c.PROM_LABEL_STATUS),
            registry=registry,
        )
        self.duration = Histogram(
            c.PROM_HTTP_DURATION,
            "Time from request to the end of the response, by route template and method",
            labels,
            registry=registry,
        )
        self._counters: dict[tuple[str, str, str], Counter] = {}
        self._histograms: dict[tuple[str, str], Histogram] = {}

    def series(self, handler: str, method: str) -> Histogram:
        """The duration series of a handler and method; its request counters start at 0 with it."""
        histogram = self._histograms.get((handler, method))
        if histogram is None:
            for status in STATUS_CLASSES:  # a series that first appears at 1 never shows an increase
                self._counter(handler, method, status)
            histogram = self._histograms[handler, method] = self.duration.labels(handler, method)
        return histogram

    def _counter(self, handler: str, method: str, status: str) -> Counter:
        counter = self._counters.get((handler, method, status))
        if counter is None:
            counter = self._counters[handler, method, status] = self.requests.labels(handler, method, status)
        return counter

    def observe(self, handler: str, method: str, status: str, seconds: float) -> None:
        self.series(handler, method).observe(seconds)
        self._counter(handler, method, status).inc()


_metrics_lock = threading.Lock()
# One pair of metrics per registry: a second middleware on the same registry (another app
# in the process, or the same app built again) shares them instead of failing to register.
_metrics_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, HttpMetrics] = weakref.WeakKeyDictionary()


def http_metrics(registry: CollectorRegistry) -> HttpMetrics:
    with _metrics_lock:
        metrics = _metrics_by_registry.get(registry)
        if metrics is None:
            metrics = _metrics_by_registry[registry] = HttpMetrics(registry)
        return metrics
