"""List and watch one resource (Jobs or Pods) with the ``kubernetes`` client.

* Lists once, then watches from the list's resourceVersion, and resumes each new
  watch from the last resourceVersion seen (bookmarks included).
* A watch that expired (410 Gone, as an ERROR event or an HTTP status) relists.
* Errors talking to the API, and ERROR events of any other shape (no code, a code
  that is a string, an object that is not a Status), are counted as watch errors and
  retried from the last resourceVersion with capped exponential backoff.
* One object the handler cannot read (wrong shape: ``MalformedObject``, or any data
  error on the way) is skipped and counted as an object error, in a list as in a
  watch, with a rate-limited warning naming it; the resourceVersion moves past it
  whenever it can be read, so it is not replayed.
* Events are parsed with ``json.loads`` only: building client model objects costs
  about 30 times more, and the tracker reads a handful of fields.

Ready (``ready()``) once the first list is in, and while the last request to the API
did not fail.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from pipeline_sdk import contract as c
from pipeline_sdk.backoff import Backoff
from pipeline_sdk.ratelog import RateLimitedLog

from .collectors import ExporterStats
from .kube import MalformedObject, describe, resource_version

log = logging.getLogger("mlobs.exporter")

OnEvent = Callable[[str, Any, float | None], None]
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0
LOG_EVERY = 60.0  # seconds between two warnings of malformed objects of one resource
# What a handler raises on an object of an unexpected shape.  MalformedObject is the
# expected one; the others would be a gap in kube.py's checks, so they are logged with
# their traceback, but they still cost one object, not the watch.
DATA_ERRORS = (MalformedObject, KeyError, TypeError, ValueError, AttributeError, IndexError)
EVENT_TYPES = ("ADDED", "MODIFIED", "DELETED")


class WatchExpired(Exception):
    """The resourceVersion is too old: relist."""


class WatchFailed(Exception):
    """The API sent an ERROR event that is not 410 Gone: retry the watch."""


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


def error_event(obj: Any) -> WatchExpired | WatchFailed:
    """What an ERROR event's object (a Status, or anything else) means for the watch."""
    status = obj if isinstance(obj, dict) else {}
    code = status.get("code")
    if isinstance(code, str) and code.strip().isdigit():
        code = int(code)
    if isinstance(code, bool) or not isinstance(code, int):
        code = None
    reason, message = status.get("reason"), status.get("message")
    reason = reason if isinstance(reason, str) else None
    message = message if isinstance(message, str) else ""
    if not isinstance(obj, dict):
        message = f"the event's object is {type(obj).__name__} {str(obj)[:80]!r}, not a Status"
    if code == 410 or (code is None and reason in ("Expired", "Gone")):
        return WatchExpired(message or "resource version expired")
    return WatchFailed(f"ERROR event: code {code}, reason {reason}: {message[:200]}")


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
        backoff: tuple[float, float] = (BACKOFF_MIN, BACKOFF_MAX),
        name: str | None = None,
    ) -> None:
        if not 0 < backoff[0] <= backoff[1]:
            raise ValueError(f"backoff: expected (min, max) seconds with 0 < min <= max, got {backoff!r}")
        self.resource = resource
        self._kind = resource.removesuffix("s")
        self._list_fn = list_fn
        self._on_event = on_event
        self._on_synced = on_synced
        self._stats = stats
        self._timeout = timeout_seconds
        self._backoff = Backoff(*backoff)
        self._stop = threading.Event()
        self._objects_log = RateLimitedLog(log, LOG_EVERY)
        self._version: str | None = None  # the newest resourceVersion seen; None: list first
        self._failing = False  # the last request to the API failed
        self.synced = threading.Event()  # the first list is in
        self.last_sync = 0.0  # wall time up to which events have been applied
        self._first_cutoff = float("inf")  # runs that ended by then are historical in the first list
        self._thread = threading.Thread(target=self._run, name=name or f"watch-{resource}", daemon=True)

    def start(self, history_before: float = float("inf")) -> None:
        """Start listing and watching; in the first list, a run that ended at or before
        ``history_before`` is historical (default: every finished one, as at a restart)."""
        self._first_cutoff = history_before
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end (it does at its next event, or when its watch request ends)."""
        self._stop.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def ready(self) -> bool:
        return self.synced.is_set() and not self._failing

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._version is None:
                    self._relist()
                self._watch()
                self._backoff.reset()
            except WatchExpired:
                self._version = None
            except WatchFailed as exc:
                self._failed(str(exc))
            except ApiException as exc:
                if exc.status == 410:
                    self._version = None
                    continue
                self._failed(f"API answered {exc.status} {exc.reason}")
            except (urllib3.exceptions.HTTPError, OSError, ValueError, KeyError, TypeError) as exc:
                self._failed(f"{type(exc).__name__}: {exc}")

    def _failed(self, what: str) -> None:
        self._failing = True
        self._stats.bump(self._stats.watch_errors, self.resource)
        delay = self._backoff.failed()
        log.warning("watching %s failed (%s); retrying in %.1f s", self.resource, what, delay)
        self._stop.wait(self._backoff.jittered())

    def _apply(self, kind: str, obj: Any, seen_before: float | None) -> None:
        if self._stop.is_set():
            return  # stopped (a leader that lost its Lease counts nothing more)
        try:
            self._on_event(kind, obj, seen_before)
        except DATA_ERRORS as exc:
            problem = str(exc) if isinstance(exc, MalformedObject) else f"{type(exc).__name__}: {exc}"
            self._object_error(obj, problem, traceback=not isinstance(exc, MalformedObject))

    def _object_error(self, obj: Any, problem: str, *, traceback: bool = False) -> None:
        self._stats.bump(self._stats.object_errors, self.resource)
        version = resource_version(obj)
        self._objects_log.warning(
            self.resource,
            "skipped a malformed %s %s%s: %s",
            self._kind,
            describe(obj),
            f" (resourceVersion {version})" if version else "",
            problem,
            exc_info=traceback,
        )

    def _relist(self) -> None:
        first = not self.synced.is_set()
        started = time.time()
        resp = self._list_fn(label_selector=c.LABEL_PIPELINE, _preload_content=False, _request_timeout=60)
        body = json.loads(resp.data)
        items = body.get("items") if isinstance(body, dict) else None
        version = resource_version(body)
        if not isinstance(items, list | None) or version is None:
            raise ValueError(f"the {self.resource} list is not a list with a resourceVersion")
        self._failing = False
        # Finished before our last sync (or before we started): historical, not counted.
        seen_before = self._first_cutoff if first else self.last_sync
        for item in items or ():
            self._apply("ADDED", item, seen_before)
        self._stats.bump(self._stats.relists, self.resource)
        self.last_sync = started
        self._version = version
        if first:
            self.synced.set()
            self._on_synced()
        log.info("listed %d %s at resourceVersion %s", len(items or ()), self.resource, version)

    def _watch(self) -> None:
        resp = self._list_fn(
            label_selector=c.LABEL_PIPELINE,
            watch=True,
            resource_version=self._version,
            allow_watch_bookmarks=True,
            timeout_seconds=self._timeout,
            _preload_content=False,
            _request_timeout=(10, self._timeout + 30),
        )
        self._failing = False
        try:
            for line in iter_resp_lines(resp):  # type: ignore[no-untyped-call]
                if self._stop.is_set():
                    break
                if line and not line.isspace():
                    self._event(json.loads(line))  # a line that is not JSON: the stream broke, retry
        finally:
            resp.close()
            resp.release_conn()

    def _event(self, event: Any) -> None:
        if not isinstance(event, dict):
            self._object_error(event, f"the event is {type(event).__name__}, not a mapping")
            return
        kind, obj = event.get("type"), event.get("object")
        if kind == "ERROR":
            raise error_event(obj)
        version = resource_version(obj)
        if version is not None:
            self._version = version
        if kind == "BOOKMARK":
            if version is None:
                self._object_error(obj, "a BOOKMARK without a resourceVersion")
            return
        if kind not in EVENT_TYPES:
            self._object_error(obj, f"the event type is {kind!r}")
            return
        self._stats.bump(self._stats.watch_events, self.resource)
        self._apply(kind, obj, None)
        self.last_sync = time.time()
