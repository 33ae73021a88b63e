"""Flux queries built from the contract, so a dashboard can only ask for what is written.

A query starts from one stream of ``pipeline_sdk.contract``: its measurement,
its tag keys and field keys.  Every filter, grouping, pivot or column a step
names is checked against that stream when the query is built, and a misspelt
name raises there, naming it.  A column a query makes itself (``RUN_LABEL``) can
be named only after the step that makes it.

A step run is (run id, step, attempt): ``attempts()`` gives every row its attempt
("1" for a point written before the tag existed), and ``by_attempt()`` also labels
it ``run`` = "<run id> #<attempt>", so a dashboard groups by attempt, never merging
a retried Job's pods or a re-run notebook cell into one row or line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from pipeline_sdk import contract as c
from pipeline_sdk import durations
from pipeline_sdk.flux import duration as flux_duration

# Columns every Flux table has, besides the stream's tags and fields.
FLUX_COLUMNS = frozenset({"_time", "_value", "_field", "_measurement", "_start", "_stop"})
RUN_LABEL = "run"  # a column by_attempt() makes: "<run id> #<attempt>", one value per step run attempt
MADE_COLUMNS = frozenset({RUN_LABEL})  # columns a query makes itself: named only after the step making them


class FluxError(ValueError):
    """A query names something its stream does not have."""


@dataclass(frozen=True)
class Flux:
    """A Flux query over one contract stream, built step by step."""

    stream: c.Stream
    lines: tuple[str, ...]
    columns: frozenset[str]  # what later steps may name: tags, fields, Flux's own, pivoted ones

    @property
    def text(self) -> str:
        return "\n  |> ".join(self.lines)

    def _known(self, names: Iterable[str], where: str) -> None:
        unknown = [n for n in names if n not in self.columns]
        if unknown:
            made = [n for n in unknown if n in MADE_COLUMNS]
            hint = f"; {made} only after by_attempt() made it" if made else ""
            raise FluxError(
                f"{where}: {unknown} not in measurement {self.stream.measurement!r} "
                f"(tags {list(self.stream.tags)}, fields {list(self.stream.fields)}){hint}"
            )

    def then(self, step: str, *, uses: Iterable[str] = (), adds: Iterable[str] = ()) -> Flux:
        """Append ``step``; ``uses`` are the columns it names, ``adds`` those it creates."""
        uses, adds = tuple(uses), tuple(adds)
        self._known(uses, step)
        return Flux(self.stream, (*self.lines, step), self.columns | set(adds))

    def group(self, *columns: str) -> Flux:
        return self.then(f"group(columns: {_list(columns)})", uses=columns)

    def keep(self, *columns: str) -> Flux:
        flux = self.then(f"keep(columns: {_list(columns)})", uses=columns)
        return Flux(flux.stream, flux.lines, frozenset(columns))

    def pivot_fields(self, row_key: tuple[str, ...] = ("_time",)) -> Flux:
        """One column per field (``value``, ``index``...), one row per ``row_key``."""
        return self.then(
            f'pivot(rowKey: {_list(row_key)}, columnKey: ["_field"], valueColumn: "_value")', uses=row_key
        )

    def pivot_by(self, column: str, row_key: tuple[str, ...]) -> Flux:
        """One column per value of ``column`` (e.g. a param's name); the names are data, not schema."""
        return self.then(
            f'pivot(rowKey: {_list(row_key)}, columnKey: ["{column}"], valueColumn: "_value")',
            uses=(*row_key, column),
        )

    def sort(self, *columns: str, desc: bool = False) -> Flux:
        return self.then(f"sort(columns: {_list(columns)}, desc: {str(desc).lower()})", uses=columns)

    def attempts(self) -> Flux:
        """Every row with its ``attempt``: "1" where the point has none (written before the tag existed)."""
        a = c.TAG_ATTEMPT
        return self.then(
            f'map(fn: (r) => ({{r with {a}: if exists r.{a} then r.{a} else "{c.FIRST_ATTEMPT}"}}))', uses=[a]
        )

    def by_attempt(self) -> Flux:
        """``attempts()``, and every row labelled ``run`` = "<run id> #<attempt>" (e.g. "r7 #2")."""
        label = f'r.{c.TAG_RUN_ID} + " #" + r.{c.TAG_ATTEMPT}'
        return self.attempts().then(
            f"map(fn: (r) => ({{r with {RUN_LABEL}: {label}}}))",
            uses=[c.TAG_RUN_ID, c.TAG_ATTEMPT],
            adds=[RUN_LABEL],
        )

    def rename(self, mapping: dict[str, str]) -> Flux:
        body = ", ".join(f'"{k}": "{v}"' for k, v in mapping.items())
        return self.then(f"rename(columns: {{{body}}})", uses=mapping, adds=mapping.values())


def _list(items: Iterable[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def select(
    stream: c.Stream,
    *,
    fields: Iterable[str],
    equal: dict[str, str] | None = None,
    among: dict[str, str] | None = None,
    since: str | None = None,
) -> Flux:
    """``from |> range |> filter``: one measurement, some fields, tags equal to a value or in a set.

    ``equal`` maps a tag to a value (usually a dashboard variable such as ``${pipeline}``);
    ``among`` maps a tag to a multi-value dashboard variable name (``run_id`` → ``${run_id:json}``).
    ``since`` (``-`` and a duration of :mod:`pipeline_sdk.durations`, such as ``-6h``) replaces
    the dashboard's time range, for queries sent to InfluxDB's API directly (``make e2e``).
    """
    fields = tuple(fields)
    equal, among = equal or {}, among or {}
    ago = durations.duration_ns(since[1:]) if since is not None and re.fullmatch(r"-\S+", since) else None
    if since is not None and not ago:
        raise FluxError(
            f"since={since!r} is invalid: must be '-' and a duration above 0 such as -6h or -1h30m "
            f"({durations.GRAMMAR})"
        )
    unknown_fields = [f for f in fields if f not in stream.fields]
    if unknown_fields or not fields:
        raise FluxError(f"fields {unknown_fields or fields!r} not in measurement {stream.measurement!r}")
    unknown_tags = [t for t in (*equal, *among) if t not in stream.tags]
    if unknown_tags:
        raise FluxError(f"tags {unknown_tags} not in measurement {stream.measurement!r}")
    lines = [
        f'from(bucket: "{c.INFLUXDB_BUCKET}")',
        f"range(start: {flux_duration(-ago)})"
        if ago
        else "range(start: v.timeRangeStart, stop: v.timeRangeStop)",
        f'filter(fn: (r) => r._measurement == "{stream.measurement}")',
    ]
    lines += [f'filter(fn: (r) => r.{tag} == "{value}")' for tag, value in equal.items()]
    lines += [
        f"filter(fn: (r) => contains(value: r.{tag}, set: ${{{var}:json}}))" for tag, var in among.items()
    ]
    lines.append("filter(fn: (r) => " + " or ".join(f'r._field == "{f}"' for f in fields) + ")")
    return Flux(stream, tuple(lines), frozenset({*stream.tags, *stream.fields, *FLUX_COLUMNS}))


def tag_values(stream: c.Stream, tag: str, equal: dict[str, str] | None = None) -> str:
    """A variable query: the values of ``tag`` in ``stream``, optionally filtered by other tags."""
    equal = equal or {}
    unknown = [t for t in (tag, *equal) if t not in stream.tags]
    if unknown:
        raise FluxError(f"tags {unknown} not in measurement {stream.measurement!r}")
    predicate = " and ".join(
        [f'r._measurement == "{stream.measurement}"', *(f'r.{t} == "{v}"' for t, v in equal.items())]
    )
    return (
        'import "influxdata/influxdb/schema"\n'
        f'schema.tagValues(bucket: "{c.INFLUXDB_BUCKET}", tag: "{tag}", predicate: (r) => {predicate}, '
        "start: v.timeRangeStart, stop: v.timeRangeStop)"
    )
