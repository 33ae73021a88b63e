"""Resources: are my steps sized right?  CPU and memory per pipeline step and per
model-API pod against their requests and limits, a right-sizing table of
used/requested and used/limit, the same question per run (each run's peak memory
against its container's limit, from what the SDK's system sampler recorded, over the
last RIGHT_SIZING_RUNS runs of each step), OOM kills and CPU throttling."""

import grafanalib.core as g

from dashboards.builders import (
    FluxTarget,
    Layout,
    PromTarget,
    prom_variable,
    table,
    timeseries,
)
from dashboards.builders import (
    dashboard as make_dashboard,
)
from dashboards.flux import Var, select
from pipeline_sdk import contract as c

KSM_P, KSM_S, KSM_SVC = c.PROM_KSM_LABEL_PIPELINE, c.PROM_KSM_LABEL_STEP, c.PROM_KSM_LABEL_SERVICE
# Pods of the selected pipeline steps, with pipeline and step labels (kube-state-metrics).
STEP_PODS = (
    f"max by (namespace, pod, pipeline, step) (label_replace(label_replace("
    f'{c.PROM_KSM_POD_LABELS}{{{KSM_P}=~"$pipeline", {KSM_S}=~"$step"}}, '
    f'"pipeline", "$1", "{KSM_P}", "(.+)"), "step", "$1", "{KSM_S}", "(.+)"))'
)
API_PODS = (
    f"max by (namespace, pod, service) (label_replace("
    f'{c.PROM_KSM_POD_LABELS}{{{KSM_SVC}!=""}}, "service", "$1", "{KSM_SVC}", "(.+)"))'
)
CPU = f'rate({c.PROM_CONTAINER_CPU}{{container!="", container!="POD"}}[$__rate_interval])'
MEM = f'{c.PROM_CONTAINER_MEMORY}{{container!="", container!="POD"}}'
layout = Layout()
# The right-sizing tables' colours: a ratio of use over request or limit.
RATIO_COLOURS = {
    "fieldConfig": {
        "defaults": {
            "thresholds": {
                "mode": "absolute",
                "steps": [
                    {"color": "blue", "value": None},
                    {"color": "green", "value": 0.3},
                    {"color": "red", "value": 0.9},
                ],
            },
            "custom": {"cellOptions": {"type": "color-background"}},
        }
    }
}


def per_step(metric: str) -> str:
    return f"sum by (pipeline, step) ({metric} * on (namespace, pod) group_left (pipeline, step) {STEP_PODS})"


def spec(kind: str, resource: str) -> str:
    metric = c.PROM_KSM_CONTAINER_REQUESTS if kind == "requests" else c.PROM_KSM_CONTAINER_LIMITS
    return per_step(f'{metric}{{resource="{resource}"}}')


def against_spec(title: str, used: str, resource: str, description: str, unit: str = "short") -> g.TimeSeries:
    """A step's use of ``resource`` over time, with its containers' requests and limits."""
    return timeseries(
        layout,
        title,
        [
            PromTarget(per_step(used), legend="used {{pipeline}}/{{step}}"),
            PromTarget(spec("requests", resource), legend="requested {{pipeline}}/{{step}}", ref_id="B"),
            PromTarget(spec("limits", resource), legend="limit {{pipeline}}/{{step}}", ref_id="C"),
        ],
        description=description,
        unit=unit,
    )


def usage_over_range(metric: str) -> str:
    return f"max_over_time(({per_step(metric)})[$__range:1m])"


RIGHT_SIZING_RUNS = 10  # the per-run table shows this many of each step's latest runs
PEAK_OF_LIMIT = "peak_of_limit"  # a column the per-run table makes: peak RSS / memory limit
MEMORY = (c.FIELD_PEAK_RSS_BYTES, c.FIELD_MEMORY_LIMIT_BYTES)
# The end events of runs the SDK sampled in a container with a memory limit, the latest of each step.
per_run = (
    select(
        c.RUN,
        fields=[*MEMORY, c.FIELD_MEAN_CPU_PERCENT, c.FIELD_CPU_LIMIT_CORES],
        equal={c.TAG_PIPELINE: Var("pipeline"), c.TAG_STEP: Var("step")},
    )
    .pivot_fields()
    .then(f"filter(fn: (r) => exists r.{MEMORY[0]} and exists r.{MEMORY[1]})", uses=MEMORY)
    .attempts()
    .group(c.TAG_PIPELINE, c.TAG_STEP)
    .sort("_time", desc=True)
    .limit(RIGHT_SIZING_RUNS)
    .group()
    .keep(
        "_time",
        c.TAG_PIPELINE,
        c.TAG_STEP,
        c.TAG_RUN_ID,
        c.TAG_ATTEMPT,
        *MEMORY,
        c.FIELD_MEAN_CPU_PERCENT,
        c.FIELD_CPU_LIMIT_CORES,
    )
    .with_column(PEAK_OF_LIMIT, f"float(v: r.{MEMORY[0]}) / float(v: r.{MEMORY[1]})", uses=MEMORY)
    .sort("_time", desc=True)
)


