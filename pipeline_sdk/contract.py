"""The mlobs telemetry contract: every name that crosses a component boundary.

The SDK writes these names, the exporter emits them, ``fluent.conf`` routes them,
the dashboards query them and the alert rules alert on them.  Nothing else in the
repository spells one of these strings out; it imports it from here, so a rename
is one edit and the tests that hold the other files against this module catch
anything left behind.

Cardinality rule: a run id is an InfluxDB tag, never a Prometheus label.
Prometheus labels stay bounded (pipeline, step, status, reason).

Over 400 lines on purpose: it is the one list of names, and splitting it would make two places to look.
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
TAG_ATTEMPT: Final = "attempt"  # which attempt of a step run: "1", "2"... or, in a pod, the pod's name
TAG_NAME: Final = "name"  # name of the metric, param, input or output
TAG_STATUS: Final = "status"  # run lifecycle status (see RunStatus)
TAG_DIRECTION: Final = "direction"  # "input" or "output" on the io stream
TAG_LEVEL: Final = "level"  # log level name, e.g. "INFO"
TAG_REASON: Final = "reason"  # why a run ended (see RunReason), on run records
TAG_NAMESPACE: Final = "namespace"  # Kubernetes namespace of a run's Job or Pod
TAG_SERVICE: Final = "service"  # name of a model API
TAG_ENDPOINT: Final = "endpoint"  # route template of a model-API request, e.g. "/predict/{model}"
TAG_METHOD: Final = "method"  # HTTP method of a model-API request
TAG_HTTP_STATUS: Final = "status"  # HTTP status class of a request: "2xx", "4xx", "5xx"
TAG_MODEL: Final = "model"  # model name of a prediction
TAG_MODEL_VERSION: Final = "model_version"  # model version of a prediction
TAG_GPU: Final = "gpu"  # index of a GPU (NVML's) on a GPU row of the system stream; absent on process rows
TAG_REPLICA: Final = "replica"  # which process of a service wrote a serving profile: host name and pid

IDENTITY_TAGS: Final = (TAG_RUN_ID, TAG_PIPELINE, TAG_STEP, TAG_ATTEMPT)  # carried by every run event
FIRST_ATTEMPT: Final = "1"  # the attempt of a step run's first try, and of data written without the tag

# --------------------------------------------------------------------------
# InfluxDB field keys
# --------------------------------------------------------------------------

FIELD_VALUE: Final = "value"  # metric value (float), or the param / io value (string)
FIELD_NUMBER: Final = "number"  # numeric form of a param, when it has one (float)
FIELD_INDEX: Final = "index"  # position of a list-metric value: the step/epoch (int)
FIELD_DURATION_MS: Final = "duration_ms"  # wall time of a finished run (float)
FIELD_ERROR_TYPE: Final = "error_type"  # qualified exception class of a failed run
FIELD_ERROR_MESSAGE: Final = "error_message"  # exception message of a failed run
FIELD_TRACEBACK: Final = "traceback"  # the last frames of a failed run's traceback (at most 8 KiB)
FIELD_HOST: Final = "host"  # host name of the process that ran the step
FIELD_PID: Final = "pid"  # process id of the process that ran the step (int)
FIELD_SDK_VERSION: Final = "sdk_version"  # mlobs SDK version that wrote the event
FIELD_SOURCE: Final = "source"  # where an input came from (io stream)
FIELD_DESTINATION: Final = "destination"  # where an output went (io stream)
FIELD_MESSAGE: Final = "message"  # formatted log message
FIELD_LOGGER: Final = "logger"  # name of the stdlib logger that emitted the record
FIELD_EXTRA: Final = "extra"  # structured extras of a log record, as a JSON object
FIELD_USER: Final = "user"  # hashed user id of a model-API request (unique users = distinct values)
FIELD_STATUS_CODE: Final = "status_code"  # exact HTTP status of a request (int)
FIELD_SCORE: Final = "score"  # numeric score of a prediction (float)
FIELD_OUTCOME: Final = "outcome"  # label or outcome of a prediction (string)
FIELD_EXIT_CODE: Final = "exit_code"  # exit code of a run's failed container (int)
FIELD_START_NS: Final = "start_ns"  # when a run started, Unix nanoseconds (int)
FIELD_END_NS: Final = "end_ns"  # when a run ended, Unix nanoseconds (int)
FIELD_EXECUTION_TIME_MS: Final = "execution_time_ms"  # end minus start of a run (float)
FIELD_IMAGE: Final = "image"  # container image of a run
FIELD_NODE: Final = "node"  # node a run's last pod ran on
FIELD_POD: Final = "pod"  # name of a run's last pod
FIELD_ATTEMPTS: Final = "attempts"  # pods a run's Job started (retries + 1) (int)
FIELD_ERROR: Final = "error"  # a failed run's last words: its container's termination message, one line
EXTRA_ERROR_KEY: Final = "mlobs_extra_error"  # in a log record's extra JSON: why its extra was not stored
EXTRA_TRUNCATED_KEY: Final = "mlobs_extra_truncated"  # in a log record's extra JSON: its JSON, cut to fit

# The system stream: what a run's process and its descendants used, a row per sample
# (pipeline_sdk.system); the same names on the run's end event are its summary.
FIELD_ELAPSED_SECONDS: Final = "elapsed_seconds"  # seconds from the run's start to the sample (float)
FIELD_CPU_PERCENT: Final = "cpu_percent"  # CPU of process + descendants since the last sample, % of a core
FIELD_CPU_SECONDS: Final = "cpu_seconds"  # CPU seconds of process + descendants since the run began (float)
FIELD_RSS_BYTES: Final = "rss_bytes"  # resident memory of process + live descendants (int)
FIELD_PEAK_RSS_BYTES: Final = "peak_rss_bytes"  # the largest rss_bytes so far; the summary's, see system.py
FIELD_READ_BYTES: Final = "read_bytes"  # bytes read from storage since the run began (int)
FIELD_WRITE_BYTES: Final = "write_bytes"  # bytes written to storage since the run began (int)
FIELD_THREADS: Final = "threads"  # threads of process + live descendants (int)
FIELD_OPEN_FDS: Final = "open_fds"  # open file descriptors of process + live descendants (int)
FIELD_PROCESSES: Final = "processes"  # the process and its live descendants (int)
FIELD_GPU_UTILIZATION_PERCENT: Final = "gpu_utilization_percent"  # a GPU's busy time, % (float)
FIELD_GPU_MEMORY_USED_BYTES: Final = "gpu_memory_used_bytes"  # a GPU's memory in use, all processes (int)
FIELD_GPU_MEMORY_TOTAL_BYTES: Final = "gpu_memory_total_bytes"  # a GPU's memory (int)
FIELD_MEAN_CPU_PERCENT: Final = "mean_cpu_percent"  # a run's CPU seconds over its wall time, % of a core
FIELD_MEMORY_LIMIT_BYTES: Final = "memory_limit_bytes"  # the cgroup's memory limit, when there is one (int)
FIELD_CPU_LIMIT_CORES: Final = "cpu_limit_cores"  # the cgroup's CPU quota in cores, when there is one
FIELD_SYSTEM_SAMPLES: Final = "system_samples"  # samples the run's sampler took (int)
FIELD_SYSTEM_ERRORS: Final = "system_errors"  # readings (or deliveries) of the sampler that failed (int)
# An artifact: a row of the io stream, direction "artifact", its name the name tag (pipeline_sdk.artifacts).
FIELD_URI: Final = "uri"  # where an artifact's bytes are: file://, s3:// or gs:// (string)
FIELD_SIZE_BYTES: Final = "size_bytes"  # an artifact's size; a directory's files' total (int)
FIELD_SHA256: Final = "sha256"  # an artifact's sha256, hex; a directory's is its manifest's (string)
FIELD_MEDIA_TYPE: Final = "media_type"  # an artifact's media type, e.g. "application/json" (string)
FIELD_MANIFEST: Final = "manifest"  # a directory's files and skipped entries, as JSON (string)
FIELD_STORED: Final = "stored"  # 1 when the bytes were copied to the local store, else 0 (int)
# A profile (pipeline_sdk.drift): a point per chunk of Profile.to_chunks(), its index in FIELD_INDEX.
FIELD_CHUNK: Final = "chunk"  # base64 of one chunk of a profile's bytes: at most MAX_TEXT_LENGTH characters
FIELD_TOTAL: Final = "total"  # how many chunks the profile has (int)
FIELD_ROWS: Final = "rows"  # rows the profile summarises (int)
FIELD_DIGEST: Final = "digest"  # hex BLAKE2b-128 of the whole profile's bytes: which chunks belong together


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


class RunReason(enum.StrEnum):
    """Values of the ``reason`` tag and Prometheus label: why a run ended.  A bounded set."""

    COMPLETED = "Completed"  # succeeded
    ERROR = "Error"  # a container exited non-zero (the exit code is on the run record)
    OOM_KILLED = "OOMKilled"  # a container was killed for exceeding its memory limit
    DEADLINE_EXCEEDED = "DeadlineExceeded"  # the Job ran past activeDeadlineSeconds
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"  # the Job's retries were used up
    EVICTED = "Evicted"  # the kubelet evicted the pod (node pressure)
    IMAGE_PULL = "ImagePullBackOff"  # the image could not be pulled (ErrImagePull too)
    CONFIG_ERROR = "CreateContainerConfigError"  # a missing ConfigMap/Secret or bad spec
    DELETED = "Deleted"  # the Job or Pod was deleted before it finished (status cancelled)
    UNKNOWN = "Unknown"  # failed for a reason not listed here


FAILURE_REASONS: Final = tuple(  # the reasons of status "failed"
    r for r in RunReason if r not in (RunReason.COMPLETED, RunReason.DELETED)
)


RUN_OUTCOMES: Final = (  # every (status, reason) of a finished run; the exporter makes each series at 0
    (RunStatus.SUCCEEDED, RunReason.COMPLETED),
    *((RunStatus.FAILED, reason) for reason in FAILURE_REASONS),
    (RunStatus.CANCELLED, RunReason.DELETED),
)


class IODirection(enum.StrEnum):
    """Values of the ``direction`` tag on the io stream."""

    INPUT = "input"  # something the step read
    OUTPUT = "output"  # something the step wrote
    ARTIFACT = "artifact"  # a file or directory the step produced (log_artifact)


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
        FIELD_TRACEBACK: _F.STRING,
        # the end event's system summary (pipeline_sdk.system.Summary)
        FIELD_CPU_SECONDS: _F.FLOAT,
        FIELD_MEAN_CPU_PERCENT: _F.FLOAT,
        FIELD_PEAK_RSS_BYTES: _F.INTEGER,
        FIELD_MEMORY_LIMIT_BYTES: _F.INTEGER,
        FIELD_CPU_LIMIT_CORES: _F.FLOAT,
        FIELD_SYSTEM_SAMPLES: _F.INTEGER,
        FIELD_SYSTEM_ERRORS: _F.INTEGER,
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
IO: Final = Stream(  # an input the step read, an output it wrote, or an artifact it produced
    tag="mlobs.io",
    measurement="io",
    tags=(*IDENTITY_TAGS, TAG_DIRECTION, TAG_NAME),
    fields={
        FIELD_VALUE: _F.STRING,
        FIELD_SOURCE: _F.STRING,
        FIELD_DESTINATION: _F.STRING,
        # an artifact's record (direction "artifact")
        FIELD_URI: _F.STRING,
        FIELD_SIZE_BYTES: _F.INTEGER,
        FIELD_SHA256: _F.STRING,
        FIELD_MEDIA_TYPE: _F.STRING,
        FIELD_MANIFEST: _F.STRING,
        FIELD_STORED: _F.INTEGER,
    },
)
LOG: Final = Stream(  # a structured log record of a run
    tag="mlobs.log",
    measurement="log",
    tags=(*IDENTITY_TAGS, TAG_LEVEL),
    fields={FIELD_MESSAGE: _F.STRING, FIELD_LOGGER: _F.STRING, FIELD_EXTRA: _F.STRING},
)

RUN_RECORD: Final = Stream(  # one per finished run, written by the pipeline exporter from Kubernetes
    tag="mlobs.run_record",
    measurement="run_record",
    tags=(*IDENTITY_TAGS, TAG_STATUS, TAG_REASON, TAG_NAMESPACE),
    fields={
        FIELD_EXIT_CODE: _F.INTEGER,
        FIELD_START_NS: _F.INTEGER,
        FIELD_END_NS: _F.INTEGER,
        FIELD_EXECUTION_TIME_MS: _F.FLOAT,
        FIELD_IMAGE: _F.STRING,
        FIELD_NODE: _F.STRING,
        FIELD_POD: _F.STRING,
        FIELD_ATTEMPTS: _F.INTEGER,
        FIELD_ERROR: _F.STRING,
    },
)
API_REQUEST: Final = Stream(  # one per model-API request
    tag="mlobs.api_request",
    measurement="api_request",
    tags=(TAG_SERVICE, TAG_ENDPOINT, TAG_METHOD, TAG_HTTP_STATUS),
    fields={FIELD_DURATION_MS: _F.FLOAT, FIELD_USER: _F.STRING, FIELD_STATUS_CODE: _F.INTEGER},
)
PREDICTION: Final = Stream(  # one per prediction a model API logs: a score or an outcome
    tag="mlobs.prediction",
    measurement="prediction",
    tags=(TAG_SERVICE, TAG_MODEL, TAG_MODEL_VERSION),
    fields={FIELD_SCORE: _F.FLOAT, FIELD_OUTCOME: _F.STRING},
)

SYSTEM: Final = Stream(  # what a run's process used, a row per sample (and one per GPU, with TAG_GPU)
    tag="mlobs.system",
    measurement="system",
    tags=(*IDENTITY_TAGS, TAG_GPU),
    fields={
        FIELD_ELAPSED_SECONDS: _F.FLOAT,
        FIELD_CPU_PERCENT: _F.FLOAT,
        FIELD_CPU_SECONDS: _F.FLOAT,
        FIELD_RSS_BYTES: _F.INTEGER,
        FIELD_PEAK_RSS_BYTES: _F.INTEGER,
        FIELD_READ_BYTES: _F.INTEGER,
        FIELD_WRITE_BYTES: _F.INTEGER,
        FIELD_THREADS: _F.INTEGER,
        FIELD_OPEN_FDS: _F.INTEGER,
        FIELD_PROCESSES: _F.INTEGER,
        FIELD_MEMORY_LIMIT_BYTES: _F.INTEGER,
        FIELD_CPU_LIMIT_CORES: _F.FLOAT,
        FIELD_GPU_UTILIZATION_PERCENT: _F.FLOAT,
        FIELD_GPU_MEMORY_USED_BYTES: _F.INTEGER,
        FIELD_GPU_MEMORY_TOTAL_BYTES: _F.INTEGER,
    },
)

# A profile's chunks are points at the profile's time plus the chunk's index in nanoseconds, so they are
# distinct points of one series (a tag per index would multiply the series by the chunks).  A baseline
# carries the run's identity and TAG_NAME; a serving profile the service, model, version and replica.
PROFILE: Final = Stream(  # a data profile (pipeline_sdk.drift.Profile), one point per chunk
    tag="mlobs.profile",
    measurement="profile",
    tags=(*IDENTITY_TAGS, TAG_NAME, TAG_SERVICE, TAG_MODEL, TAG_MODEL_VERSION, TAG_REPLICA),
    fields={
        FIELD_CHUNK: _F.STRING,
        FIELD_INDEX: _F.INTEGER,
        FIELD_TOTAL: _F.INTEGER,
        FIELD_ROWS: _F.INTEGER,
        FIELD_DIGEST: _F.STRING,
    },
)

RUN_STREAMS: Final = (RUN, PARAM, METRIC, LIST_METRIC, IO, LOG, RUN_RECORD, SYSTEM)  # streams keyed by a run
STREAMS: Final = (*RUN_STREAMS, API_REQUEST, PREDICTION, PROFILE)  # every stream: fluent.conf routes each
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
LABEL_SERVICE: Final = "mlobs.io/service"  # service name of a model API's Pods

# --------------------------------------------------------------------------
# Prometheus metric and label names (the exporters emit them, the rules alert on them)
# --------------------------------------------------------------------------

PROM_LABEL_PIPELINE: Final = "pipeline"  # pipeline name (bounded)
PROM_LABEL_STEP: Final = "step"  # step name (bounded)
PROM_LABEL_STATUS: Final = "status"  # a RunStatus value other than "started"; on HTTP metrics "2xx"...
PROM_LABEL_REASON: Final = "reason"  # a RunReason value (bounded)
PROM_LABEL_NAMESPACE: Final = "namespace"  # Kubernetes namespace (bounded)
PROM_LABEL_RESOURCE: Final = "resource"  # what the exporter watches: "jobs" or "pods"
PROM_LABEL_HANDLER: Final = "handler"  # route template of a request, never the raw path
PROM_LABEL_METHOD: Final = "method"  # HTTP method
# Only on the last-failure info gauge, one series per pipeline/step at a time (replaced
# on the next failure), so active series stay bounded; never on a counter or histogram.
PROM_LABEL_RUN_ID: Final = "run_id"  # run id of the last failed run
PROM_LABEL_EXIT_CODE: Final = "exit_code"  # exit code of the last failed run ("" when none)
PROM_LABEL_ERROR: Final = "error"  # the last failed run's termination message: one line, 200 chars ("": none)
# A scrape through a ServiceMonitor keeps the target's own namespace and pod labels and renames these
# two to exported_namespace and exported_pod (the rules read either).
PROM_LABEL_POD: Final = "pod"  # the last failed run's last pod ("" when none was seen)

PROM_RUNS_TOTAL: Final = (
    "mlobs_pipeline_runs_total"  # counter of finished runs by pipeline, step, status, reason
)
PROM_RUN_DURATION: Final = (
    "mlobs_pipeline_run_duration_seconds"  # histogram of run wall time by pipeline, step, status
)
PROM_POD_FAILURES: Final = (
    "mlobs_pipeline_pod_failures_total"  # counter of failed attempts (pods) by pipeline, step, reason
)
PROM_RUNS_IN_PROGRESS: Final = "mlobs_pipeline_runs_in_progress"  # gauge of running runs by pipeline, step
PROM_LAST_SUCCESS: Final = (
    "mlobs_pipeline_last_success_timestamp_seconds"  # gauge: end of the last successful run
)
PROM_LAST_FAILURE: Final = (
    "mlobs_pipeline_last_failure_timestamp_seconds"  # gauge: end of the last failed run
)
PROM_LAST_FAILURE_START: Final = (
    "mlobs_pipeline_last_failure_start_timestamp_seconds"  # gauge: start of the last failed run
)
PROM_LAST_FAILURE_INFO: Final = (
    "mlobs_pipeline_last_failure_info"  # the last failed run's id, reason, exit code; value: its end
)
PROM_OLDEST_RUNNING_START: Final = (
    "mlobs_pipeline_oldest_running_start_timestamp_seconds"  # gauge: start of the oldest running run
)
PROM_MAX_DURATION: Final = "mlobs_pipeline_max_duration_seconds"  # configured: a run running longer is stuck
PROM_SUCCESS_WINDOW: Final = (
    "mlobs_pipeline_success_window_seconds"  # configured: a pipeline/step must succeed this often
)
PROM_EXPORTER_WATCH_EVENTS: Final = "mlobs_exporter_watch_events_total"  # counter by resource
PROM_EXPORTER_WATCH_ERRORS: Final = "mlobs_exporter_watch_errors_total"  # counter of API errors by resource
PROM_EXPORTER_RELISTS: Final = "mlobs_exporter_relists_total"  # counter of full relists by resource
PROM_EXPORTER_TRACKED_RUNS: Final = "mlobs_exporter_tracked_runs"  # gauge: runs held in memory
PROM_EXPORTER_RECORDS: Final = "mlobs_exporter_run_records_total"  # counter of run records sent
PROM_EXPORTER_RECORDS_DROPPED: Final = (
    "mlobs_exporter_run_records_dropped_total"  # counter of run records the transport dropped
)
PROM_EXPORTER_OBJECT_ERRORS: Final = (
    "mlobs_exporter_object_errors_total"  # counter of malformed API objects skipped, by resource
)
PROM_EXPORTER_TRACKED_STEPS: Final = (
    "mlobs_exporter_tracked_pipeline_steps"  # gauge: pipeline/step pairs with series (bounded by a cap)
)
PROM_EXPORTER_REFUSED_STEPS: Final = (
    "mlobs_exporter_refused_pipeline_steps_total"  # counter of runs of pairs refused (cap or allow-list)
)
PROM_EXPORTER_LEADER: Final = "mlobs_exporter_leader"  # gauge: 1 while this exporter leads (holds the Lease)
# A new leader treats runs that ended up to this annotation's time as historical (already sent).
ANNOTATION_COUNTED_THROUGH: Final = "mlobs.io/counted-through"  # Lease annotation: records sent through (s)

# Model-API metrics: the names and labels prometheus-fastapi-instrumentator made common.
PROM_HTTP_REQUESTS: Final = "http_requests_total"  # counter by handler, method, status ("2xx"...)
PROM_HTTP_DURATION: Final = "http_request_duration_seconds"  # histogram by handler, method
PROM_HTTP_UNMATCHED_HANDLER: Final = "none"  # handler label of a request no route matched
PROM_HTTP_OTHER_METHOD: Final = "OTHER"  # method label of a request with a non-standard method

# Names other components define, which our rules and dashboards use.
PROM_FLUENTD_OUTPUT_ERRORS: Final = "fluentd_output_status_num_errors"  # fluent-plugin-prometheus
PROM_FLUENTD_OUTPUT_RETRIES: Final = "fluentd_output_status_retry_count"  # fluent-plugin-prometheus
PROM_FLUENTD_BUFFER_BYTES: Final = "fluentd_output_status_buffer_total_bytes"  # fluent-plugin-prometheus
PROM_CONTAINER_MEMORY: Final = "container_memory_working_set_bytes"  # cAdvisor
PROM_CONTAINER_CPU: Final = "container_cpu_usage_seconds_total"  # cAdvisor: CPU seconds used
PROM_CONTAINER_CPU_PERIODS: Final = "container_cpu_cfs_periods_total"  # cAdvisor: CFS periods run
PROM_CONTAINER_CPU_THROTTLED: Final = "container_cpu_cfs_throttled_periods_total"  # cAdvisor: throttled
PROM_KSM_LAST_TERMINATED: Final = (
    "kube_pod_container_status_last_terminated_reason"  # kube-state-metrics: why a container last ended
)
PROM_KSM_LABEL_SERVICE: Final = "label_mlobs_io_service"  # LABEL_SERVICE as kube_pod_labels spells it
PROM_ALERTMANAGER_NOTIFICATIONS: Final = "alertmanager_notifications_total"  # by integration
PROM_ALERTMANAGER_NOTIFICATIONS_FAILED: Final = "alertmanager_notifications_failed_total"  # by integration
PROM_INFLUXDB_HTTP_REQUESTS: Final = "http_api_requests_total"  # InfluxDB 2: by path, status ("5XX")
INFLUXDB_WRITE_PATH: Final = "/api/v2/write"  # the path label of InfluxDB's write endpoint
PROM_KSM_CONTAINER_LIMITS: Final = "kube_pod_container_resource_limits"  # kube-state-metrics
PROM_KSM_CONTAINER_REQUESTS: Final = "kube_pod_container_resource_requests"  # kube-state-metrics
PROM_KSM_POD_LABELS: Final = "kube_pod_labels"  # kube-state-metrics, with our labels allow-listed
PROM_KSM_LABEL_PIPELINE: Final = "label_mlobs_io_pipeline"  # LABEL_PIPELINE as kube_pod_labels spells it
PROM_KSM_LABEL_STEP: Final = "label_mlobs_io_step"  # LABEL_STEP as kube_pod_labels spells it

# Drift monitors push these to the Pushgateway (pipeline_sdk.drift.monitor), one group per job, model and
# version: each push replaces the group's series, so the baseline and window labels stay one series each.
PROM_LABEL_MODEL: Final = "model"  # model name of a drift monitor (bounded: one per monitor)
PROM_LABEL_VERSION: Final = "version"  # model version it watches, or DRIFT_ANY_VERSION
PROM_LABEL_FEATURE: Final = "feature"  # a feature (column) the monitor compares
PROM_LABEL_TEST: Final = "test"  # the drift test of a feature, e.g. "wasserstein"
PROM_LABEL_MONITOR: Final = "monitor"  # the monitor's name (its run's step)
PROM_LABEL_BASELINE: Final = "baseline"  # the baseline profile, "<run id>:<name>" (one per group)
PROM_LABEL_WINDOW: Final = "window"  # the serving window compared, e.g. "1h" (one per group)
DRIFT_ANY_VERSION: Final = "*"  # the version label of a monitor that watches every version of its model
DRIFT_PIPELINE: Final = "drift"  # the pipeline of every drift monitor's runs (their step: the monitor's name)
DRIFT_QUANTILE_SERIES: Final = (".baseline_quantiles", ".current_quantiles")  # list metrics <feature><these>
DRIFT_QUANTILE_PERCENTS: Final = tuple(range(0, 101, 5))  # their indexes: the percent of rows at or below
PROM_DRIFT_STATISTIC: Final = "mlobs_drift_statistic"  # gauge by model, version, feature, test: the statistic
PROM_DRIFT_THRESHOLD: Final = "mlobs_drift_threshold"  # gauge by model, version, feature, test: its threshold
PROM_DRIFT_FEATURE_DRIFTED: Final = "mlobs_drift_feature_drifted"  # gauge by ..., feature, test: 1 drifted
PROM_DRIFT_DETECTED: Final = "mlobs_drift_detected"  # gauge by model, version, monitor, baseline, window: 1/0
PROM_DRIFT_DRIFTED_SHARE: Final = "mlobs_drift_drifted_share"  # gauge by model, version: share drifted
PROM_DRIFT_LAST_RUN: Final = "mlobs_drift_last_run_timestamp_seconds"  # gauge by model, version: last capture
PROM_DRIFT_SCHEDULE: Final = "mlobs_drift_schedule_seconds"  # gauge by model, version: its schedule, seconds
PROM_JOB_DRIFT: Final = "mlobs-drift"  # the Pushgateway job name of drift monitors

# Scrape job names (the chart's ServiceMonitors set them; `up{job=...}` alerts use them).
PROM_JOB_EXPORTER: Final = "mlobs-pipeline-exporter"  # the pipeline exporter
PROM_JOB_FLUENTD: Final = "mlobs-fluentd"  # Fluentd's own metrics
PROM_JOB_MODEL_API: Final = "mlobs-model-api"  # model APIs instrumented with the SDK middleware
PROM_JOB_INFLUXDB: Final = "mlobs-influxdb"  # InfluxDB's own metrics (a relabeling sets it: upstream Service)

# --------------------------------------------------------------------------
# Alerts (rules in alerting/, routes and templates in the Alertmanager config)
# --------------------------------------------------------------------------

ALERT_LABEL_SEVERITY: Final = "severity"  # "critical" or "warning"
ALERT_LABEL_STACK: Final = "stack"  # on every mlobs alert: Alertmanager routes ours by it (ALERT_STACK)
ALERT_STACK: Final = "mlobs"  # the value of ALERT_LABEL_STACK on mlobs alerts
# The chart prefixes alerting.runbookBaseUrl to it, or drops the annotation when that is empty.
RUNBOOK_PATTERN: Final = "{alertname}.md"  # runbook_url of alerts: alerting/runbooks/<alertname>.md, relative

# --------------------------------------------------------------------------
# Grafana datasource uids (provisioned by the chart, used by every dashboard)
# --------------------------------------------------------------------------

DATASOURCE_PROMETHEUS_UID: Final = "mlobs-prometheus"  # the Prometheus datasource
DATASOURCE_INFLUXDB_UID: Final = "mlobs-influxdb"  # the InfluxDB (Flux) datasource
INFLUXDB_BUCKET: Final = "mlobs"  # the bucket fluent.conf writes to and dashboards read
INFLUXDB_DOWNSAMPLED_BUCKET: Final = "mlobs_downsampled"  # the bucket the chart's downsampling tasks write to
INFLUXDB_ORG: Final = "mlobs"  # the organization the chart creates (the read API's default)

# Dashboard uids are "mlobs-" + the file stem of dashboards/<stem>.dashboard.py, "_" -> "-".
DASHBOARD_UID_PREFIX: Final = "mlobs-"  # every dashboard uid starts with it
DASHBOARD_PIPELINE_RUNS_UID: Final = "mlobs-pipeline-runs"  # dashboards/pipeline_runs.dashboard.py
DASHBOARD_RUN_VIEW_UID: Final = "mlobs-run-view"  # dashboards/run_view.dashboard.py: runs, compared
DASHBOARD_MODEL_API_UID: Final = "mlobs-model-api"  # dashboards/model_api.dashboard.py
DASHBOARD_RESOURCES_UID: Final = "mlobs-resources"  # dashboards/resources.dashboard.py
DASHBOARD_STACK_HEALTH_UID: Final = "mlobs-stack-health"  # dashboards/stack_health.dashboard.py
DASHBOARD_MODEL_DRIFT_UID: Final = "mlobs-model-drift"  # dashboards/model_drift.dashboard.py
GRAFANA_VAR_MODEL: Final = "model"  # dashboard variable: ?var-model=
GRAFANA_VAR_VERSION: Final = "version"  # dashboard variable: ?var-version=
GRAFANA_VAR_PIPELINE: Final = "pipeline"  # dashboard variable: ?var-pipeline=
GRAFANA_VAR_STEP: Final = "step"  # dashboard variable: ?var-step=
GRAFANA_VAR_RUN_ID: Final = "run_id"  # dashboard variable: ?var-run_id=
RUN_VIEW_LOGS_PANEL_ID: Final = 40  # id of the run view's logs panel: emails link ?viewPanel= to it

# --------------------------------------------------------------------------
# Environment variables (public: users and the chart set them)
# --------------------------------------------------------------------------

ENV_FLUENTD_HOST: Final = "MLOBS_FLUENTD_HOST"  # Fluentd host; unset means the local store
ENV_FLUENTD_PORT: Final = "MLOBS_FLUENTD_PORT"  # Fluentd forward port (default 24224)
ENV_HOME: Final = "MLOBS_HOME"  # directory of the local store and of the spool (default ~/.mlobs)
ENV_PIPELINE: Final = "MLOBS_PIPELINE"  # run identity: pipeline name
ENV_STEP: Final = "MLOBS_STEP"  # run identity: step name
ENV_RUN_ID: Final = "MLOBS_RUN_ID"  # run identity: run id
ENV_ATTEMPT: Final = "MLOBS_ATTEMPT"  # run identity: the attempt outside a pod (never set in one); see run()
ENV_POD_NAME: Final = "MLOBS_POD_NAME"  # the pod's name (Downward API): a retried Job's attempt
ENV_FLUSH_TIMEOUT: Final = "MLOBS_FLUSH_TIMEOUT"  # seconds a run waits at exit for delivery (default 10)
ENV_SPOOL_MAX_MB: Final = "MLOBS_SPOOL_MAX_MB"  # bound of the on-disk spool in MiB (default 512)
ENV_LOG_LEVEL: Final = "MLOBS_LOG_LEVEL"  # lowest level of the log records a run captures (default INFO)
ENV_ON_INVALID: Final = "MLOBS_ON_INVALID"  # an invalid recording call: "raise" (default) or "drop" (counted)
ENV_TERMINATION_LOG: Final = "MLOBS_TERMINATION_LOG"  # file a failed run's summary goes to; "off": none
ENV_FLUENTD_SHARED_KEY: Final = "MLOBS_FLUENTD_SHARED_KEY"  # Forward-protocol shared key; unset: no auth
ENV_USER_HASH_KEY: Final = "MLOBS_USER_HASH_KEY"  # HMAC key of model-API user ids; unset: unkeyed
ENV_INFLUXDB_URL: Final = "MLOBS_INFLUXDB_URL"  # InfluxDB the read API queries; unset: the local store
ENV_INFLUXDB_TOKEN: Final = "MLOBS_INFLUXDB_TOKEN"  # noqa: S105 - the name of the variable holding the API token
ENV_INFLUXDB_ORG: Final = "MLOBS_INFLUXDB_ORG"  # its organization (default INFLUXDB_ORG)
ENV_INFLUXDB_BUCKET: Final = "MLOBS_INFLUXDB_BUCKET"  # its bucket (default INFLUXDB_BUCKET)
ENV_SYSTEM_INTERVAL: Final = "MLOBS_SYSTEM_INTERVAL"  # seconds between two system samples of a run; 0: off
ENV_PROFILE_INTERVAL: Final = "MLOBS_PROFILE_INTERVAL"  # seconds between two serving profiles of a model
ENV_PUSHGATEWAY_URL: Final = "MLOBS_PUSHGATEWAY_URL"  # the Pushgateway drift monitors push to; unset: none
# Set in a notebook's kernel by Jupyter and VS Code; each names the notebook (the default pipeline).
JUPYTER_SESSION_VAR: Final = "JPY_SESSION_NAME"  # environment variable Jupyter sets: the notebook's path
JUPYTER_SESSION_GLOBAL: Final = "__session__"  # global ipykernel sets in the notebook: its path
VSCODE_NOTEBOOK_GLOBAL: Final = "__vsc_ipynb_file__"  # global VS Code sets in the notebook: its path

DEFAULT_FLUENTD_PORT: Final = 24224  # Fluentd's in_forward default
DEFAULT_SYSTEM_INTERVAL: Final = 10.0  # MLOBS_SYSTEM_INTERVAL's default (MLflow's system metrics' too)
DEFAULT_PROFILE_INTERVAL: Final = 60.0  # MLOBS_PROFILE_INTERVAL's default
DEFAULT_TERMINATION_LOG: Final = "/dev/termination-log"  # Kubernetes' default terminationMessagePath
TERMINATION_MESSAGE_MAX_BYTES: Final = 4096  # the kubelet keeps at most this much of one container's message

# --------------------------------------------------------------------------
# What a step's containers print: the node forwarder (fluentd/forwarder.conf) tails it into LOG
# --------------------------------------------------------------------------

LOG_SOURCE_STDOUT: Final = "stdout"  # a tailed record's source and FIELD_LOGGER: the container's stdout
LOG_SOURCE_STDERR: Final = "stderr"  # a tailed record's source and FIELD_LOGGER: the container's stderr
EXTRA_SOURCE_KEY: Final = "source"  # in a tailed log record's extra JSON: LOG_SOURCE_STDOUT or _STDERR
EXTRA_CONTAINER_KEY: Final = "container"  # in a tailed log record's extra JSON: the container printing it
