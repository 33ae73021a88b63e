"""Validated building blocks of the dashboards: targets, panels, variables, layout.

Every block checks itself when it is built (frozen dataclasses with
``__post_init__``): a target knows its datasource from the contract, a layout
hands out panel ids and grid positions that cannot collide, and a dashboard's
uid comes from its file name.  The dashboards only combine these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import grafanalib.core as g

from pipeline_sdk import contract as c

from .flux import Choice, DashboardFlux

PROMETHEUS: dict[str, str] = {"type": "prometheus", "uid": c.DATASOURCE_PROMETHEUS_UID}
INFLUXDB: dict[str, str] = {"type": "influxdb", "uid": c.DATASOURCE_INFLUXDB_UID}
GRID_WIDTH = 24
_PAIRS = {"(": ")", "[": "]", "{": "}"}


def _balanced(expr: str) -> bool:
    stack: list[str] = []
    quoted = False
    for ch in expr:
        if ch == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif ch in _PAIRS:
            stack.append(_PAIRS[ch])
        elif ch in _PAIRS.values() and (not stack or stack.pop() != ch):
            return False
    return not stack and not quoted


@dataclass(frozen=True)
class PromTarget:
    """A PromQL query of the Prometheus datasource."""

    expr: str
    legend: str = ""
    ref_id: str = "A"
    instant: bool = False
    table: bool = False

    def __post_init__(self) -> None:
        if not self.expr.strip():
            raise ValueError("PromTarget.expr must not be empty")
        if not _balanced(self.expr):
            raise ValueError(f"PromTarget.expr has unbalanced brackets or quotes: {self.expr!r}")
        if not re.fullmatch(r"[A-Z]", self.ref_id):
            raise ValueError(f"PromTarget.ref_id must be one capital letter, got {self.ref_id!r}")

    def to_json_data(self) -> dict[str, Any]:
        return {
            "datasource": PROMETHEUS,
            "expr": self.expr,
            "legendFormat": self.legend,
            "refId": self.ref_id,
            "instant": self.instant,
            "range": not self.instant,
            "format": "table" if self.table else "time_series",
        }


@dataclass(frozen=True)
class FluxTarget:
    """A Flux query of the InfluxDB datasource, built from the contract (dashboards/flux.py)."""

    flux: DashboardFlux
    ref_id: str = "A"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Z]", self.ref_id):
            raise ValueError(f"FluxTarget.ref_id must be one capital letter, got {self.ref_id!r}")

    def to_json_data(self) -> dict[str, Any]:
        return {"datasource": INFLUXDB, "query": self.flux.text, "refId": self.ref_id}


Target = PromTarget | FluxTarget


def _datasource(targets: list[Target]) -> dict[str, str]:
    kinds = {type(t) for t in targets}
    if not targets or len(kinds) != 1:
        raise ValueError("a panel needs targets, all of one datasource")
    return PROMETHEUS if kinds == {PromTarget} else INFLUXDB


@dataclass
class Layout:
    """Hands out panel ids and grid positions, left to right, row by row: no two overlap."""

    next_id: int = 1
    x: int = 0
    y: int = 0
    row_height: int = 0
    used_ids: set[int] = field(default_factory=set)

    def place(self, w: int, h: int, panel_id: int | None = None) -> tuple[int, g.GridPos]:
        if not 1 <= w <= GRID_WIDTH or h < 1:
            raise ValueError(f"panel size {w}x{h} does not fit a {GRID_WIDTH}-column grid")
        if self.x + w > GRID_WIDTH:
            self.newline()
        pos = g.GridPos(h=h, w=w, x=self.x, y=self.y)
        self.x += w
        self.row_height = max(self.row_height, h)
        if panel_id is None:
            while self.next_id in self.used_ids:
                self.next_id += 1
            panel_id = self.next_id
        if panel_id in self.used_ids:
            raise ValueError(f"panel id {panel_id} is used twice")
        self.used_ids.add(panel_id)
        return panel_id, pos

    def newline(self) -> None:
        self.y += self.row_height
        self.x, self.row_height = 0, 0


def _panel(
    layout: Layout,
    title: str,
    targets: list[Target],
    *,
    description: str,
    w: int,
    h: int,
    panel_id: int | None = None,
) -> dict[str, Any]:
    """What every panel has: its place on the grid and id (from ``layout``), title, text and targets."""
    pid, pos = layout.place(w, h, panel_id)
    return {
        "title": title,
        "description": description,
        "dataSource": _datasource(targets),
        "targets": targets,
        "gridPos": pos,
        "id": pid,
    }


def timeseries(
    layout: Layout,
    title: str,
    targets: list[Target],
    *,
    description: str,
    unit: str = "short",
    w: int = 12,
    h: int = 8,
    stacked: bool = False,
    bars: bool = False,
    extra: dict[str, Any] | None = None,
) -> g.TimeSeries:
    return g.TimeSeries(
        **_panel(layout, title, targets, description=description, w=w, h=h),
        unit=unit,
        stacking={"mode": "normal"} if stacked else {},
        drawStyle="bars" if bars else "line",
        fillOpacity=80 if bars else 10,
        extraJson=extra or {},
    )


def trend(
    layout: Layout,
    title: str,
    targets: list[Target],
    *,
    x_field: str,
    description: str,
    unit: str = "short",
    w: int = 24,
    h: int = 9,
    dashed: str | None = None,
) -> g.TimeSeries:
    """Values against a numeric field (an epoch or step index, seconds), one line per series.

    ``dashed``: a regular expression of the series (by display name) drawn dashed, such as a limit.
    """
    extra: dict[str, Any] = {"type": "trend", "options": {"xField": x_field}}
    if dashed is not None:
        re.compile(dashed)  # a bad expression fails here, not in Grafana
        style = {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}
        extra["fieldConfig"] = {
            "overrides": [{"matcher": {"id": "byRegexp", "options": dashed}, "properties": [style]}]
        }
    return timeseries(layout, title, targets, description=description, unit=unit, w=w, h=h, extra=extra)


@dataclass(frozen=True)
class Thresholds:
    """What a stat's colour says: ``steps`` are (from value, colour), the first from -infinity (None).

    Colours are Grafana's named ones (``green``, ``orange``, ``red``, ``blue``, ``text``); the
    values after the first rise strictly.
    """

    steps: tuple[tuple[float | None, str], ...]

    def __post_init__(self) -> None:
        if not self.steps or self.steps[0][0] is not None:
            raise ValueError(f"Thresholds.steps must start with (None, colour), got {self.steps!r}")
        bounds = [value for value, _ in self.steps[1:]]
        numbers = [value for value in bounds if value is not None]
        if numbers != bounds or numbers != sorted(set(numbers)):
            raise ValueError(f"Thresholds.steps: the values after the first must rise strictly: {bounds!r}")
        unknown = [colour for _, colour in self.steps if colour not in _COLOURS]
        if unknown:
            raise ValueError(f"Thresholds.steps: colours {unknown} are not one of {sorted(_COLOURS)}")

    def to_json_data(self) -> list[dict[str, Any]]:
        return [{"color": colour, "value": value} for value, colour in self.steps]


_COLOURS = frozenset({"green", "orange", "red", "blue", "text"})
NEUTRAL = Thresholds(((None, "text"),))  # a count or a rate: no value is good or bad
UP = Thresholds(((None, "red"), (1.0, "green")))  # `up`: 1 is up, below is down
# A ratio of failures: amber from 1 %, red from 5 % (ModelAPIHighErrorRate fires above 5 %).
FAILURE_RATIO = Thresholds(((None, "green"), (0.01, "orange"), (0.05, "red")))
ZERO_IS_GOOD = Thresholds(((None, "green"), (1.0, "red")))  # a count that should stay 0 (drops, failures)
# A latency in seconds: amber from 0.5 s, red from 1 s (ModelAPIHighLatency fires above 1 s).
LATENCY_S = Thresholds(((None, "green"), (0.5, "orange"), (1.0, "red")))
_UP_ONLY = re.compile(r"(?:max|min|avg)?\(?up\{[^}]*\}\)?")


def stat_thresholds(targets: list[Target], unit: str) -> Thresholds:
    """A stat's thresholds when its dashboard names none: UP for `up`, FAILURE_RATIO for a ratio."""
    exprs = [t.expr.replace(" ", "") for t in targets if isinstance(t, PromTarget)]
    if exprs and all(_UP_ONLY.fullmatch(e) for e in exprs):
        return UP
    return FAILURE_RATIO if unit == "percentunit" else NEUTRAL


