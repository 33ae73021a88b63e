"""The exporter's parts wired together: tracker, collectors, one watcher per resource and
scope, and the HTTP endpoints.  ``__main__`` runs one; tests run one in-process.

Threads: one watcher for Jobs and one for Pods per watched namespace (or for all
namespaces), the HTTP server's loop and workers, and whoever calls :meth:`run` (the
main thread), which settles deferred failures and expires idle series.
"""

from __future__ import annotations

import threading
from typing import Any

from kubernetes import client as k8s
from prometheus_client.registry import CollectorRegistry

from .collectors import ExporterCollector, ExporterStats, RunCollector
from .config import ExporterConfig
from .figures import RecordSink
from .server import HttpServer
from .tracker import RunTracker
from .watcher import BACKOFF_MAX, BACKOFF_MIN, Watcher, list_function

HTTP_WORKERS = 4  # threads answering HTTP requests (scrapes and probes)


class ExporterApp:
    """One exporter: ``start()``, then ``run(stop)`` until ``stop`` is set, then ``close()``."""

    def __init__(
        self,
        config: ExporterConfig,
        api: k8s.ApiClient,
        records: RecordSink | None = None,
        *,
        stats: ExporterStats | None = None,
        settle: float = 2.0,
        watch_timeout: int = 300,
        backoff: tuple[float, float] = (BACKOFF_MIN, BACKOFF_MAX),
        host: str = "0.0.0.0",  # noqa: S104 - in a pod, the port must be reachable
        port: int = 8080,
        http_timeout: float = 10.0,
        http_max_connections: int = 256,
        **tracker_options: Any,
    ) -> None:
        self.config = config
        self.stats = stats or ExporterStats()
        self.tracker = RunTracker(
            config.thresholds,
            records,
            settle=settle,
            image_pull_grace=config.image_pull_grace,
            max_finished=config.finished_runs_memory,
            series=config.series,
            **tracker_options,
        )
        self.registry = CollectorRegistry()
        self.registry.register(RunCollector(self.tracker))
        self.registry.register(ExporterCollector(self.stats, self.tracker))
        scopes: list[str | None] = [*config.namespaces] or [None]
        self.watchers = [
            Watcher(
                resource,
                list_function(api, resource, namespace),
                handler,
                self.stats,
                timeout_seconds=watch_timeout,
                backoff=backoff,
                name=f"watch-{resource}-{namespace or 'all'}",
            )
            for namespace in scopes
            for resource, handler in (("jobs", self.tracker.on_job), ("pods", self.tracker.on_pod))
        ]
        self.server = HttpServer(
            host,
            port,
            self.registry,
            self.alive,
            self.ready,
            timeout=http_timeout,
            max_connections=http_max_connections,
            workers=HTTP_WORKERS,
        )
        self.port = self.server.port

    def alive(self) -> bool:
        """Every watch thread and HTTP thread is running (the liveness probe)."""
        return all(w.is_alive() for w in self.watchers) and self.server.alive()

    def ready(self) -> bool:
        """Every watcher has listed, and none is failing now (the readiness probe)."""
        return all(w.ready() for w in self.watchers)

    def start(self) -> None:
        self.server.start()
        for watcher in self.watchers:
            watcher.start()

    def run(self, stop: threading.Event, interval: float = 0.5) -> None:
        settled = False
        while not stop.wait(interval):
            if not settled and all(w.synced.is_set() for w in self.watchers):
                self.tracker.settle_all()  # failed Jobs listed before their pods: both lists are in now
                settled = True
            self.tracker.tick()

    def close(self) -> None:
        for watcher in self.watchers:
            watcher.stop()
        self.server.close()
