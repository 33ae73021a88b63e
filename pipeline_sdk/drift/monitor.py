"""A drift monitor: a model's serving profiles over a window, compared with a baseline, captured.

>>> monitor = drift.Monitor(model="churn", baseline=("train-42", "train"))
>>> monitor.snapshot(since="1d")          # the serving profiles of the last day, merged
>>> report = monitor.compare()            # a DriftReport
>>> monitor.capture()                     # a run of pipeline "drift", pushed to the Pushgateway

:meth:`Monitor.capture` records the report as a run of pipeline ``drift``, step ``<monitor name>``:
params ``model``, ``version``, ``baseline`` and ``window``; metrics ``<feature>.statistic``,
``<feature>.threshold`` and ``<feature>.drifted`` per feature, ``drifted_share`` and
``dataset_drift``, so the run view and ``mlobs runs compare`` show drift over time; and for each
numeric feature the list metrics ``<feature>.baseline_quantiles`` and ``<feature>.current_quantiles``
(index: the percent, 0 to 100 by 5; the ends are the exact min and max), which the Model drift
dashboard draws as the two distributions.  It then pushes
the results to a Prometheus Pushgateway (``pushgateway=``, else ``MLOBS_PUSHGATEWAY_URL``; neither:
no push) under job ``mlobs-drift`` grouped by model and version, so each push replaces the
previous one: the contract's ``PROM_DRIFT_*`` gauges, which the drift alerts read.  A push that
fails fails the run and raises.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import contract as c
from ..config import PUSHGATEWAY_URL
from ..durations import duration_ns
from .features import NumericFeature
from .profile import Profile
from .report import DriftReport, Test, compare, default_test

if TYPE_CHECKING:
    from ..client import Client
    from ..read import ReadClient
    from ..recorder import ActiveRun

DEFAULT_WINDOW = "1h"  # the serving window of snapshot() and compare() when none is given
PIPELINE = c.DRIFT_PIPELINE  # the pipeline of every monitor's runs


def parse_baseline(arg: str, value: object) -> tuple[str, str]:
    """``(run_id, name)`` from a pair or from ``"RUN:NAME"``."""
    if isinstance(value, str):
        run_id, sep, name = value.rpartition(":")
        if not sep or not run_id or not name:
            raise ValueError(f"{arg}={value!r} is invalid: must be RUN:NAME (the run and its profile's name)")
        return run_id, name
    if isinstance(value, tuple | list) and len(value) == 2 and all(isinstance(v, str) and v for v in value):
        return value[0], value[1]
    raise TypeError(f"{arg} must be (run_id, name) or 'RUN:NAME', got {type(value).__name__} {value!r:.80}")


class Monitor:
    """Compares the serving profiles of ``model`` (at ``version``; None: every version) with a baseline.

    ``baseline`` is ``(run_id, name)`` of a profile a run logged (``run.log_profile(name, data)``);
    ``features`` limits the comparison (default: the baseline's features), ``tests`` picks a test or
    threshold per feature (see :func:`~pipeline_sdk.drift.compare`), ``thresholds`` a threshold for a
    feature's default test.  ``client`` reads the profiles
    (default: a ``ReadClient()`` from the environment).  ``name`` is the step of the monitor's runs
    (default ``<model>``); ``schedule_seconds`` how often it runs, pushed so that an alert can tell
    when it stopped (default: the window's length).
    """

    def __init__(
        self,
        *,
        model: str,
        version: str | int | None = None,
        baseline: tuple[str, str] | str,
        features: Sequence[str] | None = None,
        tests: Mapping[str, Test | str] | None = None,
        thresholds: Mapping[str, float] | None = None,
        client: ReadClient | None = None,
        name: str | None = None,
        schedule_seconds: float | None = None,
        drift_share: float = 0.5,
    ) -> None:
        if type(model) is not str or not model:
            raise ValueError(f"model={model!r} is invalid: must be a model name (a non-empty string)")
        if version is not None and (isinstance(version, bool) or not isinstance(version, str | int)):
            raise TypeError(f"version must be a str, an int or None, got {type(version).__name__}")
        if schedule_seconds is not None and not (
            isinstance(schedule_seconds, int | float) and 0 < schedule_seconds < float("inf")
        ):
            raise ValueError(f"schedule_seconds={schedule_seconds!r} is invalid: must be a number above 0")
        self.model = model
        self.version = None if version is None else str(version)
        self.baseline_ref = parse_baseline("baseline", baseline)
        self.features = list(features) if features is not None else None
        self.tests = dict(tests) if tests is not None else None
        self.thresholds = dict(thresholds) if thresholds is not None else {}
        self.name = name or model
        self.schedule_seconds = schedule_seconds
        self.drift_share = drift_share
        self._client = client
        self._baseline: Profile | None = None
        self.current: Profile | None = None
        self.window: str = DEFAULT_WINDOW
        self.report: DriftReport | None = None

    def __repr__(self) -> str:
        run_id, name = self.baseline_ref
        return (
            f"<drift.Monitor {self.name}: {self.model} {self.version or 'every version'} vs {run_id}:{name}>"
        )

    @property
    def client(self) -> ReadClient:
        if self._client is None:
            from ..read import ReadClient  # noqa: PLC0415 - the read API is imported when first needed

            self._client = ReadClient()
        return self._client

    @property
    def baseline(self) -> Profile:
        """The baseline profile, read once."""
        if self._baseline is None:
            self._baseline = self.client.profile(*self.baseline_ref)
        return self._baseline

    def snapshot(self, since: Any = DEFAULT_WINDOW, until: Any = None) -> Profile:
        """The serving profiles of the window ``[since, until)``, merged (kept for :meth:`compare`)."""
        self.current = self.client.serving_profile(self.model, self.version, since=since, until=until)
        self.window = since if isinstance(since, str) else f"{since}"
        return self.current

    def compare(self) -> DriftReport:
        """The drift report of the last snapshot (taken now, of the default window, if none was)."""
        current = self.current if self.current is not None else self.snapshot()
        features = self.features
        if features is None:
            features = [f for f in self.baseline.features if f in current.features]
        tests: dict[str, Test | str] = dict(self.tests or {})
        for feature, threshold in self.thresholds.items():  # the feature's default test, at this threshold
            if feature not in tests and feature in self.baseline.features and feature in current.features:
                method = default_test(self.baseline.features[feature], current.features[feature])
                tests[feature] = Test(method, threshold=threshold)
        self.report = compare(
            self.baseline, current, tests=tests or None, features=features, drift_share=self.drift_share
        )
        return self.report

    def capture(self, pushgateway: str | None = None, *, run_client: Client | None = None) -> DriftReport:
        """Compare, record the report as a run of pipeline ``drift`` and push it; the report."""
        from ..run import run  # noqa: PLC0415 - run imports the recorder, which needs nothing of this

        url = pushgateway if pushgateway is not None else PUSHGATEWAY_URL.get()
        report = self.report if self.report is not None else self.compare()
        run_id, name = self.baseline_ref
        with run(PIPELINE, self.name, client=run_client) as active:
            active.log_params(
                {
                    "model": self.model,
                    "version": self.version or c.DRIFT_ANY_VERSION,
                    "baseline": f"{run_id}:{name}",
                    "window": self.window,
                }
            )
            metrics: dict[str, float] = {}
            for feature, result in report.features.items():
                metrics[f"{feature}.statistic"] = result.statistic
                metrics[f"{feature}.threshold"] = result.threshold
                metrics[f"{feature}.drifted"] = float(result.drifted)
            metrics["drifted_share"] = report.drifted_share
            metrics["dataset_drift"] = float(report.dataset_drift)
            active.log_metrics({k: v for k, v in metrics.items() if not math.isnan(v)})  # NaN: not stored
            self._log_quantiles(active, report)
            if url is not None:
                self.push(url, report)
        return report

    def _log_quantiles(self, active: ActiveRun, report: DriftReport) -> None:
        """Both sides' quantiles of each compared numeric feature, as list metrics (for the dashboard)."""
        current = self.current if self.current is not None else self.snapshot()
        inner = [p / 100 for p in c.DRIFT_QUANTILE_PERCENTS[1:-1]]
        for feature in report.features:
            sides = (self.baseline.features.get(feature), current.features.get(feature))
            if not all(isinstance(side, NumericFeature) and side.values for side in sides):
                continue
            for series, side in zip(c.DRIFT_QUANTILE_SERIES, sides, strict=True):
                assert isinstance(side, NumericFeature)
                values = [side.min, *side.quantiles(inner), side.max]  # the ends exact, not from the sketch
                for percent, value in zip(c.DRIFT_QUANTILE_PERCENTS, values, strict=True):
                    active.log_metric(f"{feature}{series}", float(value), step=percent)

    def push(self, url: str, report: DriftReport) -> None:
        """Push ``report``'s gauges to the Pushgateway at ``url``, replacing this model/version's group."""
        from prometheus_client import CollectorRegistry, Gauge, push_to_gateway  # noqa: PLC0415

        registry = CollectorRegistry()
        per_feature = (c.PROM_LABEL_FEATURE, c.PROM_LABEL_TEST)
        statistic = Gauge(
            c.PROM_DRIFT_STATISTIC, "Drift statistic of a feature", per_feature, registry=registry
        )
        threshold = Gauge(
            c.PROM_DRIFT_THRESHOLD, "Threshold of a feature's test", per_feature, registry=registry
        )
        drifted = Gauge(
            c.PROM_DRIFT_FEATURE_DRIFTED, "1 when a feature drifted", per_feature, registry=registry
        )
        for feature, result in report.features.items():
            statistic.labels(feature, result.test).set(result.statistic)
            threshold.labels(feature, result.test).set(result.threshold)
            drifted.labels(feature, result.test).set(float(result.drifted))
        run_id, name = self.baseline_ref
        detected = Gauge(
            c.PROM_DRIFT_DETECTED,
            "1 when the data set drifted",
            (c.PROM_LABEL_MONITOR, c.PROM_LABEL_BASELINE, c.PROM_LABEL_WINDOW),
            registry=registry,
        )
        detected.labels(self.name, f"{run_id}:{name}", self.window).set(float(report.dataset_drift))
        Gauge(c.PROM_DRIFT_DRIFTED_SHARE, "Share of drifted features", registry=registry).set(
            report.drifted_share
        )
        schedule = (
            self.schedule_seconds if self.schedule_seconds is not None else _window_seconds(self.window)
        )
        Gauge(c.PROM_DRIFT_SCHEDULE, "Seconds between two captures", registry=registry).set(schedule)
        Gauge(c.PROM_DRIFT_LAST_RUN, "When the monitor last captured", registry=registry).set(time.time())
        grouping = {c.PROM_LABEL_MODEL: self.model, c.PROM_LABEL_VERSION: self.version or c.DRIFT_ANY_VERSION}
        push_to_gateway(url, job=c.PROM_JOB_DRIFT, registry=registry, grouping_key=grouping, timeout=10)


def _window_seconds(window: str) -> float:
    """A window's length in seconds when it is a duration ("1h"); an hour otherwise."""
    ns = duration_ns(window)
    return ns / 1e9 if ns else 3600.0
