"""Leader election on a ``coordination.k8s.io/v1`` Lease, and the fence on run records.

Two exporters may run; only the one holding the Lease watches and counts.

**The Lease.**  ``spec.holderIdentity`` (the pod's name), ``leaseDurationSeconds``,
``acquireTime``, ``renewTime`` and ``leaseTransitions``, as client-go writes them, so
``kubectl get lease`` reads as for any controller.  Every write is a replace carrying
the resourceVersion that was read: when another candidate wrote in between, the API
answers 409 Conflict and this round is lost (optimistic concurrency).  A candidate
takes over a Lease held by another only when it has seen the same record unchanged for
``lease_duration`` seconds on its own monotonic clock (so clock skew between pods does
not matter), or when the holder released it (empty holder).  A leader that could not
renew within ``renew_deadline`` of its last renewal, or that finds another holder,
stops leading at once.

The ``kubernetes`` client's own ``kubernetes.leaderelection`` (37.x) is not used: it
talks through the default client configuration rather than the one it is given, takes
whole seconds only (``retry_period`` below 1 s exits the process), never releases the
Lease, does not count ``leaseTransitions``, has no way to stop, and cannot carry the
annotation below.

**The fence** (``counted-through``).  A leader holds each finished run's record back
until the run's end is at least ``lag`` seconds old, then hands it to the transport,
waits until it is on the spool's disk, and only then renews the Lease with the
annotation ``mlobs.io/counted-through`` set to that end time T: every run that ended
at or before T has been sent, none after it.  ``lag`` covers how late a run's end can
reach the exporter (the failed-Job settle time plus the watch's delay), so no run that
ended before T is still unseen.  A new leader lists with T as its cutoff: what ended by
T is historical (never sent again), what ended later is counted and sent by it.  When
the previous Lease has no annotation, or is older than ``HANDOVER_HORIZON``, the new
leader does what a restart does: everything already finished is historical.

The one window left: a leader killed after its records reached the spool and before
the renewal that publishes T reached the API (one request's time) has those records
sent twice (a run record is a point keyed by its end time, so InfluxDB holds it once).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pipeline_sdk import contract as c

from .figures import FinishedRun, RecordSink

log = logging.getLogger("mlobs.exporter")
HANDOVER_HORIZON = 3600.0  # seconds: an older counted-through is a cold start, not a handover


@dataclass(frozen=True)
class ElectionSettings:
    """The Lease and its timings (seconds)."""

    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        for key in ("namespace", "name", "identity"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ValueError(f"{key}: expected a non-empty name, got {getattr(self, key)!r}")
        for key in ("lease_duration", "renew_deadline", "retry_period"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{key}: expected a positive number of seconds, got {value!r}")
        if not self.lease_duration > self.renew_deadline:
            raise ValueError(
                f"lease_duration ({self.lease_duration} s) must be longer than renew_deadline "
                f"({self.renew_deadline} s): a leader must give up before another may take over"
            )
        if not self.renew_deadline > 1.2 * self.retry_period:
            raise ValueError(
                f"renew_deadline ({self.renew_deadline} s) must be longer than 1.2 x retry_period "
                f"({self.retry_period} s): a leader must get more than one try to renew"
            )


def micro_time(at: float) -> datetime:
    return datetime.fromtimestamp(at, tz=UTC)


class LeaseElector:
    """Campaigns for one Lease; ``run(stop)`` calls ``on_started(cutoff)`` and ``on_stopped()``.

    ``cutoff`` is the previous leader's counted-through time (None: a cold start).
    ``counted_through()`` is asked before each renewal for the value to publish.
    """

    def __init__(
        self,
        api: k8s.ApiClient,
        settings: ElectionSettings,
        *,
        on_started: Callable[[float | None], None],
        on_stopped: Callable[[], None],
        counted_through: Callable[[], float | None] = lambda: None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._api = k8s.CoordinationV1Api(api)
        self._on_started, self._on_stopped = on_started, on_stopped
        self._counted_through = counted_through
        self._clock, self._monotonic = clock, monotonic
        self._observed: tuple[Any, ...] | None = None  # the holder's record as last seen
        self._observed_at = 0.0  # monotonic time it was first seen so
        self._renewed_at = 0.0  # monotonic time of this leader's last successful write
        self._lease: k8s.V1Lease | None = None  # as last read or written
        self.leading = False
        self.transitions = 0  # times this process became leader

    # ---- one round -------------------------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        """One round: True when this candidate holds the Lease afterwards."""
        s = self.settings
        now, mono = self._clock(), self._monotonic()
        try:
            lease = self._api.read_namespaced_lease(s.name, s.namespace)
        except ApiException as exc:
            if exc.status != 404:
                log.warning("reading Lease %s/%s failed: %s %s", s.namespace, s.name, exc.status, exc.reason)
                return False
            return self._create(now, mono)
        spec = lease.spec or k8s.V1LeaseSpec()
        record = (spec.holder_identity, spec.lease_duration_seconds, spec.acquire_time, spec.renew_time)
        if record != self._observed:
            self._observed, self._observed_at = record, mono
        holder = spec.holder_identity or ""
        mine = holder == s.identity and self.leading
        if holder and not mine:
            duration = spec.lease_duration_seconds or s.lease_duration
            if holder != s.identity and mono < self._observed_at + duration:
                return False  # held by another, not expired on our clock
        annotations = dict((lease.metadata.annotations if lease.metadata else None) or {})
        cutoff = None if mine else _cutoff(annotations.get(c.ANNOTATION_COUNTED_THROUGH), now)
        if mine:
            through = self._counted_through()
            if through is not None:
                annotations[c.ANNOTATION_COUNTED_THROUGH] = f"{through:.6f}"
            spec.renew_time = micro_time(now)
        else:
            spec.holder_identity = s.identity
            spec.acquire_time = spec.renew_time = micro_time(now)
            spec.lease_transitions = (spec.lease_transitions or 0) + (1 if holder != s.identity else 0)
        spec.lease_duration_seconds = math.ceil(s.lease_duration)
        lease.spec = spec
        lease.metadata = lease.metadata or k8s.V1ObjectMeta(name=s.name, namespace=s.namespace)
        lease.metadata.annotations = annotations or None
        try:
            self._lease = self._api.replace_namespaced_lease(s.name, s.namespace, lease)
        except ApiException as exc:
            log.info("writing Lease %s/%s lost: %s %s", s.namespace, s.name, exc.status, exc.reason)
            return False
        self._renewed_at = mono
        if not mine:
            self._became_leader(cutoff)
        return True

    def _create(self, now: float, mono: float) -> bool:
        s = self.settings
        body = k8s.V1Lease(
            metadata=k8s.V1ObjectMeta(name=s.name, namespace=s.namespace),
            spec=k8s.V1LeaseSpec(
                holder_identity=s.identity,
                lease_duration_seconds=math.ceil(s.lease_duration),
                acquire_time=micro_time(now),
                renew_time=micro_time(now),
                lease_transitions=0,
            ),
        )
        try:
            self._lease = self._api.create_namespaced_lease(s.namespace, body)
        except ApiException as exc:
            log.info("creating Lease %s/%s lost: %s %s", s.namespace, s.name, exc.status, exc.reason)
            return False
        self._renewed_at = mono
        self._became_leader(None)
        return True

    def _became_leader(self, cutoff: float | None) -> None:
        self.leading = True
        self.transitions += 1
        log.info(
            "%s leads on Lease %s/%s (cutoff %s)",
            self.settings.identity,
            self.settings.namespace,
            self.settings.name,
            cutoff,
        )
        self._on_started(cutoff)

    def _lost(self, why: str) -> None:
        self.leading = False
        log.warning("%s stopped leading: %s", self.settings.identity, why)
        self._on_stopped()

    # ---- the loop --------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Campaign, then renew every ``retry_period``, until ``stop``; then release."""
        s = self.settings
        while not stop.is_set():
            held = self.try_acquire_or_renew()
            if self.leading and not held:
                if self._holder_is_other():
                    self._lost("another candidate holds the Lease")
                elif self._monotonic() - self._renewed_at >= s.renew_deadline:
                    self._lost(f"not renewed within renew_deadline ({s.renew_deadline} s)")
            stop.wait(s.retry_period)
        if self.leading:
            self.release()

    def _holder_is_other(self) -> bool:
        return self._observed is not None and self._observed[0] not in (None, "", self.settings.identity)

    def release(self) -> bool:
        """Give the Lease up (empty holder), publishing the last counted-through; True if written."""
        s = self.settings
        lease, self.leading = self._lease, False
        if lease is None or lease.spec is None:
            return False
        through = self._counted_through()
        annotations = dict((lease.metadata.annotations if lease.metadata else None) or {})
        if through is not None:
            annotations[c.ANNOTATION_COUNTED_THROUGH] = f"{through:.6f}"
        lease.metadata = lease.metadata or k8s.V1ObjectMeta(name=s.name, namespace=s.namespace)
        lease.metadata.annotations = annotations or None
        lease.spec.holder_identity = None
        lease.spec.lease_duration_seconds = 1
        lease.spec.renew_time = micro_time(self._clock())
        try:
            self._api.replace_namespaced_lease(s.name, s.namespace, lease)
        except ApiException as exc:
            log.warning("releasing Lease %s/%s failed: %s %s", s.namespace, s.name, exc.status, exc.reason)
            return False
        log.info("%s released Lease %s/%s", s.identity, s.namespace, s.name)
        return True


