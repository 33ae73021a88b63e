"""Model drift: has what my model sees moved away from what it was trained on?  The drift
statistic of each feature over time against its threshold, the share of drifted features, when
each monitor last ran, a feature's baseline and current distribution (the quantiles a capture
records), and the monitors' runs as InfluxDB recorded them (pipeline ``drift``)."""

import re

from dashboards.builders import (
    NEUTRAL,
    FluxTarget,
    Layout,
    PromTarget,
    Thresholds,
    prom_variable,
    stat,
    timeseries,
    trend,
)
from dashboards.builders import (
    dashboard as make_dashboard,
)
from dashboards.flux import DashboardFlux, Var, select
from pipeline_sdk import contract as c

M, V, F = c.PROM_LABEL_MODEL, c.PROM_LABEL_VERSION, c.PROM_LABEL_FEATURE
SEL = f'{M}=~"$model", {V}=~"$version"'
FEATURES = f'{SEL}, {F}=~"$feature"'
layout = Layout()


def drift_metric(name: str) -> DashboardFlux:
    """The value of the metric ``name`` of every drift monitor's runs, one series per monitor."""
    return (
        select(c.METRIC, fields=[c.FIELD_VALUE], equal={c.TAG_PIPELINE: c.DRIFT_PIPELINE, c.TAG_NAME: name})
        .group(c.TAG_STEP)
        .then('sort(columns: ["_time"])')
    )


def quantiles(series: str) -> DashboardFlux:
    """The chosen features' quantile curve ``series`` at the last capture of each monitor."""
    name = Var("feature", suffix=series)
    return (
        select(
            c.LIST_METRIC,
            fields=[c.FIELD_VALUE, c.FIELD_INDEX],
            equal={c.TAG_PIPELINE: c.DRIFT_PIPELINE, c.TAG_NAME: name},
        )
        .pivot_fields()
        .group(c.TAG_STEP, c.TAG_NAME, c.FIELD_INDEX)
        .sort("_time")
        .then("tail(n: 1)")  # each percent's value at the last capture in the time range
        .group(c.TAG_STEP, c.TAG_NAME)
        .keep(c.TAG_STEP, c.TAG_NAME, c.FIELD_INDEX, c.FIELD_VALUE)
        .sort(c.FIELD_INDEX)
    )


panels = [
    stat(
        layout,
        "Dataset drift",
        [PromTarget(f"max({c.PROM_DRIFT_DETECTED}{{{SEL}}})")],
        description="1 when the last capture of a chosen model found dataset drift (the drifted share "
        "reached its bound), else 0.",
        thresholds=Thresholds(((None, "green"), (1.0, "red"))),
    ),
    stat(
        layout,
        "Drifted share",
        [PromTarget(f"max({c.PROM_DRIFT_DRIFTED_SHARE}{{{SEL}}})")],
        description="Share of the compared features that drifted, at the last capture.",
        unit="percentunit",
        thresholds=Thresholds(((None, "green"), (0.25, "orange"), (0.5, "red"))),  # 0.5: dataset drift
    ),
    stat(
        layout,
        "Drifted features",
        [PromTarget(f"sum({c.PROM_DRIFT_FEATURE_DRIFTED}{{{FEATURES}}})")],
        description="Features whose statistic reached its threshold at the last capture.",
        thresholds=Thresholds(((None, "green"), (1.0, "orange"))),
    ),
    stat(
        layout,
        "Since the last capture",
        [PromTarget(f"time() - max({c.PROM_DRIFT_LAST_RUN}{{{SEL}}})")],
        description="Seconds since a monitor of a chosen model last captured a report.",
        unit="s",
        thresholds=NEUTRAL,  # how old is too old depends on the monitor's schedule (its alert knows)
    ),
    timeseries(
        layout,
        "Drift statistic per feature",
        [
            PromTarget(
                f"max by ({M}, {V}, {F}, {c.PROM_LABEL_TEST}) ({c.PROM_DRIFT_STATISTIC}{{{FEATURES}}})",
                legend=f"{{{{{F}}}}} ({{{{{c.PROM_LABEL_TEST}}}}})",
            ),
            PromTarget(
                f"max by ({M}, {V}, {F}, {c.PROM_LABEL_TEST}) ({c.PROM_DRIFT_THRESHOLD}{{{FEATURES}}})",
                legend=f"threshold {{{{{F}}}}}",
                ref_id="B",
            ),
        ],
        description="Each feature's drift statistic (its test in brackets) at every capture, with its "
        "threshold: a line above its threshold is a drifted feature.",
        w=24,
    ),
    timeseries(
        layout,
        "Drifted share over time",
        [
            PromTarget(
                f"max by ({M}, {V}) ({c.PROM_DRIFT_DRIFTED_SHARE}{{{SEL}}})",
                legend=f"{{{{{M}}}}} {{{{{V}}}}}",
            )
        ],
        description="Share of the compared features that drifted, per model and version.",
        unit="percentunit",
    ),
    trend(
        layout,
        "Baseline and current distribution",
        [
            FluxTarget(quantiles(c.DRIFT_QUANTILE_SERIES[0])),
            FluxTarget(quantiles(c.DRIFT_QUANTILE_SERIES[1]), ref_id="B"),
        ],
        x_field=c.FIELD_INDEX,
        description="The chosen features' quantiles at the last capture of each monitor (pipeline drift, "
        "from InfluxDB): the value (y) below which a percent (x) of the rows lie, in the baseline "
        "(dashed) and in the current window. Curves apart are a distribution that moved.",
        dashed=f"{re.escape(c.DRIFT_QUANTILE_SERIES[0])}",
    ),
    timeseries(
        layout,
        "Drift runs: drifted share",
        [FluxTarget(drift_metric("drifted_share"))],
        description="The drifted_share metric of each monitor's runs (pipeline drift, one series per "
        "monitor), from InfluxDB: every capture, also those older than Prometheus keeps.",
        unit="percentunit",
        bars=True,
    ),
    timeseries(
        layout,
        "Drift runs: dataset drift",
        [FluxTarget(drift_metric("dataset_drift"))],
        description="The dataset_drift metric (1 drifted, 0 not) of each monitor's runs, from InfluxDB.",
        bars=True,
        w=24,
        h=6,
    ),
]

dashboard = make_dashboard(
    "model_drift",
    "mlobs / Model drift",
    "Has what my model sees moved away from its training data? Drift per feature, drifted share, "
    "the monitors' runs.",
    panels,
    [
        prom_variable("model", "Model", f"label_values({c.PROM_DRIFT_STATISTIC}, {M})"),
        prom_variable("version", "Version", f'label_values({c.PROM_DRIFT_STATISTIC}{{{M}=~"$model"}}, {V})'),
        prom_variable("feature", "Feature", f"label_values({c.PROM_DRIFT_STATISTIC}{{{SEL}}}, {F})"),
    ],
    time_from="now-7d",
)
