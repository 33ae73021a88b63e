"""Comparing step runs side by side: one row per attempt, its params, metrics and list metrics reduced."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .. import contract as c
from ..validation import unescape_text
from .query import Agg, Backend, Reduce, Select
from .steps import Scope, attempt_key

BASE_COLUMNS = ("run_id", "pipeline", "step", "attempt", "status", "duration_ms")
SYSTEM_PREFIX = "system."  # a column of a run's system summary: system.peak_rss_bytes...
_PREFIXES = ("param.", "metric.", "list.", SYSTEM_PREFIX)
SYSTEM_NAMES = ("cpu_seconds", "mean_cpu_percent", "memory_limit_bytes", "peak_rss_bytes")  # its columns
SORT_ALIASES = {"peak_memory": SYSTEM_PREFIX + "peak_rss_bytes"}  # compare(sort=) names of columns
_INT = re.compile(r"-?\d+")


def param_value(fields: Mapping[str, Any]) -> Any:
    """A param as it was logged: a number when it was one (an int when it reads as one), else its text."""
    text = unescape_text(str(fields.get(c.FIELD_VALUE, "")))
    number = fields.get(c.FIELD_NUMBER)
    if number is None:
        return text
    return int(text) if _INT.fullmatch(text) else float(number)


def json_value(text: Any) -> Any:
    if text is None:
        return None
    raw = unescape_text(str(text))
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def compare_table(
    backend: Backend, targets: Sequence[tuple[Scope, dict[str, Any]]], agg: Agg
) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    """The rows (one per target, each starting with its BASE_COLUMNS) and the columns found."""
    exact: dict[tuple[str, str | None, str | None], dict[str, Any]] = {
        (s.run_id, s.step, s.attempt): row for s, row in targets if s.step is not None
    }
    loose = {s.run_id: row for s, row in targets if s.step is None}  # a run without lifecycle events

    def row_of(tags: Mapping[str, str]) -> dict[str, Any] | None:
        run_id = tags.get(c.TAG_RUN_ID, "")
        found = exact.get((run_id, tags.get(c.TAG_STEP), attempt_key(tags)))
        return found if found is not None else loose.get(run_id)

    among = {c.TAG_RUN_ID: tuple(dict.fromkeys(s.run_id for s, _ in targets))}
    by = (c.TAG_RUN_ID, c.TAG_STEP, c.TAG_ATTEMPT, c.TAG_NAME)
    for point in backend.select(Select(c.PARAM, (c.FIELD_VALUE, c.FIELD_NUMBER), among=among)):
        row = row_of(point.tags)
        if row is not None:
            row[f"param.{point.tags[c.TAG_NAME]}"] = param_value(point.fields)  # the last write wins
    reductions: tuple[tuple[c.Stream, str, Agg], ...] = (
        (c.METRIC, "metric.", "last"),
        (c.LIST_METRIC, "list.", agg),
    )
    for stream, prefix, how in reductions:
        for tags, value in backend.reduce(Reduce(Select(stream, (c.FIELD_VALUE,), among=among), by, how)):
            row = row_of(tags)
            if row is not None:
                row[f"{prefix}{tags[c.TAG_NAME]}"] = value
    rows = [row for _, row in targets]
    found = sorted({k for row in rows for k in row if k not in BASE_COLUMNS}, key=_column_order)
    columns = (*BASE_COLUMNS, *found)
    return [{k: row.get(k) for k in columns} for row in rows], columns


def _column_order(column: str) -> tuple[int, str]:
    for i, prefix in enumerate(_PREFIXES):
        if column.startswith(prefix):
            return i, column
    return len(_PREFIXES), column


def names_system(sort: str | None) -> bool:
    """Whether ``sort`` names a column of the system summary (``peak_memory``, ``system.*``, a bare name)."""
    if sort is None:
        return False
    return sort in SORT_ALIASES or sort.startswith(SYSTEM_PREFIX) or sort in SYSTEM_NAMES


def resolve_column(sort: str, columns: Sequence[str]) -> str:
    if sort in columns:
        return sort
    if SORT_ALIASES.get(sort) in columns:
        return SORT_ALIASES[sort]
    for prefix in ("metric.", "list.", "param.", SYSTEM_PREFIX):
        if prefix + sort in columns:
            return prefix + sort
    raise ValueError(f"sort={sort!r} is not a column of this comparison; columns: {', '.join(columns)}")


def sort_rows(table: list[dict[str, Any]], key: str, descending: bool) -> list[dict[str, Any]]:
    """Rows by ``key``: numbers, then text (each ascending, or both descending); missing values last."""

    def missing(value: Any) -> bool:
        return value is None or (isinstance(value, float) and math.isnan(value))

    present = [row for row in table if not missing(row.get(key))]
    present.sort(key=lambda row: (isinstance(row[key], str), row[key]), reverse=descending)
    return present + [row for row in table if missing(row.get(key))]