def stat(
    layout: Layout,
    title: str,
    targets: list[Target],
    *,
    description: str,
    unit: str = "short",
    w: int = 6,
    h: int = 4,
    reduce: str = "lastNotNull",
    thresholds: Thresholds | None = None,
) -> g.Stat:
    """A single value, coloured by ``thresholds`` (by default :func:`stat_thresholds`)."""
    steps = thresholds if thresholds is not None else stat_thresholds(targets, unit)
    return g.Stat(
        **_panel(layout, title, targets, description=description, w=w, h=h),
        format=unit,
        reduceCalc=reduce,
        thresholds=steps.to_json_data(),
    )


def table(
    layout: Layout,
    title: str,
    targets: list[Target],
    *,
    description: str,
    w: int = 24,
    h: int = 9,
    transformations: list[dict[str, Any]] | None = None,
    links: dict[str, str] | None = None,
    panel_id: int | None = None,
    extra: dict[str, Any] | None = None,
) -> g.Table:
    """A sortable table; ``links`` maps a column to a data link URL (Grafana ``${__data...}`` syntax)."""
    overrides = [
        {
            "matcher": {"id": "byName", "options": column},
            "properties": [{"id": "links", "value": [{"title": f"Open {column}", "url": url}]}],
        }
        for column, url in (links or {}).items()
    ]
    return g.Table(
        **_panel(layout, title, targets, description=description, w=w, h=h, panel_id=panel_id),
        transformations=transformations or [],
        overrides=overrides,
        extraJson=extra or {},
    )


