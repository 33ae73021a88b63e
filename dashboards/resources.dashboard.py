"""Resources: are my steps sized right?  CPU and memory per pipeline step and per
model-API pod against their requests and limits, a right-sizing table of
used/requested and used/limit, OOM kills and CPU throttling."""

import grafanalib.core as g

from dashboards.builders import (
    Layout,
    PromTarget,
    prom_variable,
    table,
    timeseries,
)
from dashboards.builders import (
    dashboard as make_dashboard,
)
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
        extra={
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
