"""The read API: runs, their params, inputs, outputs, metrics, list metrics and logs, and comparisons.

:class:`ReadClient` reads InfluxDB when ``MLOBS_INFLUXDB_URL`` is set and the local
store otherwise, through the same two backend questions (:mod:`.query`), so both
give the same answers for the same events.  Every call returns a lazy
:class:`Rows` (or, for one run, a dict): nothing is read until you iterate, and
rows arrive in batches, so a million-point list metric never sits in memory whole.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from .. import contract as c
from ..config import ReadSettings, SettingError
from ..redact import redact
from ..validation import unescape_text
from .query import (
    AGGREGATIONS,
    Agg,
    Backend,
    Reduce,
    Row,
    RunNotFound,
    Select,
    check_limit,
    ns_datetime,
    time_range,
)

if TYPE_CHECKING:
    import pandas  # type: ignore[import-untyped, unused-ignore]

T = TypeVar("T")

RUNNING = "running"  # the status of a run that has started and not (yet) ended
RUN_STATUSES = (RUNNING, c.RunStatus.SUCCEEDED.value, c.RunStatus.FAILED.value, c.RunStatus.CANCELLED.value)
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # the log levels, lowest first
RUN_COLUMNS = (
    "run_id",
    "pipeline",
    "step",
    "status",
    "reason",
    "started",
    "ended",
    "duration_ms",
    "exit_code",
    "error",
    "host",
)
_ID_BATCH = 200  # run ids whose details are fetched together
_INT = re.compile(r"-?\d+")


class Rows:
    """A lazy result: iterate for dicts, ``batches()`` for lists, ``frames()`` for DataFrames.

    Each iteration reads the backend again; ``collect()`` gives a pandas DataFrame
    when pandas is installed, else a list of dicts.
    """

    def __init__(self, produce: Callable[[], Iterator[dict[str, Any]]], columns: Sequence[str]) -> None:
        self._produce = produce
        self.columns: tuple[str, ...] = tuple(columns)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._produce()

    def batches(self, size: int = 10_000) -> Iterator[list[dict[str, Any]]]:
        """Lists of at most ``size`` rows; only one batch is held at a time."""
        if type(size) is not int or size < 1:
            raise ValueError(f"size={size!r} is invalid: must be a whole number, 1 or more")
        return _chunks(self, size)

    def frames(self, size: int = 100_000) -> Iterator[pandas.DataFrame]:
        """pandas DataFrames of at most ``size`` rows (pip install 'mlobs[pandas]')."""
        pd = _pandas()
        for batch in self.batches(size):
            yield pd.DataFrame.from_records(batch, columns=self._columns_of(batch))

    def to_list(self) -> list[dict[str, Any]]:
        return list(self)

    def to_pandas(self) -> pandas.DataFrame:
        """Every row in one DataFrame (pip install 'mlobs[pandas]')."""
        pd = _pandas()
        rows = self.to_list()
        return pd.DataFrame.from_records(rows, columns=self._columns_of(rows))

    def collect(self) -> pandas.DataFrame | list[dict[str, Any]]:
        """A DataFrame when pandas is installed, else a list of dicts."""
        try:
            _pandas()
        except ImportError:
            return self.to_list()
        return self.to_pandas()

    def _columns_of(self, rows: Sequence[Mapping[str, Any]]) -> list[str]:
        extra = dict.fromkeys(k for row in rows for k in row if k not in self.columns)
        return [*self.columns, *extra]


def _pandas() -> Any:
    try:
        import pandas  # noqa: PLC0415 - an optional extra

        return pandas
    except ImportError:
        raise ImportError("DataFrames need pandas: pip install 'mlobs[pandas]' (or use to_list())") from None


def _settings_from_env() -> ReadSettings:
    """The read settings, a bad one named with any credential its value holds masked."""
    try:
        return ReadSettings.from_env()
    except SettingError as exc:
        raise SettingError(redact(str(exc))) from None


def _check_run_id(run_id: object, arg: str = "run_id") -> str:
    if type(run_id) is not str or not run_id.strip():
        raise ValueError(f"{arg}={run_id!r} is invalid: must be a run id (a non-empty string)")
    return run_id


def _param_value(fields: Mapping[str, Any]) -> Any:
    text = unescape_text(str(fields.get(c.FIELD_VALUE, "")))
    number = fields.get(c.FIELD_NUMBER)
    if number is None:
        return text
    return int(text) if _INT.fullmatch(text) else float(number)


def _json_value(text: Any) -> Any:
    if text is None:
        return None
    raw = unescape_text(str(text))
    try:
        return json.loads(raw)
    except ValueError:
        return raw


class ReadClient:
    """Reads runs back: from InfluxDB when ``MLOBS_INFLUXDB_URL`` is set, else from the local store.

    >>> runs = ReadClient()                       # from the MLOBS_* environment
    >>> runs.runs(pipeline="train", limit=5).collect()
    >>> runs.compare(["run-a", "run-b"], agg="min", sort="loss").collect()
    """

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        home: Path | str | None = None,
        settings: ReadSettings | None = None,
    ) -> None:
        if backend is None:
            settings = settings if settings is not None else _settings_from_env()
            if settings.influxdb_url is not None and home is None:
                from .influx import InfluxBackend  # noqa: PLC0415 - needs the optional influxdb-client

                assert settings.influxdb_token is not None  # ReadSettings requires it with a URL
                backend = InfluxBackend(
                    settings.influxdb_url,
                    settings.influxdb_token,
                    settings.influxdb_org,
                    settings.influxdb_bucket,
                )
            else:
                from .local import LocalBackend  # noqa: PLC0415

                backend = LocalBackend(home if home is not None else settings.home)
        self.backend: Backend = backend

    def __repr__(self) -> str:
        return f"<ReadClient of {self.describe()}>"

    def describe(self) -> str:
        return self.backend.describe()

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> ReadClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- runs ------------------------------------------------------------------------------------

    def runs(  # noqa: PLR0917 - the filters of Craft AI's and omega-ml's listings, by keyword too
        self,
        pipeline: str | None = None,
        step: str | None = None,
        status: str | None = None,
        since: datetime | str | int | None = None,
        until: datetime | str | int | None = None,
        limit: int | None = None,
    ) -> Rows:
        """Runs that started in [since, until), newest first, optionally of one pipeline, step, status.

        ``status`` is the run's final status: ``running``, ``succeeded``, ``failed`` or
        ``cancelled``; the exporter's record decides it when there is one (an OOM-killed
        step cannot report its own end).  ``since``/``until``: an aware datetime, an
        ISO 8601 time (UTC when it names no zone), a duration before now such as ``2h``
        or ``7d``, or Unix nanoseconds (see :func:`.query.time_arg`).  ``limit``: a whole
        number, 1 or more.
        """
        if status is not None and status not in RUN_STATUSES:
            raise ValueError(f"status={status!r} is invalid: must be one of {', '.join(RUN_STATUSES)}")
        check_limit(limit)
        start, stop = time_range(since, until)
        equal = {t: v for t, v in ((c.TAG_PIPELINE, pipeline), (c.TAG_STEP, step)) if v is not None}

        def produce() -> Iterator[dict[str, Any]]:
            produced = 0
            for batch in _chunks(self._run_ids(equal, start, stop), _ID_BATCH):
                for summary in self._summaries(batch, start):
                    if status is not None and summary["status"] != status:
                        continue
                    yield summary
                    produced += 1
                    if limit is not None and produced >= limit:
                        return

        return Rows(produce, RUN_COLUMNS)

    def _run_ids(self, equal: Mapping[str, str], start: int | None, stop: int | None) -> Iterator[str]:
        """Run ids newest first by start: from the SDK's started events and the exporter's records."""
        started = self.backend.select(
            Select(
                c.RUN,
                (c.FIELD_HOST, c.FIELD_PID, c.FIELD_SDK_VERSION),
                equal={**equal, c.TAG_STATUS: c.RunStatus.STARTED.value},
                start_ns=start,
                stop_ns=stop,
                desc=True,
            )
        )
        recorded = self.backend.select(
            Select(
                c.RUN_RECORD,
                (c.FIELD_START_NS, c.FIELD_END_NS),
                equal=equal,
                start_ns=start,  # a record is written at the run's end, which is after its start
                desc=True,
                order_by=c.FIELD_START_NS,
            )
        )
        by_sdk = ((-row.time_ns, row.tags.get(c.TAG_RUN_ID, "")) for row in started)
        by_record = (
            (-int(row.fields[c.FIELD_START_NS]), row.tags.get(c.TAG_RUN_ID, ""))
            for row in recorded
            if c.FIELD_START_NS in row.fields
            and (start is None or int(row.fields[c.FIELD_START_NS]) >= start)
            and (stop is None or int(row.fields[c.FIELD_START_NS]) < stop)
        )
        seen: set[str] = set()
        for _, run_id in heapq.merge(by_sdk, by_record):
            if run_id and run_id not in seen:
                seen.add(run_id)
                yield run_id

    def _summaries(self, run_ids: Sequence[str], start: int | None) -> list[dict[str, Any]]:
        events: dict[str, list[Row]] = {r: [] for r in run_ids}
        for row in self.backend.select(
            Select(c.RUN, tuple(c.RUN.fields), among={c.TAG_RUN_ID: tuple(run_ids)}, start_ns=start)
        ):
            events[row.tags[c.TAG_RUN_ID]].append(row)
        records: dict[str, Row] = {}
        for row in self.backend.select(
            Select(
                c.RUN_RECORD, tuple(c.RUN_RECORD.fields), among={c.TAG_RUN_ID: tuple(run_ids)}, start_ns=start
            )
        ):
            records[row.tags[c.TAG_RUN_ID]] = row  # the last record of a run wins
        return [_summary(r, events[r], records.get(r)) for r in run_ids if events[r] or r in records]

    def run(self, run_id: str) -> dict[str, Any]:
        """One run: identity, status and reason, times, params, inputs and outputs.

        Raises :class:`RunNotFound` when no event of ``run_id`` is stored.
        """
        _check_run_id(run_id)
        found = self._summaries([run_id], None)
        if not found:
            raise self._not_found(run_id)
        summary = found[0]
        record = self._record(run_id)
        if record is not None:
            summary.update(
                namespace=record.tags.get(c.TAG_NAMESPACE),
                pod=record.fields.get(c.FIELD_POD),
                node=record.fields.get(c.FIELD_NODE),
                image=record.fields.get(c.FIELD_IMAGE),
                attempts=record.fields.get(c.FIELD_ATTEMPTS),
            )
        summary["params"] = {p["name"]: p["value"] for p in self.params(run_id, _checked=True)}
        io = list(self._io(run_id))
        summary["inputs"] = [_io_row(r, c.FIELD_SOURCE) for r in io if r.tags.get(c.TAG_DIRECTION) == "input"]
        summary["outputs"] = [
            _io_row(r, c.FIELD_DESTINATION) for r in io if r.tags.get(c.TAG_DIRECTION) == "output"
        ]
        return summary

    def _record(self, run_id: str) -> Row | None:
        rows = self.backend.select(
            Select(c.RUN_RECORD, tuple(c.RUN_RECORD.fields), equal={c.TAG_RUN_ID: run_id}, desc=True, limit=1)
        )
        return next(iter(rows), None)

    def _exists(self, run_id: str) -> bool:
        """Whether any point of the run is stored (lifecycle events first: the usual case)."""
        for stream in c.RUN_STREAMS:
            found = self.backend.select(
                Select(stream, tuple(stream.fields), equal={c.TAG_RUN_ID: run_id}, limit=1)
            )
            if next(iter(found), None) is not None:
                return True
        return False

    def _not_found(self, run_id: str) -> RunNotFound:
        return RunNotFound(f"run {run_id!r} not found in {self.describe()}")

    def _require(self, run_id: str) -> str:
        _check_run_id(run_id)
        if not self._exists(run_id):
            raise self._not_found(run_id)
        return run_id

    # ---- params, io, metrics, logs ---------------------------------------------------------------

    def params(self, run_id: str, *, _checked: bool = False) -> Rows:
        """The run's params: name and value (a number when it was logged as one)."""
        if not _checked:
            self._require(run_id)

        def produce() -> Iterator[dict[str, Any]]:
            latest: dict[str, Any] = {}
            query = Select(c.PARAM, (c.FIELD_VALUE, c.FIELD_NUMBER), equal={c.TAG_RUN_ID: run_id})
            for row in self.backend.select(query):
                latest[row.tags[c.TAG_NAME]] = _param_value(row.fields)  # the last write wins
            for name in sorted(latest):
                yield {"name": name, "value": latest[name]}

        return Rows(produce, ("name", "value"))

    def _io(self, run_id: str) -> Iterator[Row]:
        fields = (c.FIELD_VALUE, c.FIELD_SOURCE, c.FIELD_DESTINATION)
        return self.backend.select(Select(c.IO, fields, equal={c.TAG_RUN_ID: run_id}))

    def metrics(self, run_id: str) -> Rows:
        """The run's simple metrics: name, value and when it was logged (the last value of each name)."""
        self._require(run_id)

        def produce() -> Iterator[dict[str, Any]]:
            latest: dict[str, Row] = {}
            for row in self.backend.select(Select(c.METRIC, (c.FIELD_VALUE,), equal={c.TAG_RUN_ID: run_id})):
                latest[row.tags[c.TAG_NAME]] = row
            for name in sorted(latest):
                row = latest[name]
                yield {"name": name, "value": row.fields.get(c.FIELD_VALUE), "time": ns_datetime(row.time_ns)}

        return Rows(produce, ("name", "value", "time"))

    def list_metrics(self, run_id: str, name: str | None = None) -> Rows:
        """The run's list metrics as series: name, step, value and time, in time order (streamed)."""
        self._require(run_id)
        equal = {c.TAG_RUN_ID: run_id}
        if name is not None:
            if type(name) is not str or not name:
                raise ValueError(f"name={name!r} is invalid: must be a list metric's name")
            equal[c.TAG_NAME] = name

        def produce() -> Iterator[dict[str, Any]]:
            query = Select(c.LIST_METRIC, (c.FIELD_VALUE, c.FIELD_INDEX), equal=equal)
            for row in self.backend.select(query):
                yield {
                    "name": row.tags.get(c.TAG_NAME),
                    "step": row.fields.get(c.FIELD_INDEX),
                    "value": row.fields.get(c.FIELD_VALUE),
                    "time": ns_datetime(row.time_ns),
                }

        return Rows(produce, ("name", "step", "value", "time"))

    def list_metric_names(self, run_id: str) -> Rows:
        """Each list metric of the run: its name, number of points, and last, min, max and mean."""
        self._require(run_id)

        def produce() -> Iterator[dict[str, Any]]:
            table: dict[str, dict[str, Any]] = {}
            select = Select(c.LIST_METRIC, (c.FIELD_VALUE,), equal={c.TAG_RUN_ID: run_id})
            for agg in AGGREGATIONS:
                for tags, value in self.backend.reduce(Reduce(select, (c.TAG_NAME,), agg)):
                    table.setdefault(tags.get(c.TAG_NAME, ""), {})[agg] = value
            for name in sorted(table):
                yield {"name": name, **{agg: table[name].get(agg) for agg in ("last", "min", "max", "mean")}}

        return Rows(produce, ("name", "last", "min", "max", "mean"))

    def logs(
        self,
        run_id: str,
        since: datetime | str | int | None = None,
        until: datetime | str | int | None = None,
        level: str | int | None = None,
        limit: int | None = None,
    ) -> Rows:
        """The run's log records in time order: ``level`` or above, in [since, until), at most ``limit``."""
        self._require(run_id)
        start, stop = time_range(since, until)
        check_limit(limit)
        among = {c.TAG_LEVEL: _levels_from(level)} if level is not None else {}
        query = Select(
            c.LOG,
            (c.FIELD_MESSAGE, c.FIELD_LOGGER, c.FIELD_EXTRA),
            equal={c.TAG_RUN_ID: run_id},
            among=among,
            start_ns=start,
            stop_ns=stop,
            limit=limit,
        )

        def produce() -> Iterator[dict[str, Any]]:
            for row in self.backend.select(query):
                yield {
                    "time": ns_datetime(row.time_ns),
                    "level": row.tags.get(c.TAG_LEVEL),
                    "logger": unescape_text(str(row.fields.get(c.FIELD_LOGGER, ""))),
                    "message": unescape_text(str(row.fields.get(c.FIELD_MESSAGE, ""))),
                    "extra": _json_value(row.fields.get(c.FIELD_EXTRA)),
                }

        return Rows(produce, ("time", "level", "logger", "message", "extra"))

    # ---- compare ---------------------------------------------------------------------------------

    def compare(
        self,
        run_ids: Iterable[str],
        agg: Agg = "last",
        sort: str | None = None,
        descending: bool = False,
    ) -> Rows:
        """One row per run: status and duration, ``param.*``, ``metric.*``, and ``list.*`` reduced by ``agg``.

        ``agg`` is ``last``, ``first``, ``min``, ``max`` or ``mean``.  ``sort`` names a column:
        in full (``metric.accuracy``) or by its bare name (``accuracy``: a metric, a list
        metric, then a param); runs without it come last.
        """
        ids = [_check_run_id(r, "run_ids") for r in ([run_ids] if isinstance(run_ids, str) else run_ids)]
        if not ids:
            raise ValueError("run_ids is empty: name at least one run")
        if agg not in AGGREGATIONS:
            raise ValueError(f"agg={agg!r} is invalid: must be one of {', '.join(AGGREGATIONS)}")
        ids = list(dict.fromkeys(ids))
        summaries = {s["run_id"]: s for s in self._summaries(ids, None)}
        missing = [r for r in ids if r not in summaries and not self._exists(r)]
        if missing:
            raise RunNotFound(f"runs {missing} not found in {self.describe()}")
        base = ("run_id", "pipeline", "step", "status", "duration_ms")
        rows: dict[str, dict[str, Any]] = {
            r: {k: summaries.get(r, {}).get(k) for k in base} | {"run_id": r} for r in ids
        }
        among = {c.TAG_RUN_ID: tuple(ids)}
        by = (c.TAG_RUN_ID, c.TAG_NAME)
        for row in self.backend.select(Select(c.PARAM, (c.FIELD_VALUE, c.FIELD_NUMBER), among=among)):
            rows[row.tags[c.TAG_RUN_ID]][f"param.{row.tags[c.TAG_NAME]}"] = _param_value(row.fields)
        for tags, value in self.backend.reduce(
            Reduce(Select(c.METRIC, (c.FIELD_VALUE,), among=among), by, "last")
        ):
            rows[tags[c.TAG_RUN_ID]][f"metric.{tags[c.TAG_NAME]}"] = value
        for tags, value in self.backend.reduce(
            Reduce(Select(c.LIST_METRIC, (c.FIELD_VALUE,), among=among), by, agg)
        ):
            rows[tags[c.TAG_RUN_ID]][f"list.{tags[c.TAG_NAME]}"] = value
        found = sorted({k for row in rows.values() for k in row if k not in base}, key=_column_order)
        columns = (*base, *found)
        table = [{k: row.get(k) for k in columns} for row in rows.values()]
        if sort is not None:
            table = _sorted(table, _resolve_column(sort, columns), descending)

        def produce() -> Iterator[dict[str, Any]]:
            return iter([dict(row) for row in table])

        return Rows(produce, columns)


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of at most ``size`` items, only one held at a time."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _summary(run_id: str, events: list[Row], record: Row | None) -> dict[str, Any]:
    """A run's summary from its lifecycle events (SDK) and its run record (exporter), the record winning."""
    identity: Mapping[str, str] = record.tags if record is not None else (events[0].tags if events else {})
    started = next((e for e in events if e.tags.get(c.TAG_STATUS) == c.RunStatus.STARTED.value), None)
    ends = [e for e in events if e.tags.get(c.TAG_STATUS) != c.RunStatus.STARTED.value]
    end = max(ends, key=lambda e: e.time_ns) if ends else None
    status = end.tags.get(c.TAG_STATUS) if end is not None else RUNNING
    start_ns = started.time_ns if started is not None else None
    end_ns = end.time_ns if end is not None else None
    duration = end.fields.get(c.FIELD_DURATION_MS) if end is not None else None
    reason = exit_code = None
    if record is not None:
        status = record.tags.get(c.TAG_STATUS, status)
        reason = record.tags.get(c.TAG_REASON)
        exit_code = record.fields.get(c.FIELD_EXIT_CODE)
        start_ns = start_ns if start_ns is not None else record.fields.get(c.FIELD_START_NS)
        end_ns = end_ns if end_ns is not None else record.fields.get(c.FIELD_END_NS)
        duration = duration if duration is not None else record.fields.get(c.FIELD_EXECUTION_TIME_MS)
    error = None
    if end is not None and c.FIELD_ERROR_TYPE in end.fields:
        message = unescape_text(str(end.fields.get(c.FIELD_ERROR_MESSAGE, "")))
        error = f"{unescape_text(str(end.fields[c.FIELD_ERROR_TYPE]))}: {message}".rstrip(": ")
    return {
        "run_id": run_id,
        "pipeline": identity.get(c.TAG_PIPELINE),
        "step": identity.get(c.TAG_STEP),
        "status": status,
        "reason": reason,
        "started": ns_datetime(int(start_ns)) if start_ns is not None else None,
        "ended": ns_datetime(int(end_ns)) if end_ns is not None else None,
        "duration_ms": duration,
        "exit_code": exit_code,
        "error": error,
        "host": unescape_text(str(started.fields[c.FIELD_HOST]))
        if started and c.FIELD_HOST in started.fields
        else None,
    }