def logs(
    layout: Layout,
    title: str,
    targets: list[Target],
    *,
    description: str,
    panel_id: int,
    w: int = 24,
    h: int = 10,
) -> g.Logs:
    return g.Logs(
        **_panel(layout, title, targets, description=description, w=w, h=h, panel_id=panel_id),
        showTime=True,
        wrapLogMessages=True,
        sortOrder="Ascending",
    )


# ---- variables ------------------------------------------------------------------------------


def prom_variable(name: str, label: str, query: str, *, multi: bool = True) -> g.Template:
    return g.Template(
        name=name,
        label=label,
        query=query,
        dataSource=PROMETHEUS,
        type="query",
        multi=multi,
        includeAll=multi,
        allValue=".*" if multi else None,
        refresh=2,
        sort=1,
    )


def flux_variable(name: str, label: str, query: str, *, multi: bool) -> g.Template:
    return g.Template(
        name=name,
        label=label,
        query=query,
        dataSource=INFLUXDB,
        type="query",
        multi=multi,
        includeAll=False,
        refresh=2,
        sort=2,
    )


def custom_variable(choice: Choice, label: str, *, default: str, multi: bool = False) -> g.Template:
    """The variable of ``choice``: its options are what the queries using it were checked with."""
    if default not in choice.options:
        raise ValueError(f"variable {choice.name}: default {default!r} is not one of {list(choice.options)}")
    return g.Template(
        name=choice.name,
        label=label,
        query=",".join(choice.options),
        type="custom",
        default=default,
        multi=multi,
        includeAll=multi,
    )


# ---- the dashboard ------------------------------------------------------------------------------


def dashboard_uid(stem: str) -> str:
    """The stable uid of dashboards/<stem>.dashboard.py."""
    return c.DASHBOARD_UID_PREFIX + stem.replace("_", "-")


def dashboard(
    stem: str,
    title: str,
    description: str,
    panels: list[Any],
    variables: list[g.Template] | None = None,
    *,
    time_from: str = "now-24h",
) -> g.Dashboard:
    return g.Dashboard(
        title=title,
        uid=dashboard_uid(stem),
        description=description,
        tags=["mlobs"],
        panels=panels,
        templating=g.Templating(list=variables or []),
        time=g.Time(time_from, "now"),
        timezone="utc",
        refresh="30s",
        editable=False,
    )
