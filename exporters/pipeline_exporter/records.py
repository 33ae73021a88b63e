"""Run records: one event per attempt of a finished run, through the SDK's transport to InfluxDB.

A run's record is a point per attempt (pod), tagged with the attempt's key, the pod's
name, as the SDK in that pod tags its own events (``MLOBS_POD_NAME``); a run the
exporter saw no pod of gets one point, attempt "1".  A point's time is the attempt's
end (from Kubernetes), not the time it was sent, so a record sent twice (at-least-once
delivery) writes the same InfluxDB points, and two attempts ending at the same moment
are still two points (their tag sets differ).  The run id joins them to what the step
itself logged through the SDK.
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline_sdk import contract as c
from pipeline_sdk.ratelog import RateLimitedLog
from pipeline_sdk.writer import EventWriter, WriterHost

from .collectors import ExporterStats
from .figures import AttemptRecord, FinishedRun

log = logging.getLogger("mlobs.exporter")


class RecordSender:
    """Hands run records to an SDK client (Fluentd in the cluster); never blocks.

    ``records_sent`` and ``records_dropped`` count points: one per attempt.  A point is
    dropped when the client's queue is full, once the client has closed, or when a value
    cannot be stored (logged, at most once a minute).
    """

    def __init__(self, client: WriterHost, stats: ExporterStats) -> None:
        self._writer = EventWriter(client)
        self._stats = stats
        self._refusals = RateLimitedLog(log, 60.0)

    def send(self, record: FinishedRun) -> None:
        for attempt in record.per_attempt:
            self._send(record, attempt.pod, attempt)
        if not record.per_attempt:  # no pod seen: the run's own fields, one point
            self._send(record, record.pod or c.FIRST_ATTEMPT, None)

    def _send(self, record: FinishedRun, key: str, attempt: AttemptRecord | None) -> None:
        outcome = attempt or record
        start, end = outcome.start, outcome.end
        fields: dict[str, Any] = {
            c.TAG_RUN_ID: record.run_id,
            c.TAG_PIPELINE: record.pipeline,
            c.TAG_STEP: record.step,
            c.TAG_ATTEMPT: key,
            c.TAG_STATUS: outcome.status.value,
            c.TAG_REASON: outcome.reason.value,
            c.TAG_NAMESPACE: record.namespace,
            c.FIELD_START_NS: int(start * 1e9),
            c.FIELD_END_NS: int(end * 1e9),
            c.FIELD_EXECUTION_TIME_MS: (end - start) * 1000.0,
            c.FIELD_ATTEMPTS: record.attempts,
        }
        if outcome.exit_code is not None:
            fields[c.FIELD_EXIT_CODE] = outcome.exit_code
        for name, value in (
            (c.FIELD_IMAGE, (attempt.image if attempt else None) or record.image),
            (c.FIELD_NODE, attempt.node if attempt else record.node),
            (c.FIELD_POD, attempt.pod if attempt else record.pod),
            (c.FIELD_ERROR, attempt.error if attempt else record.error),
        ):
            if value:
                fields[name] = value
        try:
            sent = self._writer.write_at(c.RUN_RECORD, fields, int(end * 1e9))
        except RuntimeError:  # the client closed (the exporter is shutting down): counted, never raised
            sent = False
        except (TypeError, ValueError) as exc:  # a value the store cannot take: counted and logged
            self._refusals.warning("record", "run record of %s not sent: %s", record.run_id, exc)
            sent = False
        if sent:
            self._stats.records_sent += 1
        else:
            self._stats.records_dropped += 1
