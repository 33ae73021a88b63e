"""What a run used and produced, read back: its system samples and summary, and its artifacts.

:class:`ResourceReads` is the part of :class:`~pipeline_sdk.read.ReadClient` that reads them:

- ``system()``: the samples of a step run's system sampler, a row each (``gpus=True``: a row
  per GPU and sample instead);
- ``run()["system"]`` (:func:`.steps.system_summary`): what the run's end event says it used, and
  :func:`describe_system` in words: "peak 3.1 GiB of a 4 GiB limit; 12.3 CPU seconds, ...";
- ``artifacts()``: what ``log_artifact`` recorded, and ``restore_artifact()``: the bytes back
  from the local store under ``MLOBS_HOME/artifacts``, every sha256 checked.  An artifact sent
  to Fluentd was recorded as a reference only: restoring it raises
  :class:`~pipeline_sdk.artifacts.NotStored`, naming its URI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .. import contract as c
from ..artifacts import Artifact, ArtifactStore
from ..system import Summary
from ..validation import unescape_text
from .compare import SYSTEM_NAMES
from .query import ReadError, Row, Select, ns_datetime
from .rows import Rows
from .runs import RunReads

SYSTEM_FIELDS = (  # the fields of a process row of the system stream, in the order system() shows them
    c.FIELD_ELAPSED_SECONDS,
    c.FIELD_CPU_PERCENT,
    c.FIELD_CPU_SECONDS,
    c.FIELD_RSS_BYTES,
    c.FIELD_PEAK_RSS_BYTES,
    c.FIELD_READ_BYTES,
    c.FIELD_WRITE_BYTES,
    c.FIELD_THREADS,
    c.FIELD_OPEN_FDS,
    c.FIELD_PROCESSES,
    c.FIELD_MEMORY_LIMIT_BYTES,
    c.FIELD_CPU_LIMIT_CORES,
)
GPU_FIELDS = (
    c.FIELD_GPU_UTILIZATION_PERCENT,
    c.FIELD_GPU_MEMORY_USED_BYTES,
    c.FIELD_GPU_MEMORY_TOTAL_BYTES,
)
SYSTEM_COLUMNS = ("time", *SYSTEM_FIELDS)
GPU_COLUMNS = ("time", c.TAG_GPU, *GPU_FIELDS)
COMPARE_KEYS = SYSTEM_NAMES  # compare(system=True)'s columns, each after "system."
ARTIFACT_FIELDS = (
    c.FIELD_URI,
    c.FIELD_SIZE_BYTES,
    c.FIELD_SHA256,
    c.FIELD_MEDIA_TYPE,
    c.FIELD_MANIFEST,
    c.FIELD_STORED,
)
ARTIFACT_COLUMNS = ("name", "size_bytes", "sha256", "media_type", "stored", "uri", "files", "skipped", "time")
_TEXT_FIELDS = frozenset(f for f in ARTIFACT_FIELDS if c.IO.fields[f] is c.FieldType.STRING)


class ArtifactNotFound(ReadError, LookupError):
    """The step run recorded no artifact of that name."""


def describe_system(summary: Mapping[str, Any]) -> str:
    """A summary in words, as :meth:`pipeline_sdk.system.Summary.describe` says it: "peak 3.1 GiB of a
    4 GiB limit; 12.3 CPU seconds, mean 85% of one core (limit 2 cores); 12 samples"."""

    def number(key: str) -> float | None:
        value = summary.get(key)
        return None if value is None else float(value)

    peak, limit = summary.get("peak_rss_bytes"), summary.get("memory_limit_bytes")
    return Summary(
        samples=int(summary.get("samples") or 0),
        errors=int(summary.get("errors") or 0),
        wall_seconds=0.0,  # not stored: the run's duration says it
        cpu_seconds=number("cpu_seconds") or 0.0,
        mean_cpu_percent=number("mean_cpu_percent"),
        peak_rss_bytes=None if peak is None else int(peak),
        hwm_rss_bytes=None,
        memory_limit_bytes=None if limit is None else int(limit),
        cpu_limit_cores=number("cpu_limit_cores"),
    ).describe()


def _artifact(row: Row) -> Artifact:
    fields = {k: unescape_text(str(v)) if k in _TEXT_FIELDS else v for k, v in row.fields.items()}
    return Artifact.from_fields(row.tags.get(c.TAG_NAME, ""), fields)


def _artifact_row(row: Row) -> dict[str, Any]:
    found = _artifact(row)
    files = None
    if found.files is not None:
        files = [{"path": e.path, "size_bytes": e.size_bytes, "sha256": e.sha256} for e in found.files]
    return {
        "name": found.name,
        "size_bytes": found.size_bytes,
        "sha256": found.sha256,
        "media_type": found.media_type,
        "stored": found.stored,
        "uri": found.uri,
        "files": files,
        "skipped": list(found.skipped) if found.files is not None else None,
        "time": ns_datetime(row.time_ns),
    }


