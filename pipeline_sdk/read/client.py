"""The read API: step runs and their attempts, params, inputs, outputs, metrics, logs, comparisons.

:class:`ReadClient` reads InfluxDB when ``MLOBS_INFLUXDB_URL`` is set and the local
store otherwise, through the same backend questions (:mod:`.query`), so both give
the same answers for the same events.  Every call returns a lazy :class:`Rows` (or,
for one run, a dict): nothing is read until you iterate, and rows arrive in
batches, so a million-point list metric never sits in memory whole.

A step run is (run id, step, attempt) (see :mod:`.steps`): each call reads the
latest attempt unless given ``attempt=`` (its number, 1 the earliest, or its key),
and a run id that several steps share needs ``step=`` wherever one step run is
meant.  The model-API reads (services, requests, predictions) are in :mod:`.services`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Self

from .. import contract as c
from ..config import ReadSettings, SettingError, home_dir
from ..redact import redact
from ..validation import unescape_text
from .compare import (
    BASE_COLUMNS,
    SYSTEM_PREFIX,
    compare_table,
    json_value,
    names_system,
    resolve_column,
    sort_rows,
)
from .profiles import ProfileReads
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
from .resources import COMPARE_KEYS, ResourceReads
from .rows import Rows
from .runs import Time, check_run_id
from .services import ServiceReads
from .steps import ALL_ATTEMPTS, Scope, check_attempt, check_step, choose_step, pick, summary, system_of

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # the log levels, lowest first


def _settings_from_env() -> ReadSettings:
    """The read settings, a bad one named with any credential its value holds masked."""
    try:
        return ReadSettings.from_env()
    except SettingError as exc:
        raise SettingError(redact(str(exc))) from None


class ReadClient(ProfileReads, ResourceReads, ServiceReads):
    """Reads runs back: from InfluxDB when ``MLOBS_INFLUXDB_URL`` is set, else from the local store.

    >>> runs = ReadClient()                       # from the MLOBS_* environment
    >>> runs.runs(pipeline="train", limit=5).collect()
    >>> runs.compare(["run-a", "run-b"], agg="min", sort="loss").collect()

    ``home`` (default ``MLOBS_HOME``) is also where :meth:`restore_artifact` finds the local
    store's copies of artifacts, whichever backend the records come from.
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
        self.artifact_home = self._artifact_home(backend, home, settings)

    def __repr__(self) -> str:
        return f"<ReadClient of {self.describe()}>"

    @staticmethod
    def _artifact_home(backend: Backend, home: Path | str | None, settings: ReadSettings | None) -> Path:
        """Where the local store keeps artifacts: ``home``, the local backend's, else MLOBS_HOME."""
        from .local import LocalBackend  # noqa: PLC0415 - as above

        if home is not None:
            return Path(home).expanduser()
        if isinstance(backend, LocalBackend):
            return backend.path.parent
        return settings.home if settings is not None else home_dir()

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- params, io, metrics, logs ---------------------------------------------------------------

    def params(self, run_id: str, *, step: str | None = None, attempt: int | str | None = None) -> Rows:
        """The step run's params: name and value (a number when it was logged as one)."""
        return self._params(self._scope(run_id, step, attempt))

    def metrics(self, run_id: str, *, step: str | None = None, attempt: int | str | None = None) -> Rows:
        """The step run's simple metrics: name, value and when it was logged (the last value of each)."""
        scope = self._scope(run_id, step, attempt)

        def produce() -> Iterator[dict[str, Any]]:
            latest: dict[str, Row] = {}
            for row in self.backend.select(Select(c.METRIC, (c.FIELD_VALUE,), equal=scope.equal())):
                latest[row.tags[c.TAG_NAME]] = row
            for name in sorted(latest):
                row = latest[name]
                yield {"name": name, "value": row.fields.get(c.FIELD_VALUE), "time": ns_datetime(row.time_ns)}

        return Rows(produce, ("name", "value", "time"))

    def list_metrics(
        self,
        run_id: str,
        name: str | None = None,
        *,
        step: str | None = None,
        attempt: int | str | None = None,
    ) -> Rows:
        """The step run's list metrics as series: name, step, value and time, in time order (streamed)."""
        if name is not None and (type(name) is not str or not name):
            raise ValueError(f"name={name!r} is invalid: must be a list metric's name")
        equal = self._scope(run_id, step, attempt).equal()
        if name is not None:
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

    def list_metric_names(
        self, run_id: str, *, step: str | None = None, attempt: int | str | None = None
    ) -> Rows:
        """Each list metric of the step run: its name, and its last, min, max and mean value."""
        select = Select(c.LIST_METRIC, (c.FIELD_VALUE,), equal=self._scope(run_id, step, attempt).equal())

        def produce() -> Iterator[dict[str, Any]]:
            table: dict[str, dict[str, Any]] = {}
            for agg in AGGREGATIONS:
                for tags, value in self.backend.reduce(Reduce(select, (c.TAG_NAME,), agg)):
                    table.setdefault(tags.get(c.TAG_NAME, ""), {})[agg] = value
            for name in sorted(table):
                yield {"name": name, **{agg: table[name].get(agg) for agg in ("last", "min", "max", "mean")}}

        return Rows(produce, ("name", "last", "min", "max", "mean"))

    def logs(
        self,
        run_id: str,
        since: Time = None,
        until: Time = None,
        level: str | int | None = None,
        limit: int | None = None,
        *,
        step: str | None = None,
        attempt: int | str | None = None,
    ) -> Rows:
        """Its log records in time order: ``level`` and up, in [since, until), at most ``limit``."""
        start, stop = time_range(since, until)
        check_limit(limit)
        among = {c.TAG_LEVEL: _levels_from(level)} if level is not None else {}
        query = Select(
            c.LOG,
            (c.FIELD_MESSAGE, c.FIELD_LOGGER, c.FIELD_EXTRA),
            equal=self._scope(run_id, step, attempt).equal(),
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
                    "extra": json_value(row.fields.get(c.FIELD_EXTRA)),
                }

        return Rows(produce, ("time", "level", "logger", "message", "extra"))

    # ---- compare ---------------------------------------------------------------------------------

    def compare(
        self,
        run_ids: Iterable[str],
        agg: Agg = "last",
        sort: str | None = None,
        descending: bool = False,
        *,
        step: str | None = None,
        attempt: int | str | None = None,
        system: bool = False,
    ) -> Rows:
        """A row per step run: status and duration, ``param.*``, ``metric.*``, ``list.*`` reduced by ``agg``.

        Each run is compared at its latest attempt; ``attempt`` picks another one in
        every run (its number or key), ``"all"`` compares every attempt.  ``step``
        names the step to compare in each run (needed for a run id several steps
        share).  ``agg`` is ``last``, ``first``, ``min``, ``max`` or ``mean``.  With
        ``system``, the rows also have what each run used (its system summary):
        ``system.cpu_seconds``, ``system.mean_cpu_percent``, ``system.memory_limit_bytes`` and
        ``system.peak_rss_bytes``.  ``sort`` names a column: in full (``metric.accuracy``) or
        by its bare name (``accuracy``: a metric, a list metric, then a param); ``peak_memory``
        (or a system column) sorts by what runs used, and adds those columns.  Runs without the
        column come last.
        """
        ids = [check_run_id(r, "run_ids") for r in ([run_ids] if isinstance(run_ids, str) else run_ids)]
        if not ids:
            raise ValueError("run_ids is empty: name at least one run")
        if agg not in AGGREGATIONS:
            raise ValueError(f"agg={agg!r} is invalid: must be one of {', '.join(AGGREGATIONS)}")
        check_step(step)
        check_attempt(attempt, every=True)
        if not isinstance(system, bool):
            raise TypeError(f"system must be a bool, got {type(system).__name__}")
        profiled = system or names_system(sort)
        ids = list(dict.fromkeys(ids))
        found = self._step_runs(ids)
        missing = [r for r in ids if r not in found and not self._exists(r)]
        if missing:
            raise RunNotFound(f"runs {missing} not found in {self.describe()}")
        targets: list[tuple[Scope, dict[str, Any]]] = []
        for rid in ids:
            if rid not in found:  # points without lifecycle events
                targets.append((Scope(rid), {k: None for k in BASE_COLUMNS} | {"run_id": rid}))
                continue
            chosen = choose_step(rid, found[rid], step)
            every = attempt == ALL_ATTEMPTS and not any(a.key == ALL_ATTEMPTS for a in chosen.attempts)
            numbers = range(1, len(chosen.attempts) + 1) if every else [pick(chosen, attempt)]
            for n in numbers:
                row = summary(chosen, n)
                scope = Scope(rid, chosen.step, row["attempt_key"])
                used = system_of(chosen, n) if profiled else None
                profile = {SYSTEM_PREFIX + k: used[k] for k in COMPARE_KEYS} if used is not None else {}
                targets.append((scope, {k: row[k] for k in BASE_COLUMNS} | profile))
        table, columns = compare_table(self.backend, targets, agg)
        if sort is not None:
            table = sort_rows(table, resolve_column(sort, columns), descending)

        def produce() -> Iterator[dict[str, Any]]:
            return iter([dict(row) for row in table])

        return Rows(produce, columns)


def _levels_from(level: str | int) -> tuple[str, ...]:
    """The level names at ``level`` or above (logging's, aliases included): the minimum level of a query."""
    if isinstance(level, bool):
        raise TypeError("level must be a level name or number, got bool")
    numbers = logging.getLevelNamesMapping()  # what logging stores as levelname, and its aliases
    number = level if isinstance(level, int) else numbers.get(str(level).upper())
    if number is None:
        raise ValueError(f"level={level!r} is invalid: must be one of {', '.join(LEVELS)} (or a number)")
    return tuple(sorted(name for name, n in numbers.items() if n >= number)) or (LEVELS[-1],)
