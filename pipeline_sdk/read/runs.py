"""Step runs: listing them, one run or execution, and which points a call reads (its scope).

:class:`RunReads` is the part of :class:`~pipeline_sdk.read.ReadClient` that knows
step runs and their attempts (see :mod:`.steps`): ``runs()``, ``run()``, naming a run
by a start of its id (``resolve_run_id``), and the scope of every other run call:
the run id, its step (``step=`` when several share it) and the attempt (the latest,
or ``attempt=``).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from .. import contract as c
from ..validation import unescape_text
from .compare import json_value, param_value
from .query import Backend, Reduce, Row, RunNotFound, Select, check_limit, ns_datetime, time_range
from .rows import Rows, chunks, limited
from .steps import (
    RUN_COLUMNS,
    RUN_STATUSES,
    Scope,
    StepRun,
    attempt_key,
    attempt_rows,
    check_attempt,
    check_step,
    choose_step,
    details,
    execution,
    gather,
    pick,
    summary,
)

RUN_SORTS = ("started", "run_id")  # runs(sort=): newest first, or by run id (an execution's steps together)
LATEST = "latest"  # resolve_run_id: the newest run
_ID_BATCH = 200  # run ids whose details are fetched together
_CANDIDATES_SHOWN = 10  # run ids an ambiguous start of one lists

Time = datetime | str | int | None


def check_run_id(run_id: object, arg: str = "run_id") -> str:
    if type(run_id) is not str or not run_id.strip():
        raise ValueError(f"{arg}={run_id!r} is invalid: must be a run id (a non-empty string)")
    return run_id


class RunReads:
    """Step runs of a :class:`~pipeline_sdk.read.ReadClient` (which provides ``backend``)."""

    backend: Backend

    def describe(self) -> str:
        """Where it reads: "the local store /path" or "InfluxDB at URL (org, bucket)"."""
        return self.backend.describe()

    # ---- runs ------------------------------------------------------------------------------------

    def runs(  # noqa: PLR0917 - the filters of Craft AI's and omega-ml's listings, by keyword too
        self,
        pipeline: str | None = None,
        step: str | None = None,
        status: str | None = None,
        since: Time = None,
        until: Time = None,
        limit: int | None = None,
        *,
        run_id: str | None = None,
        sort: str = "started",
    ) -> Rows:
        """Step runs that started in [since, until), newest first: each one's latest attempt.

        A row is a step run (run id, step) at its latest attempt that started in the range
        (``attempt`` its number, 1 the earliest; ``attempt_key`` its tag): a run id whose
        steps share it gives a row per step.  ``sort="run_id"`` orders by run id, an
        execution's steps in the order they started (reading the whole range first).
        ``status`` is the attempt's final status: ``running``, ``succeeded``, ``failed`` or
        ``cancelled``; the exporter's record decides it when there is one (an OOM-killed
        step cannot report its own end).  ``since``/``until``: an aware datetime, an ISO
        8601 time (UTC when it names no zone), a duration before now such as ``2h`` or
        ``7d``, or Unix nanoseconds (see :func:`.query.time_arg`).  ``limit``: a whole
        number, 1 or more.
        """
        if status is not None and status not in RUN_STATUSES:
            raise ValueError(f"status={status!r} is invalid: must be one of {', '.join(RUN_STATUSES)}")
        if sort not in RUN_SORTS:
            raise ValueError(f"sort={sort!r} is invalid: must be one of {', '.join(RUN_SORTS)}")
        check_limit(limit)
        start, stop = time_range(since, until)
        named = ((c.TAG_PIPELINE, pipeline), (c.TAG_STEP, check_step(step)), (c.TAG_RUN_ID, run_id))
        equal = {t: v for t, v in named if v is not None}
        if run_id is not None:
            check_run_id(run_id)

        def latest() -> Iterator[dict[str, Any]]:
            for batch in chunks(self._starts(equal, start, stop), _ID_BATCH):
                found = self._step_runs(sorted({r for r, _, _ in batch}))
                for rid, name, key in batch:
                    step_run = found.get(rid, {}).get(name)
                    if step_run is None:
                        continue
                    row = summary(step_run, step_run.number_of(key))
                    if status is None or row["status"] == status:
                        yield row

        def produce() -> Iterator[dict[str, Any]]:
            rows = latest()
            if sort == "run_id":
                rows = iter(
                    sorted(rows, key=lambda r: (r["run_id"], r["started"] is None, r["started"] or 0))
                )
            return limited(rows, limit)

        return Rows(produce, RUN_COLUMNS)

    def _starts(
        self, equal: Mapping[str, str], start: int | None, stop: int | None
    ) -> Iterator[tuple[str, str, str]]:
        """(run id, step, attempt key) newest first by start, each step run once: its latest in the range."""
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

        def ident(row: Row) -> tuple[str, str, str]:
            return row.tags.get(c.TAG_RUN_ID, ""), row.tags.get(c.TAG_STEP, ""), attempt_key(row.tags)

        by_sdk = ((-row.time_ns, ident(row)) for row in started)
        by_record = (
            (-int(row.fields[c.FIELD_START_NS]), ident(row))
            for row in recorded
            if c.FIELD_START_NS in row.fields
            and (start is None or int(row.fields[c.FIELD_START_NS]) >= start)
            and (stop is None or int(row.fields[c.FIELD_START_NS]) < stop)
        )
        seen: set[tuple[str, str]] = set()
        for _, (rid, name, key) in heapq.merge(by_sdk, by_record):
            if rid and (rid, name) not in seen:
                seen.add((rid, name))
                yield rid, name, key

    def _step_runs(self, run_ids: Iterable[str]) -> dict[str, dict[str, StepRun]]:
        """run id -> step -> step run, every attempt of each, from their events and records."""
        among = {c.TAG_RUN_ID: tuple(run_ids)}
        events = self.backend.select(Select(c.RUN, tuple(c.RUN.fields), among=among))
        records = self.backend.select(Select(c.RUN_RECORD, tuple(c.RUN_RECORD.fields), among=among))
        return gather(events, records)

    def run(
        self, run_id: str, *, step: str | None = None, attempt: int | str | None = None
    ) -> dict[str, Any]:
        """One step run (its latest attempt, or ``attempt``), or a pipeline execution of several steps.

        A step run: identity, ``attempt`` (its number) and ``attempt_key``, status and
        reason, times, params, inputs and outputs, the exporter's pod, node and image
        when it recorded that attempt, the failed run's ``traceback``, and ``attempts``:
        every attempt (number, key, status, times), the earliest first.  A run id that
        several steps share, asked without ``step``, gives the execution: its status (a
        failed step fails it), first start and last end, and ``steps`` (each as
        :meth:`runs` lists it, the failed ones first).  Raises :class:`RunNotFound` when
        nothing of ``run_id`` (or of that step or attempt) is stored.
        """
        check_run_id(run_id)
        check_step(step)
        check_attempt(attempt)
        steps = self._step_runs([run_id]).get(run_id)
        if not steps:
            raise self._not_found(run_id)
        if step is None and attempt is None and len(steps) > 1:
            return execution(run_id, (summary(s, len(s.attempts)) for s in steps.values()))
        chosen = choose_step(run_id, steps, step)
        number = pick(chosen, attempt)
        found = summary(chosen, number) | details(chosen, number)
        scope = Scope(run_id, chosen.step, chosen.attempts[number - 1].key)
        found["params"] = {p["name"]: p["value"] for p in self._params(scope)}
        io = list(
            self.backend.select(
                Select(c.IO, (c.FIELD_VALUE, c.FIELD_SOURCE, c.FIELD_DESTINATION), equal=scope.equal())
            )
        )
        found["inputs"] = [_io_row(r, c.FIELD_SOURCE) for r in io if r.tags.get(c.TAG_DIRECTION) == "input"]
        found["outputs"] = [
            _io_row(r, c.FIELD_DESTINATION) for r in io if r.tags.get(c.TAG_DIRECTION) == "output"
        ]
        found["attempts"] = attempt_rows(chosen)
        return found

    def resolve_run_id(self, text: str) -> str:
        """The run id ``text`` names: itself when stored, ``latest`` for the newest run, or a prefix."""
        check_run_id(text, "run")
        if self._exists(text):
            return text
        if text == LATEST:
            newest = next(iter(self.runs(limit=1)), None)
            if newest is None:
                raise RunNotFound(f"no runs in {self.describe()}")
            return str(newest["run_id"])
        candidates = sorted(r for r in self._run_ids() if r.startswith(text))
        if not candidates:
            raise self._not_found(text)
        if len(candidates) > 1:
            shown = ", ".join(candidates[:_CANDIDATES_SHOWN])
            more = (
                f" and {len(candidates) - _CANDIDATES_SHOWN} more"
                if len(candidates) > _CANDIDATES_SHOWN
                else ""
            )
            raise RunNotFound(
                f"run id {text!r} is the start of {len(candidates)} run ids: {shown}{more}; give more of one"
            )
        return candidates[0]

    def _run_ids(self) -> set[str]:
        """Every run id with lifecycle events or a run record."""
        ids: set[str] = set()
        for stream, value in ((c.RUN, c.FIELD_HOST), (c.RUN_RECORD, c.FIELD_START_NS)):
            query = Reduce(Select(stream, (value,)), (c.TAG_RUN_ID,), "last", value)
            ids.update(tags[c.TAG_RUN_ID] for tags, _ in self.backend.reduce(query) if c.TAG_RUN_ID in tags)
        return ids

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

    def _scope(self, run_id: str, step: str | None, attempt: int | str | None) -> Scope:
        """The points of one step run's attempt (see the module's docstring); raises naming what is not."""
        check_run_id(run_id)
        check_step(step)
        check_attempt(attempt)
        steps = self._step_runs([run_id]).get(run_id)
        if not steps:  # points without lifecycle events (another writer): the run id is all there is
            if not self._exists(run_id):
                raise self._not_found(run_id)
            if attempt is not None:
                raise RunNotFound(f"run {run_id!r} has no lifecycle events, so no attempts to pick from")
            return Scope(run_id, step)
        chosen = choose_step(run_id, steps, step)
        return Scope(run_id, chosen.step, chosen.attempts[pick(chosen, attempt) - 1].key)

    def _params(self, scope: Scope) -> Rows:
        def produce() -> Iterator[dict[str, Any]]:
            latest: dict[str, Any] = {}
            query = Select(c.PARAM, (c.FIELD_VALUE, c.FIELD_NUMBER), equal=scope.equal())
            for row in self.backend.select(query):
                latest[row.tags[c.TAG_NAME]] = param_value(row.fields)  # the last write wins
            for name in sorted(latest):
                yield {"name": name, "value": latest[name]}

        return Rows(produce, ("name", "value"))


def _io_row(row: Row, location: str) -> dict[str, Any]:
    where = row.fields.get(location)
    return {
        "name": row.tags.get(c.TAG_NAME),
        "value": json_value(row.fields.get(c.FIELD_VALUE)),
        location: unescape_text(str(where)) if where is not None else None,
        "time": ns_datetime(row.time_ns),
    }
