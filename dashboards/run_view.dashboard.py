"""Run view and comparison: how did these runs do, side by side?  One row per step run
attempt (status, duration, params, final metrics, list metrics reduced by last, min,
max or mean, and what Kubernetes said of it), the list-metric curves overlaid, the CPU and
memory of each run over its own time (seconds since it started, so runs started apart line
up), with the container's limit as a dashed line when the run had one, the inputs and
outputs, and the logs, all of the chosen step.

Attempts are never merged: a retried Job's pods, or a notebook cell run twice with
one run id, are each a row, a line and a label of their own, "<run id> #<attempt>"
(the attempt is "1", "2"... or, in Kubernetes, the pod's name; data written before
attempts existed reads as "#1").  Every attempt is shown rather than only the latest,
because comparing a failed attempt with the one that succeeded is what the view is for.
"""

from dashboards.builders import (
    FluxTarget,
    Layout,
    custom_variable,
    flux_variable,
    logs,
    table,
    trend,
)
from dashboards.builders import (
    dashboard as make_dashboard,
)
from dashboards.flux import RUN_LABEL, Choice, DashboardFlux, Var, select, tag_values
from pipeline_sdk import contract as c

PIPELINE = {c.TAG_PIPELINE: Var(c.GRAFANA_VAR_PIPELINE)}
RUN = {
    **PIPELINE,
    c.TAG_STEP: Var(c.GRAFANA_VAR_STEP),
}  # a run id may be shared by the steps of one execution
RUNS = {c.TAG_RUN_ID: Var(c.GRAFANA_VAR_RUN_ID)}
AGG = Choice("agg", ("last", "min", "max", "mean"))  # how list metrics are reduced
LEVEL = Choice("level", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
layout = Layout()


def per_attempt(stream: c.Stream, field: str, reducer: str | Choice, *by: str) -> DashboardFlux:
    """The chosen runs of the chosen step, reduced per attempt (and ``by``), labelled ``run``."""
    return (
        select(stream, fields=[field], equal=RUN, among=RUNS)
        .group(c.TAG_RUN_ID, c.TAG_ATTEMPT, *by)
        .call(reducer)
        .by_attempt()
    )


def by_name(stream: c.Stream, reducer: str) -> DashboardFlux:
    """One column per metric or param name, one row per attempt."""
    return (
        per_attempt(stream, c.FIELD_VALUE, reducer, c.TAG_NAME)
        .keep(RUN_LABEL, c.TAG_NAME, "_value")
        .group()
        .pivot_by(c.TAG_NAME, (RUN_LABEL,))
    )


status = (
    per_attempt(c.RUN, c.FIELD_DURATION_MS, "last")
    .keep("_time", RUN_LABEL, c.TAG_STATUS, "_value")
    .rename({"_value": c.FIELD_DURATION_MS})
    .group()
    .sort("_time")
)
kubernetes = (
    per_attempt(c.RUN_RECORD, c.FIELD_POD, "last")
    .keep(RUN_LABEL, c.TAG_REASON, "_value")
    .rename({"_value": c.FIELD_POD})
    .group()
)
list_metrics = (
    per_attempt(c.LIST_METRIC, c.FIELD_VALUE, AGG, c.TAG_NAME)
    .append_text(c.TAG_NAME, " (", AGG, ")")
    .keep(RUN_LABEL, c.TAG_NAME, "_value")
    .group()
    .pivot_by(c.TAG_NAME, (RUN_LABEL,))
)
# A pivot keeps only its row key and the group key, so these label their rows after it.
curves = (
    select(c.LIST_METRIC, fields=[c.FIELD_VALUE, c.FIELD_INDEX], equal=RUN, among=RUNS)
    .pivot_fields()
    .by_attempt()
    .group(RUN_LABEL, c.TAG_NAME)
    .keep(RUN_LABEL, c.TAG_NAME, c.FIELD_INDEX, c.FIELD_VALUE)
    .sort(c.FIELD_INDEX)
)


def over_own_time(*fields: str) -> DashboardFlux:
    """The chosen runs' system samples against the seconds since each started, a series per attempt."""
    return (
        select(c.SYSTEM, fields=[c.FIELD_ELAPSED_SECONDS, *fields], equal=RUN, among=RUNS)
        .pivot_fields()
        .by_attempt()
        .group(RUN_LABEL)
        .keep(RUN_LABEL, c.FIELD_ELAPSED_SECONDS, *fields)
        .sort(c.FIELD_ELAPSED_SECONDS)
    )


CPU_CORES = "cpu_cores"  # the CPU panel's series: cpu_percent in cores, so it shares an axis with the limit
cpu = (
    over_own_time(c.FIELD_CPU_PERCENT, c.FIELD_CPU_LIMIT_CORES)
    .with_column(c.FIELD_CPU_PERCENT, f"r.{c.FIELD_CPU_PERCENT} / 100.0", uses=[c.FIELD_CPU_PERCENT])
    .rename({c.FIELD_CPU_PERCENT: CPU_CORES})
)
memory = over_own_time(c.FIELD_RSS_BYTES, c.FIELD_MEMORY_LIMIT_BYTES)
LIMIT_SERIES = ".*limit.*"  # the series drawn dashed: cpu_limit_cores, memory_limit_bytes
io = (
    select(c.IO, fields=[c.FIELD_VALUE, c.FIELD_SOURCE, c.FIELD_DESTINATION], equal=RUN, among=RUNS)
    .pivot_fields()
    .by_attempt()
    .group()
    .keep("_time", RUN_LABEL, c.TAG_DIRECTION, c.TAG_NAME, c.FIELD_VALUE, c.FIELD_SOURCE, c.FIELD_DESTINATION)
    .sort("_time")
)
log_lines = (
    select(c.LOG, fields=[c.FIELD_MESSAGE, c.FIELD_LOGGER], equal=RUN, among={**RUNS, c.TAG_LEVEL: LEVEL})
    .pivot_fields()
    .by_attempt()
    .group()
    .keep("_time", c.TAG_LEVEL, RUN_LABEL, c.FIELD_LOGGER, c.FIELD_MESSAGE)
    .sort("_time")
)

panels = [
    table(
        layout,
        "Runs compared",
        [
            FluxTarget(status, "A"),
            FluxTarget(by_name(c.PARAM, "last"), "B"),
            FluxTarget(by_name(c.METRIC, "last"), "C"),
            FluxTarget(list_metrics, "D"),
            FluxTarget(kubernetes, "E"),
        ],
        description=(
            "One row per attempt of a run (run id #attempt: a retried Job's pods, a re-run of the same "
            "run id): when it ended, its status and duration, its params, its final simple metrics, each "
            "list metric reduced by the chosen aggregation, and the reason and pod Kubernetes recorded. "
            "Click a column header to sort."
        ),
        transformations=[{"id": "joinByField", "options": {"byField": RUN_LABEL, "mode": "outer"}}],
        h=10,
    ),
    trend(
        layout,
        "List metrics, runs overlaid",
        [FluxTarget(curves)],
        x_field=c.FIELD_INDEX,
        description="Each list metric against its step or epoch, one line per attempt of a run and metric.",
    ),
    trend(
        layout,
        "CPU, runs overlaid",
        [FluxTarget(cpu)],
        x_field=c.FIELD_ELAPSED_SECONDS,
        w=12,
        dashed=LIMIT_SERIES,
        description=(
            "Cores the run's process and its children used (CPU seconds between two samples over the "
            "time between them), against the seconds since the run started, one line per attempt; the "
            "container's CPU limit dashed when it has one. Sampled every MLOBS_SYSTEM_INTERVAL seconds."
        ),
    ),
    trend(
        layout,
        "Memory, runs overlaid",
        [FluxTarget(memory)],
        x_field=c.FIELD_ELAPSED_SECONDS,
        unit="bytes",
        w=12,
        dashed=LIMIT_SERIES,
        description=(
            "Resident memory (RSS) of the run's process and its children against the seconds since the "
            "run started, one line per attempt; the container's memory limit dashed when it has one."
        ),
    ),
    table(
        layout,
        "Inputs and outputs",
        [FluxTarget(io)],
        description="What each attempt read (with its source) and wrote (with its destination).",
    ),
    logs(
        layout,
        "Logs",
        [FluxTarget(log_lines)],
        panel_id=c.RUN_VIEW_LOGS_PANEL_ID,
        description=(
            "The log records of every attempt, at the chosen levels, each labelled run id #attempt; "
            "line breaks are stored as \\n."
        ),
    ),
]

dashboard = make_dashboard(
    "run_view",
    "mlobs / Run view",
    "How did these runs do, side by side? Pick a pipeline, a step and one or more runs: every attempt shows.",
    panels,
    [
        flux_variable(c.GRAFANA_VAR_PIPELINE, "Pipeline", tag_values(c.RUN, c.TAG_PIPELINE), multi=False),
        flux_variable(c.GRAFANA_VAR_STEP, "Step", tag_values(c.RUN, c.TAG_STEP, PIPELINE), multi=False),
        flux_variable(c.GRAFANA_VAR_RUN_ID, "Runs", tag_values(c.RUN, c.TAG_RUN_ID, RUN), multi=True),
        custom_variable(AGG, "List metrics reduced by", default="last"),
        custom_variable(LEVEL, "Log levels", default="INFO", multi=True),
    ],
    time_from="now-7d",
)
