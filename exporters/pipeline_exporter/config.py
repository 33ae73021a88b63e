"""The exporter's configuration file: where to watch, and the per-pipeline alert thresholds.

Example (the chart renders it from its values)::

    namespaces: []              # empty: every namespace (needs a ClusterRole)
    defaults:
      max_duration: 6h          # a run running longer is stuck (MLPipelineRunStuck)
      success_window: 26h       # a pipeline/step must succeed this often (MLPipelineNoRecentSuccess)
    pipelines:
      nightly-train:
        success_window: 25h
        steps:
          fit: {max_duration: 3h}
    finished_runs_memory: 50000 # finished runs remembered, so late events are not counted twice
    image_pull_grace: 2m        # a run waiting on an image pull this long has failed
    max_pipeline_steps: 2000    # pipeline/step pairs with metrics; runs of more get run records only
    idle_expiry: 7d             # a pair with no run in progress or finished for this long loses its series
    allowed_namespaces: []      # glob patterns (fnmatch, case-sensitive); empty: every namespace
    allowed_pipelines: []       # glob patterns of pipeline names, e.g. ["team-a-*"]; empty: every one
    leaderElection:             # two or more replicas: only the holder of a Lease watches and counts
      enabled: false
      leaseName: mlobs-pipeline-exporter
      leaseNamespace: ""        # empty: the pod's own namespace (its service account's)
      leaseDuration: 15s        # a standby takes over this long after the leader's last renewal
      renewDeadline: 10s        # a leader that could not renew for this long stops leading
      retryPeriod: 2s           # how often a leader renews, and a standby tries

The thresholds are exported as gauges, so the alert rules stay the same for
every pipeline and only this file changes.

The last four keys bound the exporter's Prometheus series, whatever labels pods
carry: each pipeline/step pair has 38 series or more.  A run of a pair refused (the
cap is full, or the allow-lists do not match) still gets its run record in InfluxDB,
but no metrics and so no alert; refused runs are counted in
``mlobs_exporter_refused_pipeline_steps_total`` and logged (at most once a minute).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml

from pipeline_sdk.durations import SECOND_NS, duration_ns


class ConfigError(ValueError):
    """The configuration file says something the exporter cannot use."""


def duration(where: str, value: Any) -> float:
    """Seconds above 0 of a duration (``90s``, ``15m``, ``1h30m``, ``1.5d``, ``2w``) or a number of seconds.

    The grammar is :mod:`pipeline_sdk.durations`, the one the read API and the CLI read.
    """
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        seconds = float(value)
    elif isinstance(value, str) and (ns := duration_ns(value)) is not None:
        seconds = ns / SECOND_NS
    if seconds is None or seconds <= 0:
        raise ConfigError(f"{where}: expected a duration such as 30m or 6h, got {value!r}")
    return seconds


@dataclass(frozen=True)
class Limits:
    max_duration: float = 6 * 3600.0
    success_window: float = 26 * 3600.0


_LIMIT_KEYS = {"max_duration", "success_window"}


def _limits(where: str, raw: Any, base: Limits) -> Limits:
    if raw is None:
        return base
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    unknown = set(raw) - _LIMIT_KEYS - {"steps"}
    if unknown:
        raise ConfigError(
            f"{where}: unknown keys {sorted(unknown)} (known: max_duration, success_window, steps)"
        )
    return Limits(
        max_duration=duration(f"{where}.max_duration", raw["max_duration"])
        if "max_duration" in raw
        else base.max_duration,
        success_window=duration(f"{where}.success_window", raw["success_window"])
        if "success_window" in raw
        else base.success_window,
    )


@dataclass(frozen=True)
class Thresholds:
    """Alert thresholds: defaults, overridden per pipeline and per step."""

    defaults: Limits = Limits()
    pipelines: dict[str, Limits] = field(default_factory=dict)
    steps: dict[tuple[str, str], Limits] = field(default_factory=dict)

    def limits(self, pipeline: str, step: str) -> Limits:
        return self.steps.get((pipeline, step)) or self.pipelines.get(pipeline) or self.defaults

    def longest_success_window(self) -> float:
        every = [self.defaults, *self.pipelines.values(), *self.steps.values()]
        return max(limits.success_window for limits in every)


def _at_least(where: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}: expected a whole number of at least {minimum}, got {value!r}")
    return value


def _patterns(where: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list of glob patterns, got {value!r}")
    for i, pattern in enumerate(value):
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(f"{where}[{i}]: expected a non-empty glob pattern, got {pattern!r}")
    return tuple(value)


@dataclass(frozen=True)
class SeriesLimits:
    """What bounds the exporter's series: a cap on pipeline/step pairs, idle expiry, allow-lists.

    The allow-lists are shell-style globs (``fnmatch``, case-sensitive): ``team-a-*``,
    ``nightly-?``, ``[ab]-train``.  An empty list allows everything.
    """

    max_pipeline_steps: int = 2000
    idle_expiry: float = 7 * 86400.0
    allowed_namespaces: tuple[str, ...] = ()
    allowed_pipelines: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _at_least("max_pipeline_steps", self.max_pipeline_steps, 1)
        expiry = self.idle_expiry
        if isinstance(expiry, bool) or not isinstance(expiry, (int, float)) or expiry <= 0:
            raise ConfigError(f"idle_expiry: expected a positive number of seconds, got {expiry!r}")
        _patterns("allowed_namespaces", self.allowed_namespaces)
        _patterns("allowed_pipelines", self.allowed_pipelines)

    def refusal(self, namespace: str, pipeline: str) -> str | None:
        """Why the allow-lists refuse a run's pair, or None when they allow it."""
        if self.allowed_namespaces and not any(fnmatchcase(namespace, p) for p in self.allowed_namespaces):
            return "the namespace is not in allowed_namespaces"
        if self.allowed_pipelines and not any(fnmatchcase(pipeline, p) for p in self.allowed_pipelines):
            return "the pipeline is not in allowed_pipelines"
        return None