class ResourceReads(RunReads):
    """Step runs (:class:`~pipeline_sdk.read.runs.RunReads`), with their system samples and artifacts.

    The :class:`~pipeline_sdk.read.ReadClient` provides ``backend`` and ``artifact_home``:
    where the local store keeps the artifacts' bytes.
    """

    artifact_home: Path

    def system(
        self,
        run_id: str,
        *,
        step: str | None = None,
        attempt: int | str | None = None,
        gpus: bool = False,
    ) -> Rows:
        """The step run's system samples in time order: a row each (SYSTEM_COLUMNS), streamed.

        ``time`` is when a sample was taken and ``elapsed_seconds`` how long after the run's
        start; the rest are the readings of :mod:`pipeline_sdk.system` (a reading the platform
        lacks is None).  With ``gpus``, a row per GPU and sample instead (GPU_COLUMNS).
        """
        if not isinstance(gpus, bool):
            raise TypeError(f"gpus must be a bool, got {type(gpus).__name__}")
        fields, columns = (GPU_FIELDS, GPU_COLUMNS) if gpus else (SYSTEM_FIELDS, SYSTEM_COLUMNS)
        query = Select(c.SYSTEM, fields, equal=self._scope(run_id, step, attempt).equal())

        def produce() -> Iterator[dict[str, Any]]:
            for row in self.backend.select(query):
                found: dict[str, Any] = {"time": ns_datetime(row.time_ns)}
                if gpus:
                    found[c.TAG_GPU] = row.tags.get(c.TAG_GPU)
                yield found | {f: row.fields.get(f) for f in fields}

        return Rows(produce, columns)

    def artifacts(
        self,
        run_id: str,
        *,
        step: str | None = None,
        attempt: int | str | None = None,
        name: str | None = None,
    ) -> Rows:
        """The step run's artifacts, as ``log_artifact`` recorded them, in the order they were recorded.

        A row (ARTIFACT_COLUMNS): name, size in bytes, sha256 (None when it was not hashed),
        media type, ``stored`` (the bytes are in the local store), URI, and for a directory
        its ``files`` (path, size, sha256) and what was ``skipped`` (links, special files);
        ``files`` is None for a file, and for a directory whose manifest was too long for its
        event.  ``name`` keeps that artifact's rows only.
        """
        if name is not None and (type(name) is not str or not name):
            raise ValueError(f"name={name!r} is invalid: must be an artifact's name")
        query = self._artifact_query(run_id, step, attempt, name)  # an unknown run raises here, at the call

        def produce() -> Iterator[dict[str, Any]]:
            return (_artifact_row(row) for row in self.backend.select(query))

        return Rows(produce, ARTIFACT_COLUMNS)

    def _artifact_query(
        self, run_id: str, step: str | None, attempt: int | str | None, name: str | None
    ) -> Select:
        equal = self._scope(run_id, step, attempt).equal()
        equal[c.TAG_DIRECTION] = c.IODirection.ARTIFACT.value
        if name is not None:
            equal[c.TAG_NAME] = name
        return Select(c.IO, ARTIFACT_FIELDS, equal=equal)

    def restore_artifact(
        self,
        run_id: str,
        name: str,
        dest: str | os.PathLike[str],
        *,
        step: str | None = None,
        attempt: int | str | None = None,
    ) -> Path:
        """Copy artifact ``name`` of the step run (its latest record) to ``dest``, checking every sha256.

        ``dest`` must not exist; a directory is restored with all its files.  The bytes come
        from the local store under ``MLOBS_HOME/artifacts`` (:class:`~pipeline_sdk.artifacts.ArtifactStore`).
        Raises :class:`ArtifactNotFound` when the run has no such artifact,
        :class:`~pipeline_sdk.artifacts.NotStored` (naming the URI) when only its reference was
        recorded (sent to Fluentd, or an ``s3://``/``gs://`` URI), and
        :class:`~pipeline_sdk.artifacts.ArtifactCorrupt` when a stored copy changed; nothing
        is left at ``dest`` then.
        """
        if type(name) is not str or not name:
            raise ValueError(f"name={name!r} is invalid: must be an artifact's name")
        if not isinstance(dest, str | os.PathLike):
            raise TypeError(f"dest must be a path, got {type(dest).__name__}")
        rows = list(self.backend.select(self._artifact_query(run_id, step, attempt, name)))
        if not rows:
            everything = self.backend.select(self._artifact_query(run_id, step, attempt, None))
            recorded = sorted({row.tags.get(c.TAG_NAME, "") for row in everything})
            listed = f"its artifacts: {', '.join(recorded)}" if recorded else "it recorded no artifacts"
            raise ArtifactNotFound(f"run {run_id!r} has no artifact {name!r}; {listed}")
        return ArtifactStore(self.artifact_home).restore(_artifact(rows[-1]), dest)
