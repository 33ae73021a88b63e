"""Which attempt of a step run this is: a re-run never merges into an earlier one.

A step run is (run id, step, attempt).  Running a notebook cell twice with the same
``run_id``, or a Kubernetes Job retrying its pod, starts a new attempt instead of
writing into the first one:

1. ``MLOBS_ATTEMPT``, when set, names it (outside a pod: in a pod it would differ from the
   exporter's attempt, which is the pod);
2. else, in a pod, ``MLOBS_POD_NAME`` (the Downward API's ``metadata.name``) does: a
   Job makes one pod per attempt, and the exporter, which sees the same pods, tags
   its run record with the same name, so the two always agree;
3. else the attempt is a number: one more than the attempts this process started
   and, with the local store, the attempts the store already holds.  Attempt 2 and
   later say so once, with how to start a separate run instead.

Readers number attempts by when they started, and show the latest by default.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from . import config
from . import contract as c
from .transports import LocalTransport, Transport
from .validation import check_attempt

log = logging.getLogger("mlobs")

_lock = threading.Lock()
_started: dict[tuple[str, str], int] = {}  # (run id, step) -> the highest numbered attempt started here
_warned: set[tuple[str, str]] = set()


def stored_attempts(store: Path, run_id: str, step: str) -> set[str]:
    """The attempts of (run id, step) in the local store at ``store``; empty when there is none."""
    if not store.exists():
        return set()
    uri = store.absolute().as_uri() + "?mode=rw"  # never creates the file
    try:
        db = sqlite3.connect(uri, uri=True, timeout=5.0)
    except sqlite3.Error:
        return set()
    try:
        rows = db.execute(
            "SELECT DISTINCT json_extract(tags, ?) FROM points "
            "WHERE run_id = ? AND measurement = ? AND json_extract(tags, ?) = ?",
            (f"$.{c.TAG_ATTEMPT}", run_id, c.RUN.measurement, f"$.{c.TAG_STEP}", step),
        ).fetchall()
    except sqlite3.Error:  # an older or damaged store: no attempts known, never a failed step
        return set()
    finally:
        db.close()
    return {c.FIRST_ATTEMPT if value is None else str(value) for (value,) in rows}


def next_attempt(run_id: str, step: str, transport: Transport, *, generated: bool) -> str:
    """The attempt a run starting now gets (see the module's docstring)."""
    explicit = config.ATTEMPT.get()
    if explicit is not None:
        return check_attempt(f"attempt (from {c.ENV_ATTEMPT})", explicit)
    pod = config.POD_NAME.get()
    if pod is not None:
        return check_attempt(f"attempt (from {c.ENV_POD_NAME})", pod)
    key = (run_id, step)
    with _lock:
        highest = _started.get(key, 0)
        if not generated and isinstance(transport, LocalTransport):
            stored = stored_attempts(transport.path, run_id, step)
            highest = max([highest, *(int(a) for a in stored if a.isdigit())])
        attempt = highest + 1
        _started[key] = attempt
        warn = attempt > 1 and key not in _warned
        if warn:
            _warned.add(key)
    if warn:
        log.warning(
            "mlobs: run id %r (step %r) already has %d attempt(s); this run is attempt %d of it, and "
            "readers show the latest attempt by default (attempt=N for an earlier one). For a separate "
            "run, pass another run_id, or none for a generated one.",
            run_id,
            step,
            attempt - 1,
            attempt,
        )
    return str(attempt)
