"""Serving profiles: a model API's prediction inputs, sketched per (model, version), flushed on a timer.

:meth:`ServiceRecorder.log_features <pipeline_sdk.service.ServiceRecorder.log_features>` hands each
prediction's features to :class:`FeatureProfiles`, which only appends the mapping to a buffer of its
(model, version).  Everything else happens on one background thread:

- a buffer of :data:`BATCH_ROWS` rows is swapped for an empty one on the caller's path and queued;
  the thread turns it into columns and adds them to the (model, version)'s profile in one
  :meth:`Profile.update` call (a numeric column goes into its KLL sketch as one numpy array);
- every ``interval`` seconds the thread adds what the buffers hold, emits each non-empty profile
  and starts the next one empty, so a flushed profile covers one interval of one process;
- :meth:`FeatureProfiles.close` stops the thread and flushes the last partial profiles.

Memory is bounded whatever the traffic: at most :data:`MAX_PENDING` full batches wait for the thread
(past it a batch is dropped and its rows counted in ``lost_rows``), at most :data:`MAX_MODELS`
(model, version) pairs and :data:`MAX_FEATURES` feature names each are kept, and a profile is
sketches of fixed size.  A batch with a bad value (a column that held numbers now holding text) is
added row by row, so only the bad rows are dropped (``invalid_rows``, logged at most once a minute).
Nothing here raises into the caller but the argument checks of :meth:`FeatureProfiles.add`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..validation import describe_error
from .profile import Profile, check_feature_name

BATCH_ROWS = 1024  # rows a buffer holds before it is queued for the profile
MAX_PENDING = 8  # full batches waiting for the thread, at most; past it a batch is dropped, counted
MAX_MODELS = 64  # (model, version) pairs profiled per service and process
MAX_FEATURES = 1000  # feature names per (model, version)
_WARN_EVERY = 60.0  # seconds between two warnings of dropped rows
log = logging.getLogger("mlobs")

Key = tuple[str, str]  # (model, version)
Emit = Callable[[Key, Profile], None]


@dataclass
class _State:
    rows: list[Mapping[str, Any]] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    profile: Profile = field(default_factory=Profile)


@dataclass
class ProfileStats:
    """What the profiler did: profiles emitted, rows profiled, and rows it could not keep."""

    profiles: int = 0  # profiles emitted
    rows: int = 0  # rows added to profiles
    lost_rows: int = 0  # rows dropped: the thread was MAX_PENDING batches behind, or a profile not emitted
    invalid_rows: int = 0  # rows dropped for a bad value (see the module's docstring)
    errors: int = 0  # profiles whose emission failed (counted in lost_rows too)


class FeatureProfiles:
    """Profiles of prediction inputs per (model, version), emitted every ``interval`` seconds."""

    def __init__(
        self,
        emit: Emit,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        start: bool = True,
    ) -> None:
        self._emit = emit
        self.interval = interval
        self._clock = clock
        self._states: dict[Key, _State] = {}
        self._pending: deque[tuple[Key, list[Mapping[str, Any]]]] = deque()
        self._lock = threading.Lock()  # the buffers and the queue
        self._flush_lock = threading.Lock()  # one flush at a time: the thread's or close()'s
        self._wake = threading.Event()
        self._closed = False
        self._due = clock() + interval
        self._last_warning = -_WARN_EVERY
        self.stats = ProfileStats()
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._run, name="mlobs-profiles", daemon=True)
            self._thread.start()

    # ---- the caller's path -------------------------------------------------------------------

    def add(self, key: Key, features: Mapping[str, Any]) -> None:
        """Buffer one row of ``key``'s features; raises only for a bad ``features`` argument."""
        if type(features) is not dict and not isinstance(features, Mapping):  # dict first: the fast check
            raise TypeError(
                f"features must be a mapping of feature name to value, got {type(features).__name__}"
            )
        if not features:
            raise ValueError("features={} is invalid: must name at least one feature")
        state = self._states.get(key) or self._new_state(key)
        names = state.names
        if not names.issuperset(features):  # one C loop for the usual case: every name seen before
            for name in features:
                if name not in names:
                    self._new_name(state, name)
        with self._lock:
            rows = state.rows
            rows.append(features)
            if len(rows) < BATCH_ROWS:
                return
            state.rows = []
            if len(self._pending) >= MAX_PENDING:
                self.stats.lost_rows += len(rows)
                return
            self._pending.append((key, rows))
        self._wake.set()

    def _new_state(self, key: Key) -> _State:
        with self._lock:
            if key not in self._states:
                if len(self._states) >= MAX_MODELS:
                    raise ValueError(
                        f"model={key[0]!r}, version={key[1]!r} is refused: this service already profiles "
                        f"{MAX_MODELS} (model, version) pairs, the most one process keeps"
                    )
                self._states[key] = _State()
            return self._states[key]

    def _new_name(self, state: _State, name: object) -> None:
        check_feature_name("features key", name)
        assert isinstance(name, str)
        if len(state.names) >= MAX_FEATURES:
            raise ValueError(
                f"features key {name!r} is refused: this model already has {MAX_FEATURES} features, "
                "the most a profile keeps"
            )
        state.names.add(name)

    # ---- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(max(0.0, self._due - self._clock()))
            self._wake.clear()
            if not self._closed:
                self.tick()

    def tick(self) -> int:
        """Add the queued batches; when the interval is up, flush every profile.  Profiles emitted."""
        with self._flush_lock:
            self._drain()
            now = self._clock()
            if now < self._due:
                return 0
            self._due = now + self.interval
            return self._flush()

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    return
                key, rows = self._pending.popleft()
            self._update(self._states[key].profile, rows)

    def _flush(self) -> int:
        emitted = 0
        for key, state in list(self._states.items()):
            with self._lock:
                rows, state.rows = state.rows, []
            self._update(state.profile, rows)
            profile, state.profile = state.profile, Profile()
            if not profile.rows:
                continue
            try:
                self._emit(key, profile)
            except Exception as exc:  # noqa: BLE001 - the thread must go on; the loss is counted and said
                self.stats.errors += 1
                self.stats.lost_rows += profile.rows
                self._warn(f"a profile of model {key[0]} version {key[1]} was not recorded", exc)
                continue
            emitted += 1
            self.stats.profiles += 1
        return emitted

    def _update(self, profile: Profile, rows: list[Mapping[str, Any]]) -> None:
        if not rows:
            return
        try:
            profile.update(_columns(rows))
        except (TypeError, ValueError):
            for row in rows:  # only the bad rows go
                try:
                    profile.update(_columns([row]))
                except (TypeError, ValueError) as exc:
                    self.stats.invalid_rows += 1
                    self._warn("a row of features was not profiled", exc)
                    continue
                self.stats.rows += 1
            return
        self.stats.rows += len(rows)

    def _warn(self, what: str, exc: Exception) -> None:
        now = self._clock()
        if now - self._last_warning >= _WARN_EVERY:
            self._last_warning = now
            log.warning("mlobs: %s: %s (at most one warning a minute)", what, describe_error(exc))

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and flush the last partial profiles (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        with self._flush_lock:
            self._drain()
            self._flush()

    def sizes(self) -> dict[Key, tuple[int, int]]:
        """Per (model, version): (rows buffered, bytes of its profile now); for checks and tests."""
        return {key: (len(s.rows), len(s.profile.to_bytes())) for key, s in list(self._states.items())}


def _columns(rows: list[Mapping[str, Any]]) -> dict[str, list[Any]]:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return {name: [row.get(name) for row in rows] for name in names}
