"""The mlobs telemetry contract: every name that crosses a component boundary.

The SDK writes these names, the exporter emits them, ``fluent.conf`` routes them,
the dashboards query them and the alert rules alert on them.  Nothing else in the
repository spells one of these strings out; it imports it from here, so a rename
is one edit and the tests that hold the other files against this module catch
anything left behind.

Cardinality rule: a run id is an InfluxDB tag, never a Prometheus label.
Prometheus labels stay bounded (pipeline, step, status, reason).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

# --------------------------------------------------------------------------
# InfluxDB tag keys shared by every stream that belongs to a run
# --------------------------------------------------------------------------

TAG_RUN_ID: Final = "run_id"  # unique id of one execution of a pipeline step
TAG_PIPELINE: Final = "pipeline"  # pipeline name, e.g. "train"
TAG_STEP: Final = "step"  # step name inside the pipeline, e.g. "fit"
TAG_NAME: Final = "name"  # name of the metric, param, input or output
TAG_STATUS: Final = "status"  # run lifecycle status (see RunStatus)
TAG_DIRECTION: Final = "direction"  # "input" or "output" on the io stream
TAG_LEVEL: Final = "level"  # log level name, e.g. "INFO"

IDENTITY_TAGS: Final = (TAG_RUN_ID, TAG_PIPELINE, TAG_STEP)  # carried by every run event

# --------------------------------------------------------------------------
# InfluxDB field keys
# --------------------------------------------------------------------------

FIELD_VALUE: Final = "value"  # metric value (float), or the param / io value (string)
FIELD_NUMBER: Final = "number"  # numeric form of a param, when it has one (float)
FIELD_INDEX: Final = "index"  # position of a list-metric value: the step/epoch (int)
FIELD_DURATION_MS: Final = "duration_ms"  # wall time of a finished run (float)
FIELD_ERROR_TYPE: Final = "error_type"  # qualified exception class of a failed run
FIELD_ERROR_MESSAGE: Final = "error_message"  # exception message of a failed run
FIELD_HOST: Final = "host"  # host name of the process that ran the step
FIELD_PID: Final = "pid"  # process id of the process that ran the step (int)
FIELD_SDK_VERSION: Final = "sdk_version"  # mlobs SDK version that wrote the event
FIELD_SOURCE: Final = "source"  # where an input came from (io stream)
FIELD_DESTINATION: Final = "destination"  # where an output went (io stream)
FIELD_MESSAGE: Final = "message"  # formatted log message
FIELD_LOGGER: Final = "logger"  # name of the stdlib logger that emitted the record
FIELD_EXTRA: Final = "extra"  # structured extras of a log record, as a JSON object


class FieldType(enum.Enum):
    """InfluxDB field types. A field keeps one type forever, so the contract fixes it."""

    FLOAT = "float"
    INTEGER = "integer"
    STRING = "string"


class RunStatus(enum.StrEnum):
    """Values of the ``status`` tag on the run stream and the ``status`` Prometheus label."""

    STARTED = "started"  # the step began
    SUCCEEDED = "succeeded"  # the step returned normally
    FAILED = "failed"  # the step raised, or Kubernetes reports it failed
    CANCELLED = "cancelled"  # the step got SIGTERM (or KeyboardInterrupt)


class IODirection(enum.StrEnum):
    """Values of the ``direction`` tag on the io stream."""

    INPUT = "input"  # something the step read
    OUTPUT = "output"  # something the step wrote


@dataclass(frozen=True)
class Stream:
    """One event stream: a Fluentd tag that lands in one InfluxDB measurement."""

    tag: str  # Fluentd tag the SDK emits with
    measurement: str  # InfluxDB measurement fluent.conf writes it to
    tags: tuple[str, ...]  # record keys that become InfluxDB tags (indexed, bounded strings)
    fields: Mapping[str, FieldType]  # record keys that become InfluxDB fields, with their type

    def __post_init__(self) -> None:
        overlap = set(self.tags) & set(self.fields)
        if overlap:
            raise ValueError(f"stream {self.tag}: keys {sorted(overlap)} are both tag and field")
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))

    @property
    def keys(self) -> tuple[str, ...]:
        """Every record key this stream may carry."""
        return self.tags + tuple(self.fields)


_F = FieldType

# Fluentd tags are "mlobs.<measurement>": fluent.conf matches each one to its measurement.
RUN: Final = Stream(  # run lifecycle: started, then succeeded / failed / cancelled
    tag="mlobs.run",
    measurement="run",
    tags=(*IDENTITY_TAGS, TAG_STATUS),
    fields={
        FIELD_HOST: _F.STRING,
        FIELD_PID: _F.INTEGER,
        FIELD_SDK_VERSION: _F.STRING,
        FIELD_DURATION_MS: _F.FLOAT,
        FIELD_ERROR_TYPE: _F.STRING,
        FIELD_ERROR_MESSAGE: _F.STRING,
    },
)
PARAM: Final = Stream(  # one hyper-parameter or setting of a run
    tag="mlobs.param",
    measurement="param",
    tags=(*IDENTITY_TAGS, TAG_NAME),
    fields={FIELD_VALUE: _F.STRING, FIELD_NUMBER: _F.FLOAT},
)
METRIC: Final = Stream(  # a simple metric: one value per run and name (the last one wins)
    tag="mlobs.metric",
    measurement="metric",
    tags=(*IDENTITY_TAGS, TAG_NAME),
    fields={FIELD_VALUE: _F.FLOAT},
)
LIST_METRIC: Final = Stream(  # a list metric: one value per step/epoch, a series per run
    tag="mlobs.list_metric",
    measurement="list_metric",
    tags=(*IDENTITY_TAGS, TAG_NAME),
    fields={FIELD_VALUE: _F.FLOAT, FIELD_INDEX: _F.INTEGER},
)
IO: Final = Stream(  # an input the step read or an output it wrote
    tag="mlobs.io",
    measurement="io",
    tags=(*IDENTITY_TAGS, TAG_DIRECTION, TAG_NAME),
    fields={FIELD_VALUE: _F.STRING, FIELD_SOURCE: _F.STRING, FIELD_DESTINATION: _F.STRING},
)
LOG: Final = Stream(  # a structured log record of a run
    tag="mlobs.log",
    measurement="log",
    tags=(*IDENTITY_TAGS, TAG_LEVEL),
    fields={FIELD_MESSAGE: _F.STRING, FIELD_LOGGER: _F.STRING, FIELD_EXTRA: _F.STRING},
)

STREAMS: Final = (RUN, PARAM, METRIC, LIST_METRIC, IO, LOG)  # every stream the SDK writes
STREAMS_BY_TAG: Final = MappingProxyType({s.tag: s for s in STREAMS})  # Fluentd tag -> stream
TAG_PREFIX: Final = "mlobs."  # every Fluentd tag of ours starts with it (fluent.conf matches mlobs.**)

# Every STRING field is stored with backslash escapes, because InfluxDB line protocol
# carries no line break in a field value and free text (log messages, tracebacks) has
# them: a backslash is doubled, a line feed becomes backslash-n and a carriage return
# backslash-r.  Readers decode them (pipeline_sdk.validation.unescape_text).
STRING_FIELD_ESCAPES: Final = (("\\", "\\\\"), ("\n", "\\n"), ("\r", "\\r"))  # (raw, stored), in order

# --------------------------------------------------------------------------
# Kubernetes pod labels (set by the chart, read by the exporter)
# --------------------------------------------------------------------------

LABEL_PIPELINE: Final = "mlobs.io/pipeline"  # pipeline name of a Job and its Pods
LABEL_STEP: Final = "mlobs.io/step"  # step name of a Job and its Pods
LABEL_RUN_ID: Final = "mlobs.io/run-id"  # run id of a Job and its Pods

# --------------------------------------------------------------------------
# Prometheus metric and label names (the exporters emit them, the rules alert on them)
# --------------------------------------------------------------------------

PROM_LABEL_PIPELINE: Final = "pipeline"  # pipeline name (bounded)
PROM_LABEL_STEP: Final = "step"  # step name (bounded)
PROM_LABEL_STATUS: Final = "status"  # a RunStatus value other than "started"
PROM_LABEL_REASON: Final = "reason"  # failure reason, e.g. OOMKilled (bounded set)

PROM_RUNS_TOTAL: Final = (
    "mlobs_pipeline_runs_total"  # counter of finished runs by pipeline, step, status, reason
)
PROM_RUN_DURATION: Final = (
    "mlobs_pipeline_run_duration_seconds"  # histogram of run wall time by pipeline, step, status
)
PROM_RUNS_IN_PROGRESS: Final = "mlobs_pipeline_runs_in_progress"  # gauge of running runs by pipeline, step
PROM_LAST_SUCCESS: Final = (
    "mlobs_pipeline_last_success_timestamp_seconds"  # gauge: end of the last successful run
)
PROM_LAST_FAILURE: Final = (
    "mlobs_pipeline_last_failure_timestamp_seconds"  # gauge: end of the last failed run
)

# --------------------------------------------------------------------------
# Grafana datasource uids (provisioned by the chart, used by every dashboard)
# --------------------------------------------------------------------------

DATASOURCE_PROMETHEUS_UID: Final = "mlobs-prometheus"  # the Prometheus datasource
DATASOURCE_INFLUXDB_UID: Final = "mlobs-influxdb"  # the InfluxDB (Flux) datasource
INFLUXDB_BUCKET: Final = "mlobs"  # the bucket fluent.conf writes to and dashboards read

# --------------------------------------------------------------------------
# Environment variables (public: users and the chart set them)
# --------------------------------------------------------------------------

ENV_FLUENTD_HOST: Final = "MLOBS_FLUENTD_HOST"  # Fluentd host; unset means the local store
ENV_FLUENTD_PORT: Final = "MLOBS_FLUENTD_PORT"  # Fluentd forward port (default 24224)
ENV_HOME: Final = "MLOBS_HOME"  # directory of the local store and of the spool (default ~/.mlobs)
ENV_PIPELINE: Final = "MLOBS_PIPELINE"  # run identity: pipeline name
ENV_STEP: Final = "MLOBS_STEP"  # run identity: step name
ENV_RUN_ID: Final = "MLOBS_RUN_ID"  # run identity: run id
ENV_FLUSH_TIMEOUT: Final = "MLOBS_FLUSH_TIMEOUT"  # seconds a run waits at exit for delivery (default 10)
ENV_SPOOL_MAX_MB: Final = "MLOBS_SPOOL_MAX_MB"  # bound of the on-disk spool in MiB (default 512)

DEFAULT_FLUENTD_PORT: Final = 24224  # Fluentd's in_forward default
