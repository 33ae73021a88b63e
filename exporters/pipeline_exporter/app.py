"""The exporter's parts wired together: tracker, collectors, one watcher per resource and
scope, and the HTTP endpoints.  ``__main__`` runs one; tests run one in-process.

Threads: one watcher for Jobs and one for Pods per watched namespace (or for all
namespaces), the HTTP server's loop and workers, and whoever calls :meth:`run` (the
main thread), which settles deferred failures and expires idle series.

With leader election (``election``), a campaign thread holds or waits for the Lease
(:mod:`.leader`).  The watchers start only when this exporter leads, their first list
taking the previous leader's counted-through time as its cutoff, and stop the moment
it stops leading; :meth:`run` then returns and ``lost`` is set (the process exits, so
the kubelet starts it again, as a standby with a fresh state).  A standby is ready: it
answers /metrics with ``mlobs_exporter_leader`` 0 and waits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s
from prometheus_client.registry import CollectorRegistry

from .collectors import ExporterCollector, ExporterStats, RunCollector
from .config import ExporterConfig
from .figures import RecordSink
from .leader import ElectionSettings, FencedRecords, LeaderCollector, LeaseElector
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
        election: ElectionSettings | None = None,
        wait_spooled: Callable[[float], bool] = lambda _timeout: True,
        **tracker_options: Any,
    ) -> None:
        self.config = config
        self.stats = stats or ExporterStats()
        self.fence = FencedRecords(records) if election is not None else None
        # How old a run's end must be before its record is published: how late it can reach us.
        self.lag = settle + (election.renew_deadline if election is not None else 0.0)
        self._wait_spooled = wait_spooled
        self._through: float | None = None  # the counted-through this leader published, or may
        self.lost = threading.Event()  # stopped leading: run() returns
        self.tracker = RunTracker(
            config.thresholds,
            self.fence if self.fence is not None else records,
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
        self.elector: LeaseElector | None = None
        self._campaign_stop = threading.Event()
        self._campaign: threading.Thread | None = None
        if election is not None:
            self.elector = LeaseElector(
                api,
                election,
                on_started=self._lead,
                on_stopped=self._stop_leading,
                counted_through=self._publish,
            )
            self.registry.register(LeaderCollector(lambda: self.leading))
            self._campaign = threading.Thread(
                target=self.elector.run, args=(self._campaign_stop,), name="lease", daemon=True
            )

    @property
    def leading(self) -> bool:
        """This exporter watches and counts: it leads, or runs without leader election."""
        return self.elector is None or (self.elector.leading and not self.lost.is_set())

    def alive(self) -> bool:
        """Every watch thread (of a leader) and HTTP thread is running (the liveness probe)."""
        if self._campaign is not None and not self._campaign.is_alive() and not self.lost.is_set():
            return False
        watching = self.elector is None or self.elector.leading
        return (not watching or all(w.is_alive() for w in self.watchers)) and self.server.alive()

    def ready(self) -> bool:
        """A leader: every watcher has listed, and none is failing now.  A standby: ready to serve."""
        if self.elector is not None and not self.elector.leading:
            return not self.lost.is_set()
        return all(w.ready() for w in self.watchers)

    def start(self) -> None:
        self.server.start()
        if self._campaign is not None:
            self._campaign.start()
            return
        for watcher in self.watchers:
            watcher.start()

    def _lead(self, cutoff: float | None) -> None:
        """The Lease is ours: list (runs that ended by ``cutoff`` are historical; None: all), then watch."""
        self._through = cutoff
        for watcher in self.watchers:
            watcher.start(history_before=float("inf") if cutoff is None else cutoff)

    def _stop_leading(self) -> None:
        """Another holds the Lease, or ours was not renewed in time: stop counting and sending now."""
        for watcher in self.watchers:
            watcher.stop()
        assert self.fence is not None
        self.fence.drop()  # the next leader sends them: they ended after our last counted-through
        self.lost.set()

    def _publish(self) -> float | None:
        """Before a renewal: send the records old enough, wait until they are spooled, and return
        the counted-through time to write on the Lease (None: nothing to publish yet)."""
        assert self.fence is not None and self.elector is not None
        if not all(w.synced.is_set() for w in self.watchers):
            return self._through  # the first lists are not in: what ended since the cutoff is unseen
        through = time.time() - self.lag
        if self._through is not None and through <= self._through:
            return self._through
        self.fence.release(through)
        if not self._wait_spooled(self.elector.settings.retry_period):
            return self._through  # not on disk yet: publish it next time
        self._through = through
        return through

    def run(self, stop: threading.Event, interval: float = 0.5) -> None:
        settled = False
        while not stop.wait(interval) and not self.lost.is_set():
            if not self.leading:
                continue
            if not settled and all(w.synced.is_set() for w in self.watchers):
                self.tracker.settle_all()  # failed Jobs listed before their pods: both lists are in now
                settled = True
            self.tracker.tick()

    def close(self) -> None:
        self._campaign_stop.set()
        if self._campaign is not None and self._campaign.ident is not None:
            self._campaign.join(10)  # a leader releases the Lease, publishing its counted-through
        for watcher in self.watchers:
            watcher.stop()
        self.server.close()
