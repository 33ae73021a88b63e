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

The thresholds are exported as gauges, so the alert rules stay the same for
every pipeline and only this file changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


class ConfigError(ValueError):
    """The configuration file says something the exporter cannot use."""


def duration(where: str, value: Any) -> float:
    """Seconds of "90s", "15m", "6h", "1d12h" or a plain number of seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration such as 30m or 6h, got {value!r}")
    if isinstance(value, (int, float)) and value > 0:
        return float(value)
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if match and any(match.groups()):
            d, h, m, s = (int(g or 0) for g in match.groups())
            seconds = d * 86400 + h * 3600 + m * 60 + s
            if seconds > 0:
                return float(seconds)
    raise ConfigError(f"{where}: expected a duration such as 30m or 6h, got {value!r}")


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


@dataclass(frozen=True)
class ExporterConfig:
    namespaces: tuple[str, ...] = ()
    thresholds: Thresholds = Thresholds()
    finished_runs_memory: int = 50_000
    image_pull_grace: float = 120.0

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
        known = {"namespaces", "defaults", "pipelines", "finished_runs_memory", "image_pull_grace"}
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
        return cls(tuple(namespaces), Thresholds(defaults, pipelines, steps), memory, grace)
