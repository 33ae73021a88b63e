"""Run the pipeline exporter: ``python -m exporters.pipeline_exporter --config exporter.yaml``.

In a pod it uses the service account (in-cluster config); elsewhere the current
kubeconfig, or ``--api-server`` for a plain-HTTP API (tests).  Run records go
where the SDK's settings say: Fluentd when ``MLOBS_FLUENTD_HOST`` is set.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as kube_config
from prometheus_client.registry import CollectorRegistry

from pipeline_sdk.client import Client

from .collectors import ExporterCollector, ExporterStats, RunCollector
from .config import ConfigError, ExporterConfig
from .records import RecordSender
from .server import serve
from .tracker import RunTracker
from .watcher import Watcher, list_function

log = logging.getLogger("mlobs.exporter")


def api_client(api_server: str | None) -> k8s.ApiClient:
    if api_server:
        configuration = k8s.Configuration(host=api_server)
        return k8s.ApiClient(configuration)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        kube_config.load_kube_config()  # type: ignore[no-untyped-call]
    return k8s.ApiClient()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipeline-exporter", description=__doc__)
    parser.add_argument("--config", type=Path, help="exporter configuration file (YAML)")
    parser.add_argument("--listen", default="0.0.0.0:8080", help="host:port of /metrics, /healthz, /readyz")
    parser.add_argument("--api-server", help="Kubernetes API URL without auth (tests); default: in-cluster")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds a failed Job waits for its pods")
    parser.add_argument("--watch-timeout", type=int, default=300, help="seconds per watch request")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = ExporterConfig.load(args.config)
    except ConfigError as exc:
        print(f"pipeline-exporter: {exc}", file=sys.stderr)
        return 2
    host, _, port = args.listen.rpartition(":")
    host = host or "0.0.0.0"  # noqa: S104 - in a pod, the port must be reachable

    stats = ExporterStats()
    records = Client()
    tracker = RunTracker(
        config.thresholds,
        RecordSender(records, stats),
        settle=args.settle,
        image_pull_grace=config.image_pull_grace,
        max_finished=config.finished_runs_memory,
    )
    registry = CollectorRegistry()
    registry.register(RunCollector(tracker))
    registry.register(ExporterCollector(stats, tracker))

    api = api_client(args.api_server)
    scopes: list[str | None] = [*config.namespaces] or [None]
    watchers = [
        Watcher(
            resource, list_function(api, resource, ns), handler, stats, timeout_seconds=args.watch_timeout
        )
        for ns in scopes
        for resource, handler in (("jobs", tracker.on_job), ("pods", tracker.on_pod))
    ]

    def alive() -> bool:
        return all(w.is_alive() for w in watchers)

    def ready() -> bool:
        return all(w.synced.is_set() for w in watchers)

    server = serve(host, int(port), registry, alive, ready)
    print(f"pipeline-exporter: serving on {host}:{server.server_port}", flush=True)
    for watcher in watchers:
        watcher.start()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    settled = False
    while not stop.wait(0.5):
        if not settled and ready():
            tracker.settle_all()  # failed Jobs listed before their pods: both lists are in now
            settled = True
        tracker.tick()
    for watcher in watchers:
        watcher.stop()
    server.shutdown()
    records.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
