"""What a run used and produced, as events: its system samples and its artifacts.

:func:`pipeline_sdk.run` starts a :class:`~pipeline_sdk.system.SystemSampler` with the run and
stops it before the run's end; :meth:`~pipeline_sdk.recorder.ActiveRun.log_artifact` hands each
artifact to a :class:`~pipeline_sdk.artifacts.BackgroundHasher`.  This module turns what they
deliver into records of the contract's streams:

- **a sample** is a row of the system stream (:data:`~pipeline_sdk.contract.SYSTEM`) at the
  time it was taken, plus a row per GPU, tagged with its index (``gpu``);
- **an artifact** is a row of the io stream, direction ``artifact``, named by the name tag.
  A directory's manifest longer than a string field may be (32 Ki characters) is left out of
  the event: its sha256 still names it, and the local store keeps it whole, so a restore works.

Where the bytes of an artifact go depends on the run's transport: with the local store they
are copied, content-addressed, under ``MLOBS_HOME/artifacts``; sent to Fluentd, only the
reference is recorded (the bytes stay where they are, and ``s3://`` or ``gs://`` URIs are
never read).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from . import config
from . import contract as c
from .artifacts import Artifact, ArtifactStore
from .system import MIN_INTERVAL, SAMPLE_GPUS, SAMPLE_TIME_NS
from .validation import MAX_TEXT_LENGTH, escape_surrogates, escape_text, short_repr

_SAMPLE_FIELDS = frozenset(c.SYSTEM.fields)
_INTERVAL_RULE = f"must be 0 (off) or a finite number of seconds from {MIN_INTERVAL:g}"


def check_system_interval(value: object) -> float:
    """``run(system_interval=)``: seconds between two samples, 0 for none; None: MLOBS_SYSTEM_INTERVAL."""
    if value is None:
        interval = config.SYSTEM_INTERVAL.get()
        assert interval is not None  # it has a default
        return interval
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"system_interval must be a number of seconds, got {type(value).__name__} {short_repr(value)}"
        )
    number = float(value)
    if number != 0 and not (math.isfinite(number) and number >= MIN_INTERVAL):
        raise ValueError(f"system_interval={short_repr(value)} is invalid: {_INTERVAL_RULE}")
    return number


def system_rows(
    identity: Mapping[str, str], sample: Mapping[str, Any]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(time, record) of a sample's row and of its GPUs' rows, all at the sample's time."""
    time_ns = int(sample[SAMPLE_TIME_NS])
    yield time_ns, {**identity, **{k: v for k, v in sample.items() if k in _SAMPLE_FIELDS}}
    for gpu in sample.get(SAMPLE_GPUS, ()):
        yield time_ns, {**identity, **{k: v for k, v in gpu.items() if k in c.SYSTEM.keys}}


def artifact_record(identity: Mapping[str, str], artifact: Artifact) -> tuple[dict[str, Any], bool]:
    """The io-stream record of an artifact, and whether its manifest had to be left out (too long)."""
    record: dict[str, Any] = {
        **identity,
        c.TAG_DIRECTION: c.IODirection.ARTIFACT.value,
        c.TAG_NAME: artifact.name,
    }
    left_out = False
    for key, value in artifact.fields().items():
        if not isinstance(value, str):
            record[key] = value
            continue
        # A file name that is not valid Unicode keeps its bytes as a \udcxx escape, which JSON reads back.
        text = escape_surrogates(value)
        if key == c.FIELD_MANIFEST and len(text) > MAX_TEXT_LENGTH:
            left_out = True
        else:
            record[key] = escape_text(text)
    return record, left_out


def artifact_store(kind: str, home: Path) -> ArtifactStore | None:
    """Where a run's artifacts are copied: the local store's home, or nowhere (a reference) for Fluentd."""
    return ArtifactStore(home) if kind == "local" else None