def _io_row(row: Row, location: str) -> dict[str, Any]:
    where = row.fields.get(location)
    return {
        "name": row.tags.get(c.TAG_NAME),
        "value": _json_value(row.fields.get(c.FIELD_VALUE)),
        location: unescape_text(str(where)) if where is not None else None,
        "time": ns_datetime(row.time_ns),
    }


def _levels_from(level: str | int) -> tuple[str, ...]:
    """The level names at ``level`` or above (logging's, aliases included): the minimum level of a query."""
    if isinstance(level, bool):
        raise TypeError("level must be a level name or number, got bool")
    numbers = logging.getLevelNamesMapping()  # what logging stores as levelname, and its aliases
    number = level if isinstance(level, int) else numbers.get(str(level).upper())
    if number is None:
        raise ValueError(f"level={level!r} is invalid: must be one of {', '.join(LEVELS)} (or a number)")
    return tuple(sorted(name for name, n in numbers.items() if n >= number)) or (LEVELS[-1],)


_PREFIXES = ("param.", "metric.", "list.")


def _column_order(column: str) -> tuple[int, str]:
    for i, prefix in enumerate(_PREFIXES):
        if column.startswith(prefix):
            return i, column
    return len(_PREFIXES), column


def _resolve_column(sort: str, columns: Sequence[str]) -> str:
    if sort in columns:
        return sort
    for prefix in ("metric.", "list.", "param."):
        if prefix + sort in columns:
            return prefix + sort
    raise ValueError(f"sort={sort!r} is not a column of this comparison; columns: {', '.join(columns)}")


def _sorted(table: list[dict[str, Any]], key: str, descending: bool) -> list[dict[str, Any]]:
    """Rows by ``key``: numbers, then text (each ascending, or both descending); missing values last."""

    def missing(value: Any) -> bool:
        return value is None or (isinstance(value, float) and math.isnan(value))

    present = [row for row in table if not missing(row.get(key))]
    present.sort(key=lambda row: (isinstance(row[key], str), row[key]), reverse=descending)
    return present + [row for row in table if missing(row.get(key))]
