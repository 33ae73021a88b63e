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
import socket
import sys
import threading
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as kube_config

from pipeline_sdk import contract as c
from pipeline_sdk.client import Client

from .app import ExporterApp
from .collectors import ExporterStats
from .config import ConfigError, ExporterConfig, LeaderElection
from .leader import ElectionSettings
from .records import RecordSender

log = logging.getLogger("mlobs.exporter")
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def election_settings(config: LeaderElection) -> ElectionSettings | None:
    """The Lease to campaign for, or None without leader election; ConfigError when it has no namespace."""
    if not config.enabled:
        return None
    namespace = config.lease_namespace
    if not namespace:
        try:
            namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        except OSError:
            namespace = ""
    if not namespace:
        raise ConfigError(
            f"leaderElection.leaseNamespace: not set, and {SERVICE_ACCOUNT_NAMESPACE} cannot be read "
            "(not in a pod): name the Lease's namespace"
        )
    return ElectionSettings(
        namespace=namespace,
        name=config.lease_name,
        identity=os.environ.get(c.ENV_POD_NAME) or socket.gethostname(),
        lease_duration=config.lease_duration,
        renew_deadline=config.renew_deadline,
        retry_period=config.retry_period,
    )


def api_client(api_server: str | None) -> k8s.ApiClient:
    if api_server:
        configuration = k8s.Configuration(host=api_server)
        return k8s.ApiClient(configuration)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        kube_config.load_kube_config()  # type: ignore[no-untyped-call]
    return k8s.ApiClient()


def seconds(text: str) -> float:
    """An argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def count(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipeline-exporter", description=__doc__)
    parser.add_argument("--config", type=Path, help="exporter configuration file (YAML)")
    parser.add_argument("--listen", default="0.0.0.0:8080", help="host:port of /metrics, /healthz, /readyz")
    parser.add_argument("--api-server", help="Kubernetes API URL without auth (tests); default: in-cluster")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds a failed Job waits for its pods")
    parser.add_argument("--watch-timeout", type=int, default=300, help="seconds per watch request")
    parser.add_argument(
        "--http-timeout",
        type=seconds,
        default=10.0,
        help="seconds a client has to send a request (and to read it)",
    )
    parser.add_argument(
        "--http-max-connections",
        type=count,
        default=256,
        help="open HTTP connections at most (the rest: closed)",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = ExporterConfig.load(args.config)
        election = election_settings(config.leader_election)
    except ConfigError as exc:
        print(f"pipeline-exporter: {exc}", file=sys.stderr)
        return 2
    host, _, port = args.listen.rpartition(":")
    host = host or "0.0.0.0"  # noqa: S104 - in a pod, the port must be reachable

    stats = ExporterStats()
    records = Client()
    app = ExporterApp(
        config,
        api_client(args.api_server),
        RecordSender(records, stats),
        stats=stats,
        settle=args.settle,
        watch_timeout=args.watch_timeout,
        host=host,
        port=int(port),
        http_timeout=args.http_timeout,
        http_max_connections=args.http_max_connections,
        election=election,
        wait_spooled=records.shipper.wait_spooled,
    )
    app.start()
    print(f"pipeline-exporter: serving on {host}:{app.port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    app.run(stop)
    app.close()
    records.close()
    if app.lost.is_set():
        print("pipeline-exporter: stopped leading; exiting so that it restarts as a standby", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