def _cutoff(value: str | None, now: float) -> float | None:
    """The previous leader's counted-through time, if it is one and recent enough to hand over."""
    try:
        through = float(value) if value is not None else math.nan
    except ValueError:
        log.warning("ignoring the Lease's %s %r: not a number", c.ANNOTATION_COUNTED_THROUGH, value)
        return None
    if not math.isfinite(through) or now - through > HANDOVER_HORIZON:
        return None
    return through


class FencedRecords:
    """A record sink that holds run records back until they may be published (see the module).

    ``release(through)`` sends every held record that ended at or before ``through``;
    ``drop()`` forgets the held ones (a leader that lost the Lease: the next leader sends them).
    """

    def __init__(self, sink: RecordSink | None) -> None:
        self._sink = sink
        self._held: list[FinishedRun] = []
        self._lock = threading.Lock()
        self.dropped = 0

    def send(self, record: FinishedRun) -> None:
        with self._lock:
            self._held.append(record)

    def release(self, through: float) -> int:
        with self._lock:
            ready = [r for r in self._held if r.end <= through]
            self._held = [r for r in self._held if r.end > through]
        for record in ready:
            if self._sink is not None:
                self._sink.send(record)
        return len(ready)

    def drop(self) -> int:
        with self._lock:
            n, self._held = len(self._held), []
        self.dropped += n
        return n

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)


class LeaderCollector(Collector):
    """``mlobs_exporter_leader``: 1 while this exporter leads, else 0."""

    def __init__(self, leading: Callable[[], bool]) -> None:
        self._leading = leading

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            c.PROM_EXPORTER_LEADER,
            "1 while this exporter holds the Lease and counts runs; 0 on a standby.",
            value=1.0 if self._leading() else 0.0,
        )
