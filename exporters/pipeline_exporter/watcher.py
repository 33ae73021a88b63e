"""List and watch one resource (Jobs or Pods) with the ``kubernetes`` client.

* Lists once, then watches from the list's resourceVersion, and resumes each new
  watch from the last resourceVersion seen (bookmarks included).
* A watch that expired (410 Gone, as an ERROR event or an HTTP status) relists.
* Errors talking to the API are counted and retried with capped exponential backoff.
* Events are parsed with ``json.loads`` only: building client model objects costs
  about 30 times more, and the tracker reads a handful of fields.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from pipeline_sdk import contract as c

from .collectors import ExporterStats

log = logging.getLogger("mlobs.exporter")

OnEvent = Callable[[str, dict[str, Any], float | None], None]
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0


class WatchExpired(Exception):
    """The resourceVersion is too old: relist."""


def list_function(api_client: k8s.ApiClient, resource: str, namespace: str | None) -> Callable[..., Any]:
    """The client's list call for ``resource`` ("jobs" or "pods"), in one namespace or all."""
    if resource == "jobs":
        batch = k8s.BatchV1Api(api_client)
        if namespace:
            return lambda **kw: batch.list_namespaced_job(namespace, **kw)
        return batch.list_job_for_all_namespaces
    if resource == "pods":
        core = k8s.CoreV1Api(api_client)
        if namespace:
            return lambda **kw: core.list_namespaced_pod(namespace, **kw)
        return core.list_pod_for_all_namespaces
    raise ValueError(f"resource must be 'jobs' or 'pods', got {resource!r}")


class Watcher:
    """One list-and-watch loop on its own thread."""

    def __init__(
        self,
        resource: str,
        list_fn: Callable[..., Any],
        on_event: OnEvent,
        stats: ExporterStats,
        *,
        on_synced: Callable[[], None] = lambda: None,
        timeout_seconds: int = 300,
    ) -> None:
        self.resource = resource
        self._list_fn = list_fn
        self._on_event = on_event
        self._on_synced = on_synced
        self._stats = stats
        self._timeout = timeout_seconds
        self._stop = threading.Event()
        self.synced = threading.Event()  # the first list is in
        self.last_sync = 0.0  # wall time up to which events have been applied
        self._thread = threading.Thread(target=self._run, name=f"watch-{resource}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        version: str | None = None
        backoff = 0.0
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._relist()
                version = self._watch(version)
                backoff = 0.0
            except WatchExpired:
                version = None
            except ApiException as exc:
                if exc.status == 410:
                    version = None
                    continue
                backoff = self._failed(backoff, f"API answered {exc.status} {exc.reason}")
            except (urllib3.exceptions.HTTPError, OSError, ValueError, KeyError, TypeError) as exc:
                backoff = self._failed(backoff, f"{type(exc).__name__}: {exc}")

    def _failed(self, backoff: float, what: str) -> float:
        self._stats.bump(self._stats.watch_errors, self.resource)
        backoff = min(BACKOFF_MAX, max(BACKOFF_MIN, backoff * 2))
        log.warning("watching %s failed (%s); retrying in %.1f s", self.resource, what, backoff)
        self._stop.wait(backoff * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not a secret
        return backoff

    def _relist(self) -> str:
        first = not self.synced.is_set()
        started = time.time()
        resp = self._list_fn(label_selector=c.LABEL_PIPELINE, _preload_content=False, _request_timeout=60)
        body = json.loads(resp.data)
        # Finished before our last sync (or before we started): historical, not counted.
        seen_before = float("inf") if first else self.last_sync
        for item in body.get("items") or ():
            self._on_event("ADDED", item, seen_before)
        self._stats.bump(self._stats.relists, self.resource)
        self.last_sync = started
        version: str = body["metadata"]["resourceVersion"]
        if first:
            self.synced.set()
            self._on_synced()
        log.info("listed %d %s at resourceVersion %s", len(body.get("items") or ()), self.resource, version)
        return version

    def _watch(self, version: str) -> str:
        resp = self._list_fn(
            label_selector=c.LABEL_PIPELINE,
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=self._timeout,
            _preload_content=False,
            _request_timeout=(10, self._timeout + 30),
        )
        try:
            for line in iter_resp_lines(resp):  # type: ignore[no-untyped-call]
                if self._stop.is_set():
                    break
                if not line or line.isspace():
                    continue
                event = json.loads(line)
                kind, obj = event["type"], event["object"]
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise WatchExpired(obj.get("message", "resource version expired"))
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                version = obj["metadata"]["resourceVersion"]
                if kind != "BOOKMARK":
                    self._stats.bump(self._stats.watch_events, self.resource)
                    self._on_event(kind, obj, None)
                self.last_sync = time.time()
        finally:
            resp.close()
            resp.release_conn()
        return version
