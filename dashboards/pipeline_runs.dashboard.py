"""Pipeline runs: how are my pipelines doing?  Runs by status, failure rate,
duration per step, what runs now, the last status of each step, and the recent
failures with a link to each run."""

from dashboards.builders import (
    FluxTarget,
    Layout,
    PromTarget,
    prom_variable,
    stat,
    table,
    timeseries,
)
from dashboards.builders import (
    dashboard as make_dashboard,
)
from dashboards.flux import Var, select
from pipeline_sdk import contract as c

SEL = 'pipeline=~"$pipeline", step=~"$step"'
RUNS = c.PROM_RUNS_TOTAL
layout = Layout()

run_view = (
    f"/d/{c.DASHBOARD_RUN_VIEW_UID}/?var-{c.GRAFANA_VAR_PIPELINE}=${{__data.fields.pipeline}}"
    f"&var-{c.GRAFANA_VAR_STEP}=${{__data.fields.step}}&var-{c.GRAFANA_VAR_RUN_ID}=${{__value.raw}}"
)
# The exporter's run records: one per attempt (pod) of a run, the last one with the run's outcome.
records = select(c.RUN_RECORD, fields=[c.FIELD_EXECUTION_TIME_MS]).where(
    {c.TAG_PIPELINE: Var(c.GRAFANA_VAR_PIPELINE), c.TAG_STEP: Var(c.GRAFANA_VAR_STEP)}
)

panels = [
    stat(
        layout,
        "Runs in progress",
        [PromTarget(f"sum({c.PROM_RUNS_IN_PROGRESS}{{{SEL}}})")],
        description="Runs pending or running now, from Kubernetes (the pipeline exporter).",
    ),
    stat(
        layout,
        "Failure rate (24h)",
        [
            PromTarget(
                f'sum(increase({RUNS}{{{SEL}, status="failed"}}[24h])) / clamp_min(sum(increase({RUNS}{{{SEL}}}[24h])), 1)'
            )
        ],
        description="Failed runs over finished runs in the last 24 hours.",
        unit="percentunit",
    ),
    stat(
        layout,
        "Failed runs (24h)",
        [PromTarget(f'sum(increase({RUNS}{{{SEL}, status="failed"}}[24h]))')],
        description="Runs that failed in the last 24 hours, whatever the reason.",
    ),
    stat(
        layout,
        "Succeeded runs (24h)",
        [PromTarget(f'sum(increase({RUNS}{{{SEL}, status="succeeded"}}[24h]))')],
        description="Runs that succeeded in the last 24 hours.",
    ),
    timeseries(
        layout,
        "Runs by status",
        [PromTarget(f"sum by (status) (increase({RUNS}{{{SEL}}}[$__rate_interval]))", legend="{{status}}")],
        description="Finished runs per interval, by status.",
        bars=True,
        stacked=True,
    ),
    timeseries(
        layout,
        "Failures by reason",
        [
            PromTarget(
                f'sum by (reason) (increase({RUNS}{{{SEL}, status="failed"}}[$__rate_interval]))',
                legend="{{reason}}",
            )
        ],
        description="Failed runs per interval: OOMKilled, Error, Evicted, BackoffLimitExceeded...",
        bars=True,
        stacked=True,
    ),
    timeseries(
        layout,
        "Duration p50 and p95 per step",
        [
            PromTarget(
                f"histogram_quantile(0.5, sum by (le, pipeline, step) (rate({c.PROM_RUN_DURATION}_bucket{{{SEL}}}[1h])))",
                legend="p50 {{pipeline}}/{{step}}",
            ),
            PromTarget(
                f"histogram_quantile(0.95, sum by (le, pipeline, step) (rate({c.PROM_RUN_DURATION}_bucket{{{SEL}}}[1h])))",
                legend="p95 {{pipeline}}/{{step}}",
                ref_id="B",
            ),
        ],
        description="Run wall time over the last hour, per pipeline step.",
        unit="s",
    ),
    timeseries(
        layout,
        "Runs in progress per step",
        [
            PromTarget(
                f"sum by (pipeline, step) ({c.PROM_RUNS_IN_PROGRESS}{{{SEL}}})",
                legend="{{pipeline}}/{{step}}",
            )
        ],
        description="Pending or running runs, per pipeline step.",
    ),
    table(
        layout,
        "Last status per pipeline step",
        [
            FluxTarget(
                records.group(c.TAG_PIPELINE, c.TAG_STEP)
                .sort("_time")
                .call("last")
                .attempts()
                .keep(
                    "_time",
                    c.TAG_PIPELINE,
                    c.TAG_STEP,
                    c.TAG_STATUS,
                    c.TAG_REASON,
                    c.TAG_RUN_ID,
                    c.TAG_ATTEMPT,
                )
                .group()
            )
        ],
        description=(
            "The last finished attempt of each step, with its status and reason (run records): a retried "
            "Job's last pod, which carries the run's outcome. The run id opens the run view."
        ),
        links={c.TAG_RUN_ID: run_view},
        w=12,
    ),
    table(
        layout,
        "Recent failures",
        [
            FluxTarget(
                select(c.RUN_RECORD, fields=[c.FIELD_EXECUTION_TIME_MS, c.FIELD_ERROR])
                .where(
                    {
                        c.TAG_PIPELINE: Var(c.GRAFANA_VAR_PIPELINE),
                        c.TAG_STEP: Var(c.GRAFANA_VAR_STEP),
                        c.TAG_STATUS: c.RunStatus.FAILED.value,
                    }
                )
                .pivot_fields()  # a failure without an error field keeps its row (error empty)
                .group()
                .sort("_time", desc=True)
                .limit(50)
                .attempts()
                .keep(
                    "_time",
                    c.TAG_PIPELINE,
                    c.TAG_STEP,
                    c.TAG_RUN_ID,
                    c.TAG_ATTEMPT,
                    c.TAG_REASON,
                    c.FIELD_ERROR,
                    c.TAG_NAMESPACE,
                )
            )
        ],
        description=(
            "The last 50 failed attempts, each with its own reason and error (the failed container's "
            "termination message: the SDK's summary of the exception, or the log's tail): every failed pod "
            "of a retried Job is a row (attempt: the pod's name), even when a later attempt succeeded. "
            "The run id opens the run view."
        ),
        links={c.TAG_RUN_ID: run_view},
        w=12,
    ),
]

dashboard = make_dashboard(
    "pipeline_runs",
    "mlobs / Pipeline runs",
    "How are my pipelines doing? Runs by status, failures by reason, durations, and the last failures.",
    panels,
    [
        prom_variable("pipeline", "Pipeline", f"label_values({RUNS}, pipeline)"),
        prom_variable("step", "Step", f'label_values({RUNS}{{pipeline=~"$pipeline"}}, step)'),
    ],
)
