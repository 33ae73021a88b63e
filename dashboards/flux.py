"""The dashboards' Flux: :mod:`pipeline_sdk.flux`'s builder over Grafana's time range and variables.

A query starts from one stream of ``pipeline_sdk.contract`` (:func:`select`): every
filter, grouping, pivot or column a step names is checked against that stream when
the query is built, and a misspelt name raises there, naming it.  A value is an
escaped string literal; a dashboard variable is a :class:`~pipeline_sdk.flux.Var`
(values from the data, matched as ``=~ /^${name:regex}$/``) or a
:class:`~pipeline_sdk.flux.Choice` (fixed options), never text: see
:mod:`pipeline_sdk.flux` for why each is safe whatever a value holds.

A step run is (run id, step, attempt): ``attempts()`` gives every row its attempt
("1" for a point written before the tag existed), and ``by_attempt()`` also labels
it ``run`` = "<run id> #<attempt>", so a dashboard groups by attempt, never merging
a retried Job's pods or a re-run notebook cell into one row or line.  A column a
query makes itself (``RUN_LABEL``) can be named only after the step that makes it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Self

from pipeline_sdk import contract as c
from pipeline_sdk import durations
from pipeline_sdk.flux import (
    DASHBOARD_BUCKET,
    DASHBOARD_RANGE,
    FLUX_COLUMNS,
    GRAFANA_SYNTAX,
    Among,
    Choice,
    Equal,
    Flux,
    FluxError,
    Var,
    equal_to,
    range_ago,
    string,
)

__all__ = ["FLUX_COLUMNS", "MADE_COLUMNS", "RUN_LABEL", "Choice", "DashboardFlux", "FluxError", "Var"]

RUN_LABEL = "run"  # a column by_attempt() makes: "<run id> #<attempt>", one value per step run attempt


def _literal(tag: str, value: Equal) -> None:
    """Refuse a string value Grafana would read as a variable (``$x``, ``${x}``, ``[[x]]``)."""
    if isinstance(value, str) and GRAFANA_SYNTAX.search(value):
        raise FluxError(
            f"{tag}={value!r} is invalid in a dashboard: Grafana would replace what follows its $ or [[ "
            "inside the string; a dashboard variable is a Var (or a Choice)"
        )


class DashboardFlux(Flux):
    """A dashboard's query: :class:`~pipeline_sdk.flux.Flux` and the steps that label attempts."""

    made_by = MappingProxyType({RUN_LABEL: "by_attempt()"})

    def where(self, equal: Mapping[str, Equal]) -> Self:
        for tag, value in equal.items():
            _literal(tag, value)
        return super().where(equal)

    def attempts(self) -> DashboardFlux:
        """Every row with its ``attempt``: "1" where the point has none (written before the tag existed)."""
        a = c.TAG_ATTEMPT
        return self.with_column(a, f"if exists r.{a} then r.{a} else {string(c.FIRST_ATTEMPT)}", uses=[a])

    def by_attempt(self) -> DashboardFlux:
        """``attempts()``, and every row labelled ``run`` = "<run id> #<attempt>" (e.g. "r7 #2")."""
        label = f"r.{c.TAG_RUN_ID} + {string(' #')} + r.{c.TAG_ATTEMPT}"
        return self.attempts().with_column(RUN_LABEL, label, uses=[c.TAG_RUN_ID, c.TAG_ATTEMPT])


MADE_COLUMNS = frozenset(DashboardFlux.made_by)  # columns a query makes itself: named only after their step


def select(
    stream: c.Stream,
    *,
    fields: Iterable[str],
    equal: Mapping[str, Equal] | None = None,
    among: Mapping[str, Among] | None = None,
    since: str | None = None,
    bucket: str | None = None,
) -> DashboardFlux:
    """``from |> range |> filter``: one measurement, some fields, tags equal to a value or among several.

    ``equal`` maps a tag to a value (a string, escaped) or to a dashboard variable
    (:class:`Var`: ``${pipeline}``'s value, matched as a regex); ``among`` maps a tag to
    values, a :class:`Var` (``run_id``, several values) or a :class:`Choice` (``level``).
    ``since`` (``-`` and a duration of :mod:`pipeline_sdk.durations`, such as ``-6h``)
    replaces the dashboard's time range, for queries sent to InfluxDB's API directly
    (``make e2e``).
    """
    for tag, value in (equal or {}).items():
        _literal(tag, value)
    for tag, values in (among or {}).items():
        for value in values if isinstance(values, (tuple, list)) else ():
            _literal(tag, value)
    time_range = DASHBOARD_RANGE
    if since is not None:
        ago = durations.duration_ns(since[1:]) if re.fullmatch(r"-\S+", since) else None
        if not ago:
            raise FluxError(
                f"since={since!r} is invalid: must be '-' and a duration above 0 such as -6h or -1h30m "
                f"({durations.GRAMMAR})"
            )
        time_range = range_ago(ago)
    return DashboardFlux.select(
        stream,
        fields=fields,
        time_range=time_range,
        bucket=bucket or c.INFLUXDB_BUCKET,
        bucket_macro=bucket is None,
        equal=equal,
        among=among,
    )


def tag_values(stream: c.Stream, tag: str, equal: Mapping[str, Equal] | None = None) -> str:
    """A variable query: the values of ``tag`` in ``stream``, optionally filtered by other tags."""
    equal = equal or {}
    for name, value in equal.items():
        _literal(name, value)
    unknown = [t for t in (tag, *equal) if t not in stream.tags]
    if unknown:
        raise FluxError(f"tags {unknown} not in measurement {stream.measurement!r}")
    predicate = " and ".join(
        [f"r._measurement == {string(stream.measurement)}", *(equal_to(t, v) for t, v in equal.items())]
    )
    return (
        'import "influxdata/influxdb/schema"\n'
        f"schema.tagValues(bucket: {DASHBOARD_BUCKET}, tag: {string(tag)}, "
        f"predicate: (r) => {predicate}, start: v.timeRangeStart, stop: v.timeRangeStop)"
    )
