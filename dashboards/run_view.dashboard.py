"""Run view and comparison: how did these runs do, side by side?  One row per run
(status, duration, params, final metrics, list metrics reduced by last, min, max
or mean), the list-metric curves overlaid, the inputs and outputs, and the logs."""

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
from dashboards.flux import Flux, select, tag_values
from pipeline_sdk import contract as c

RUN = {c.TAG_PIPELINE: "${pipeline}"}
RUNS = {c.TAG_RUN_ID: c.GRAFANA_VAR_RUN_ID}
layout = Layout()


def by_name(stream: c.Stream, reducer: str) -> Flux:
    """One column per metric or param name, one row per run."""
    return (
        select(stream, fields=[c.FIELD_VALUE], equal=RUN, among=RUNS)
        .group(c.TAG_RUN_ID, c.TAG_NAME)
        .then(reducer)
        .keep(c.TAG_RUN_ID, c.TAG_NAME, "_value")
        .then("group()")
        .pivot_by(c.TAG_NAME, (c.TAG_RUN_ID,))
    )


status = (
    select(c.RUN, fields=[c.FIELD_DURATION_MS], equal=RUN, among=RUNS)
    .group(c.TAG_RUN_ID)
    .then("last()")
    .keep(c.TAG_RUN_ID, c.TAG_STATUS, "_value")
    .rename({"_value": c.FIELD_DURATION_MS})
    .then("group()")
)
list_metrics = (
    select(c.LIST_METRIC, fields=[c.FIELD_VALUE], equal=RUN, among=RUNS)
    .group(c.TAG_RUN_ID, c.TAG_NAME)
    .then("${agg}()")
    .then('map(fn: (r) => ({r with name: r.name + " (${agg})"}))', uses=[c.TAG_NAME])
    .keep(c.TAG_RUN_ID, c.TAG_NAME, "_value")
    .then("group()")
    .pivot_by(c.TAG_NAME, (c.TAG_RUN_ID,))
)
curves = (
    select(c.LIST_METRIC, fields=[c.FIELD_VALUE, c.FIELD_INDEX], equal=RUN, among=RUNS)
    .pivot_fields()
    .keep(c.TAG_RUN_ID, c.TAG_NAME, c.FIELD_INDEX, c.FIELD_VALUE)
)
io = (
    select(c.IO, fields=[c.FIELD_VALUE, c.FIELD_SOURCE, c.FIELD_DESTINATION], equal=RUN, among=RUNS)
    .pivot_fields()
    .then("group()")
    .keep(
        "_time", c.TAG_RUN_ID, c.TAG_DIRECTION, c.TAG_NAME, c.FIELD_VALUE, c.FIELD_SOURCE, c.FIELD_DESTINATION
    )
    .sort("_time")
)
log_lines = (
    select(c.LOG, fields=[c.FIELD_MESSAGE, c.FIELD_LOGGER], equal=RUN, among={**RUNS, c.TAG_LEVEL: "level"})
    .pivot_fields()
    .then("group()")
    .keep("_time", c.TAG_LEVEL, c.TAG_RUN_ID, c.FIELD_LOGGER, c.FIELD_MESSAGE)
    .sort("_time")
)

panels = [
    table(
        layout,
        "Runs compared",
        [
            FluxTarget(status, "A"),
            FluxTarget(by_name(c.PARAM, "last()"), "B"),
            FluxTarget(by_name(c.METRIC, "last()"), "C"),
            FluxTarget(list_metrics, "D"),
        ],
        description=(
            "One row per run: status and duration, its params, its final simple metrics, and each list "
            "metric reduced by the chosen aggregation. Click a column header to sort."
        ),
        transformations=[{"id": "joinByField", "options": {"byField": c.TAG_RUN_ID, "mode": "outer"}}],
        h=10,
    ),
    trend(
        layout,
        "List metrics, runs overlaid",
        [FluxTarget(curves)],
        x_field=c.FIELD_INDEX,
        description="Each list metric against its step or epoch, one line per run and metric.",
    ),
    table(
        layout,
        "Inputs and outputs",
        [FluxTarget(io)],
        description="What each run read (with its source) and wrote (with its destination).",
    ),
    logs(
        layout,
        "Logs",
        [FluxTarget(log_lines)],
        panel_id=c.RUN_VIEW_LOGS_PANEL_ID,
        description="The runs' log records at the chosen levels; line breaks are stored as \\n.",
    ),
]

dashboard = make_dashboard(
    "run_view",
    "mlobs / Run view",
    "How did these runs do, side by side? Pick a pipeline and one or more runs.",
    panels,
    [
        flux_variable("pipeline", "Pipeline", tag_values(c.RUN, c.TAG_PIPELINE), multi=False),
        flux_variable("step", "Step", tag_values(c.RUN, c.TAG_STEP, RUN), multi=False),
        flux_variable(
            "run_id", "Runs", tag_values(c.RUN, c.TAG_RUN_ID, {**RUN, c.TAG_STEP: "${step}"}), multi=True
        ),
        custom_variable("agg", "List metrics reduced by", ["last", "min", "max", "mean"], default="last"),
        custom_variable(
            "level",
            "Log levels",
            ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
            default="INFO",
            multi=True,
        ),
    ],
    time_from="now-7d",
)
