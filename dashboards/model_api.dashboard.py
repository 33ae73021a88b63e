"""Model API: is my model API healthy and what does it answer?  Total requests and
unique users, rate by endpoint and status, latency percentiles, error ratio, and
the prediction score over time per model version."""

from dashboards.builders import (
    FluxTarget,
    Layout,
    PromTarget,
    prom_variable,
    stat,
    timeseries,
)
from dashboards.builders import (
    dashboard as make_dashboard,
)
from dashboards.flux import DashboardFlux, Var, select
from pipeline_sdk import contract as c

SEL = f'job="{c.PROM_JOB_MODEL_API}", service=~"$service"'
REQ, DUR = c.PROM_HTTP_REQUESTS, c.PROM_HTTP_DURATION
SERVICE = Var("service")  # the Prometheus variable $service, matched in Flux as a regex
layout = Layout()


def of_service(stream: c.Stream, field: str) -> DashboardFlux:
    """The chosen services' points of one field of ``stream``."""
    return select(stream, fields=[field]).where({c.TAG_SERVICE: SERVICE})


def latency(q: float, ref: str) -> PromTarget:
    expr = f"histogram_quantile({q}, sum by (le) (rate({DUR}_bucket{{{SEL}}}[$__rate_interval])))"
    return PromTarget(expr, legend=f"p{int(q * 100)}", ref_id=ref)


panels = [
    stat(
        layout,
        "Requests",
        [PromTarget(f"sum(increase({REQ}{{{SEL}}}[$__range]))")],
        description="Requests answered in the time range (Prometheus counter).",
    ),
    stat(
        layout,
        "Unique users",
        [
            FluxTarget(
                of_service(c.API_REQUEST, c.FIELD_USER)
                .group()
                .then('distinct(column: "_value")')
                .call("count")
            )
        ],
        description="Distinct hashed user ids of the requests in the time range (InfluxDB).",
    ),
    stat(
        layout,
        "Error ratio",
        [
            PromTarget(
                f'sum(increase({REQ}{{{SEL}, status="5xx"}}[$__range])) / clamp_min(sum(increase({REQ}{{{SEL}}}[$__range])), 1)'
            )
        ],
        description="Requests answered 5xx over all requests in the time range.",
        unit="percentunit",
    ),
    stat(
        layout,
        "p95 latency",
        [PromTarget(f"histogram_quantile(0.95, sum by (le) (rate({DUR}_bucket{{{SEL}}}[$__range])))")],
        description="95th percentile of request latency over the time range.",
        unit="s",
    ),
    timeseries(
        layout,
        "Requests by endpoint and status",
        [
            PromTarget(
                f"sum by (handler, status) (rate({REQ}{{{SEL}}}[$__rate_interval]))",
                legend="{{handler}} {{status}}",
            )
        ],
        description="Request rate per route template and status class.",
        unit="reqps",
    ),
    timeseries(
        layout,
        "Latency p50, p95, p99",
        [latency(0.5, "A"), latency(0.95, "B"), latency(0.99, "C")],
        description="Request latency percentiles, from the histogram.",
        unit="s",
    ),
    timeseries(
        layout,
        "Error ratio",
        [
            PromTarget(
                f'sum(rate({REQ}{{{SEL}, status="5xx"}}[$__rate_interval])) / clamp_min(sum(rate({REQ}{{{SEL}}}[$__rate_interval])), 1e-9)',
                legend="5xx ratio",
            )
        ],
        description="Share of requests answered 5xx.",
        unit="percentunit",
    ),
    timeseries(
        layout,
        "Prediction score per model version",
        [
            FluxTarget(
                of_service(c.PREDICTION, c.FIELD_SCORE)
                .group(c.TAG_MODEL, c.TAG_MODEL_VERSION)
                .then("aggregateWindow(every: v.windowPeriod, fn: mean, createEmpty: false)")
            )
        ],
        description="Mean prediction score over time, one line per model and version (log_prediction).",
    ),
]

dashboard = make_dashboard(
    "model_api",
    "mlobs / Model API",
    "Is my model API healthy and what does it answer? Requests, users, latency, errors and scores.",
    panels,
    [prom_variable("service", "Service", f'label_values({REQ}{{job="{c.PROM_JOB_MODEL_API}"}}, service)')],
    time_from="now-6h",
)