def plain(column: str, unit: str) -> dict[str, object]:
    """A table column shown in ``unit``, not coloured (the colours are the ratio's)."""
    properties = [{"id": "unit", "value": unit}, {"id": "custom.cellOptions", "value": {"type": "auto"}}]
    return {"matcher": {"id": "byName", "options": column}, "properties": properties}


panels = [
    against_spec(
        "CPU per step",
        CPU,
        "cpu",
        "CPU cores used by each pipeline step, against what it requests and its limit.",
    ),
    against_spec(
        "Memory per step",
        MEM,
        "memory",
        "Working-set memory of each pipeline step, against its request and limit.",
        unit="bytes",
    ),
    timeseries(
        layout,
        "CPU per model-API pod",
        [
            PromTarget(
                f"sum by (service, pod) ({CPU} * on (namespace, pod) group_left (service) {API_PODS})",
                legend="{{pod}}",
            )
        ],
        description="CPU cores used by each model-API pod.",
    ),
    timeseries(
        layout,
        "Memory per model-API pod",
        [
            PromTarget(
                f"sum by (service, pod) ({MEM} * on (namespace, pod) group_left (service) {API_PODS})",
                legend="{{pod}}",
            )
        ],
        description="Working-set memory of each model-API pod.",
        unit="bytes",
    ),
    table(
        layout,
        "Right-sizing per step",
        [
            PromTarget(
                f"{usage_over_range(CPU)} / {spec('requests', 'cpu')}", ref_id="A", instant=True, table=True
            ),
            PromTarget(
                f"{usage_over_range(CPU)} / {spec('limits', 'cpu')}", ref_id="B", instant=True, table=True
            ),
            PromTarget(
                f"{usage_over_range(MEM)} / {spec('requests', 'memory')}",
                ref_id="C",
                instant=True,
                table=True,
            ),
            PromTarget(
                f"{usage_over_range(MEM)} / {spec('limits', 'memory')}", ref_id="D", instant=True, table=True
            ),
        ],
        description=(
            "Peak use over the time range divided by the request and by the limit, per step (A/B: CPU, "
            "C/D: memory). Blue under 0.3: over-provisioned; red over 0.9: under-provisioned."
        ),
        transformations=[{"id": "merge", "options": {}}],
        extra=RATIO_COLOURS,
    ),
    table(
        layout,
        "Right-sizing per run",
        [FluxTarget(per_run)],
        description=(
            f"The last {RIGHT_SIZING_RUNS} runs of each step that ran in a container with a memory limit: "
            "the peak memory of the run's process and its children (from the SDK's system sampler) against "
            "that limit, and its mean CPU (in % of one core) against its CPU limit (in cores). "
            "Blue under 0.3: over-provisioned; red over 0.9: close to an OOM kill."
        ),
        extra={
            "fieldConfig": {
                "defaults": RATIO_COLOURS["fieldConfig"]["defaults"],
                "overrides": [
                    plain(c.FIELD_PEAK_RSS_BYTES, "bytes"),
                    plain(c.FIELD_MEMORY_LIMIT_BYTES, "bytes"),
                    plain(c.FIELD_MEAN_CPU_PERCENT, "percent"),
                    plain(c.FIELD_CPU_LIMIT_CORES, "short"),
                ],
            }
        },
    ),
    timeseries(
        layout,
        "OOM kills",
        [
            PromTarget(
                f'sum by (pipeline, step) (increase({c.PROM_POD_FAILURES}{{reason="OOMKilled", pipeline=~"$pipeline", step=~"$step"}}[$__rate_interval]))',
                legend="{{pipeline}}/{{step}}",
            ),
        ],
        description="Attempts of each step killed for exceeding their memory limit (pipeline exporter).",
        bars=True,
    ),
    timeseries(
        layout,
        "CPU throttling",
        [
            PromTarget(
                f"{per_step(f'rate({c.PROM_CONTAINER_CPU_THROTTLED}[$__rate_interval])')} / "
                f"{per_step(f'rate({c.PROM_CONTAINER_CPU_PERIODS}[$__rate_interval])')}",
                legend="{{pipeline}}/{{step}}",
            )
        ],
        description="Share of CPU periods in which each step was throttled by its CPU limit.",
        unit="percentunit",
    ),
]

dashboard = make_dashboard(
    "resources",
    "mlobs / Resources",
    "Are my steps sized right? Use against requests and limits, right-sizing, OOM kills and throttling.",
    panels,
    [
        prom_variable("pipeline", "Pipeline", f"label_values({c.PROM_KSM_POD_LABELS}, {KSM_P})"),
        prom_variable(
            "step", "Step", f'label_values({c.PROM_KSM_POD_LABELS}{{{KSM_P}=~"$pipeline"}}, {KSM_S})'
        ),
    ],
)