@dataclass(frozen=True)
class LeaderElection:
    """The ``leaderElection`` block (see :mod:`.leader`); durations in seconds."""

    enabled: bool = False
    lease_name: str = "mlobs-pipeline-exporter"
    lease_namespace: str = ""  # empty: the pod's own namespace
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


_ELECTION_KEYS = {"enabled", "leaseName", "leaseNamespace", "leaseDuration", "renewDeadline", "retryPeriod"}


def _election(where: str, raw: Any) -> LeaderElection:
    default = LeaderElection()
    if raw is None:
        return default
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    unknown = set(raw) - _ELECTION_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(_ELECTION_KEYS)})")
    enabled = raw.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}.enabled: expected true or false, got {enabled!r}")
    names = {}
    for key, value in (("leaseName", default.lease_name), ("leaseNamespace", "")):
        names[key] = raw.get(key, value)
        if not isinstance(names[key], str) or (key == "leaseName" and not names[key]):
            raise ConfigError(f"{where}.{key}: expected a name, got {names[key]!r}")
    times = {
        key: duration(f"{where}.{key}", raw[key]) if key in raw else value
        for key, value in (
            ("leaseDuration", default.lease_duration),
            ("renewDeadline", default.renew_deadline),
            ("retryPeriod", default.retry_period),
        )
    }
    if not times["leaseDuration"] > times["renewDeadline"]:
        raise ConfigError(
            f"{where}.leaseDuration ({times['leaseDuration']} s) must be longer than renewDeadline "
            f"({times['renewDeadline']} s): a leader must give up before a standby may take over"
        )
    if not times["renewDeadline"] > 1.2 * times["retryPeriod"]:
        raise ConfigError(
            f"{where}.renewDeadline ({times['renewDeadline']} s) must be longer than 1.2 x retryPeriod "
            f"({times['retryPeriod']} s): a leader must get more than one try to renew"
        )
    return LeaderElection(
        enabled,
        names["leaseName"],
        names["leaseNamespace"],
        times["leaseDuration"],
        times["renewDeadline"],
        times["retryPeriod"],
    )


_SERIES_KEYS = ("max_pipeline_steps", "idle_expiry", "allowed_namespaces", "allowed_pipelines")


def _series(where: str, raw: dict[str, Any], thresholds: Thresholds) -> SeriesLimits:
    default = SeriesLimits()
    expiry = (
        duration(f"{where}.idle_expiry", raw["idle_expiry"]) if "idle_expiry" in raw else default.idle_expiry
    )
    window = thresholds.longest_success_window()
    if expiry <= window:
        raise ConfigError(
            f"{where}.idle_expiry: {expiry:.0f} s is not longer than the longest success_window "
            f"({window:.0f} s): a pipeline would stop being alerted on before MLPipelineNoRecentSuccess "
            "could fire"
        )
    return SeriesLimits(
        max_pipeline_steps=_at_least(
            f"{where}.max_pipeline_steps", raw.get("max_pipeline_steps", default.max_pipeline_steps), 1
        ),
        idle_expiry=expiry,
        allowed_namespaces=_patterns(f"{where}.allowed_namespaces", raw.get("allowed_namespaces")),
        allowed_pipelines=_patterns(f"{where}.allowed_pipelines", raw.get("allowed_pipelines")),
    )


@dataclass(frozen=True)
class ExporterConfig:
    namespaces: tuple[str, ...] = ()
    thresholds: Thresholds = Thresholds()
    finished_runs_memory: int = 50_000
    image_pull_grace: float = 120.0
    series: SeriesLimits = SeriesLimits()
    leader_election: LeaderElection = LeaderElection()

    @classmethod
    def load(cls, path: Path | None) -> ExporterConfig:
        if path is None:
            return cls()
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read exporter config {path}: {exc}") from None
        return cls.parse(raw, str(path))

    @classmethod
    def parse(cls, raw: Any, where: str = "config") -> ExporterConfig:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a mapping at the top, got {type(raw).__name__}")
        known = {
            "namespaces",
            "defaults",
            "pipelines",
            "finished_runs_memory",
            "image_pull_grace",
            "leaderElection",
            *_SERIES_KEYS,
        }
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
        namespaces = raw.get("namespaces") or []
        if not isinstance(namespaces, list) or not all(isinstance(n, str) and n for n in namespaces):
            raise ConfigError(f"{where}.namespaces: expected a list of namespace names, got {namespaces!r}")
        defaults = _limits(f"{where}.defaults", raw.get("defaults"), Limits())
        pipelines: dict[str, Limits] = {}
        steps: dict[tuple[str, str], Limits] = {}
        for name, body in (raw.get("pipelines") or {}).items():
            limits = _limits(f"{where}.pipelines.{name}", body, defaults)
            pipelines[name] = limits
            for step, step_body in ((body or {}).get("steps") or {}).items():
                steps[(name, step)] = _limits(f"{where}.pipelines.{name}.steps.{step}", step_body, limits)
        memory = raw.get("finished_runs_memory", 50_000)
        if isinstance(memory, bool) or not isinstance(memory, int) or memory < 1:
            raise ConfigError(
                f"{where}.finished_runs_memory: expected a whole number of runs, got {memory!r}"
            )
        grace = duration(f"{where}.image_pull_grace", raw.get("image_pull_grace", 120))
        thresholds = Thresholds(defaults, pipelines, steps)
        series = _series(where, raw, thresholds)
        election = _election(f"{where}.leaderElection", raw.get("leaderElection"))
        return cls(tuple(namespaces), thresholds, memory, grace, series, election)
