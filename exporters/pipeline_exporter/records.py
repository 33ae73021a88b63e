"""Run records: one event per finished run, through the SDK's transport to InfluxDB.

The record's time is the run's end (from Kubernetes), not the time it was sent, so
a record sent twice (at-least-once delivery) writes the same InfluxDB point.  The
run id joins it to what the step itself logged through the SDK.
"""

from __future__ import annotations

from typing import Any

from pipeline_sdk import contract as c
from pipeline_sdk.client import Client
from pipeline_sdk.recorder import EventWriter
from pipeline_sdk.validation import escape_text

from .collectors import ExporterStats
from .figures import FinishedRun


class RecordSender(EventWriter):
    """Hands run records to an SDK client (Fluentd in the cluster); never blocks."""

    def __init__(self, client: Client, stats: ExporterStats) -> None:
        super().__init__(client)
        self._stats = stats

    def send(self, record: FinishedRun) -> None:
        fields: dict[str, Any] = {
            c.TAG_RUN_ID: record.run_id,
            c.TAG_PIPELINE: record.pipeline,
            c.TAG_STEP: record.step,
            # The attempt is the pod's name, as the SDK in that pod tags it (MLOBS_POD_NAME).
            c.TAG_ATTEMPT: record.pod or c.FIRST_ATTEMPT,
            c.TAG_STATUS: record.status.value,
            c.TAG_REASON: record.reason.value,
            c.TAG_NAMESPACE: record.namespace,
            c.FIELD_START_NS: int(record.start * 1e9),
            c.FIELD_END_NS: int(record.end * 1e9),
            c.FIELD_EXECUTION_TIME_MS: (record.end - record.start) * 1000.0,
            c.FIELD_ATTEMPTS: record.attempts,
        }
        if record.exit_code is not None:
            fields[c.FIELD_EXIT_CODE] = record.exit_code
        for key, value in (
            (c.FIELD_IMAGE, record.image),
            (c.FIELD_NODE, record.node),
            (c.FIELD_POD, record.pod),
        ):
            if value:
                fields[key] = escape_text(value)
        try:
            sent = self._emit(c.RUN_RECORD.tag, fields, int(record.end * 1e9), exact=True)
        except RuntimeError:  # the client closed (the exporter is shutting down): counted, never raised
            sent = False
        if sent:
            self._stats.records_sent += 1
        else:
            self._stats.records_dropped += 1
