"""Reading model APIs back: their services, requests and predictions (what ``MLObsMiddleware`` wrote).

:class:`ServiceReads` is the part of :class:`~pipeline_sdk.read.ReadClient` that reads
the ``api_request`` and ``prediction`` streams, through the same backend questions
as runs, so both backends answer alike.  Requests and predictions come in time
order (``descending`` for newest first) and are streamed, as a run's logs are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from .. import contract as c
from ..validation import unescape_text
from .query import Backend, Count, ReadError, Select, check_limit, ns_datetime, time_range
from .rows import Rows, limited

SERVICE_COLUMNS = (
    "service",
    "requests",  # requests recorded
    "server_errors",  # of them, answered 5xx
    "last_request",
    "models",  # the models it logged predictions of
    "scores",  # predictions logged with a score
    "outcomes",  # predictions logged with an outcome
    "last_prediction",
)
REQUEST_COLUMNS = ("time", "endpoint", "method", "status_code", "duration_ms", "user")
PREDICTION_COLUMNS = ("time", "model", "version", "score", "outcome")
_STATUS_CLASS = re.compile(r"[1-5]xx")
_REQUEST_FIELDS = (c.FIELD_DURATION_MS, c.FIELD_USER, c.FIELD_STATUS_CODE)
_PREDICTION_FIELDS = (c.FIELD_SCORE, c.FIELD_OUTCOME)

Time = datetime | str | int | None


class ServiceNotFound(ReadError, LookupError):
    """No request or prediction of that service is in the backend."""


def _check_name(arg: str, value: object) -> str:
    if type(value) is not str or not value.strip():
        raise ValueError(f"{arg}={value!r} is invalid: must be a {arg} name (a non-empty string)")
    return value


def _status_filter(status: object) -> tuple[str | None, int | None]:
    """(status class tag, exact code) of a ``status`` argument: "5xx", or a code such as 503."""
    if status is None:
        return None, None
    if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599:
        return f"{status // 100}xx", status
    if isinstance(status, str) and _STATUS_CLASS.fullmatch(status):
        return status, None
    raise ValueError(
        f"status={status!r} is invalid: must be a status class (2xx, 4xx, 5xx) or a code (100-599)"
    )


class ServiceReads:
    """Model-API reads of a :class:`~pipeline_sdk.read.ReadClient` (which provides ``backend``)."""

    backend: Backend

    def services(self, since: Time = None, until: Time = None) -> Rows:
        """Each service with requests or predictions in [since, until): counts and when it was last seen."""
        start, stop = time_range(since, until)

        def produce() -> Iterator[dict[str, Any]]:
            table = self._service_table(start, stop)
            for name in sorted(table):
                row = table[name]
                row["last_request"] = (
                    self._last(c.API_REQUEST, name, start, stop) if row["requests"] else None
                )
                row["last_prediction"] = (
                    self._last(c.PREDICTION, name, start, stop) if row["models"] else None
                )
                row["models"] = ", ".join(sorted(row["models"])) or None
                yield {k: row[k] for k in SERVICE_COLUMNS}

        return Rows(produce, SERVICE_COLUMNS)

    def _service_table(self, start: int | None, stop: int | None) -> dict[str, dict[str, Any]]:
        table: dict[str, dict[str, Any]] = {}

        def row_of(tags: dict[str, str]) -> dict[str, Any]:
            empty = {"requests": 0, "server_errors": 0, "models": set(), "scores": 0, "outcomes": 0}
            return table.setdefault(
                tags.get(c.TAG_SERVICE, ""), {"service": tags.get(c.TAG_SERVICE), **empty}
            )

        requests = Select(c.API_REQUEST, (c.FIELD_STATUS_CODE,), start_ns=start, stop_ns=stop)
        by_class = Count(requests, (c.TAG_SERVICE, c.TAG_HTTP_STATUS), c.FIELD_STATUS_CODE)
        for tags, n in self.backend.count(by_class):
            row = row_of(tags)
            row["requests"] += n
            row["server_errors"] += n if tags.get(c.TAG_HTTP_STATUS) == "5xx" else 0
        predictions = Select(c.PREDICTION, _PREDICTION_FIELDS, start_ns=start, stop_ns=stop)
        for value, column in ((c.FIELD_SCORE, "scores"), (c.FIELD_OUTCOME, "outcomes")):
            for tags, n in self.backend.count(Count(predictions, (c.TAG_SERVICE, c.TAG_MODEL), value)):
                row = row_of(tags)
                row[column] += n
                row["models"].add(tags.get(c.TAG_MODEL, ""))
        return table

    def _last(self, stream: c.Stream, service: str, start: int | None, stop: int | None) -> datetime | None:
        fields = _REQUEST_FIELDS if stream is c.API_REQUEST else _PREDICTION_FIELDS
        query = Select(
            stream, fields, equal={c.TAG_SERVICE: service}, start_ns=start, stop_ns=stop, desc=True, limit=1
        )
        row = next(iter(self.backend.select(query)), None)
        return ns_datetime(row.time_ns) if row is not None else None

    def _require_service(self, service: object) -> str:
        name = _check_name("service", service)
        for stream in (c.API_REQUEST, c.PREDICTION):
            fields = _REQUEST_FIELDS if stream is c.API_REQUEST else _PREDICTION_FIELDS
            found = self.backend.select(Select(stream, fields, equal={c.TAG_SERVICE: name}, limit=1))
            if next(iter(found), None) is not None:
                return name
        known = ", ".join(sorted(self._service_table(None, None))) or "none"
        raise ServiceNotFound(f"service {name!r} not found in {self.backend.describe()}; services: {known}")

    def _service_select(
        self,
        stream: c.Stream,
        service: object,
        named: Iterable[tuple[str, str, object]],
        since: Time,
        until: Time,
        *,
        limit: int | None,
        desc: bool,
        cut: bool = True,
    ) -> Select:
        """A service's points of ``stream`` in [since, until); ``named``: (tag, argument, value or None).

        ``cut``: the backend stops at ``limit`` rows (not when the caller filters them further).
        """
        start, stop = time_range(since, until)
        check_limit(limit)
        equal = {c.TAG_SERVICE: _check_name("service", service)}
        equal |= {tag: _check_name(arg, value) for tag, arg, value in named if value is not None}
        fields = _REQUEST_FIELDS if stream is c.API_REQUEST else _PREDICTION_FIELDS
        query = Select(
            stream,
            fields,
            equal=equal,
            start_ns=start,
            stop_ns=stop,
            desc=bool(desc),
            limit=limit if cut else None,
        )
        self._require_service(service)
        return query

    def requests(
        self,
        service: str,
        since: Time = None,
        until: Time = None,
        *,
        endpoint: str | None = None,
        method: str | None = None,
        status: str | int | None = None,
        limit: int | None = None,
        descending: bool = False,
    ) -> Rows:
        """A service's requests in [since, until), in time order (``descending``: newest first).

        ``endpoint`` is a route template (``/predict/{model}``), ``method`` an HTTP method,
        ``status`` a class (``"5xx"``) or an exact code (``503``).  Users are their hashes.
        """
        status_class, code = _status_filter(status)
        named = [(c.TAG_ENDPOINT, "endpoint", endpoint), (c.TAG_METHOD, "method", method)]
        named.append((c.TAG_HTTP_STATUS, "status", status_class))
        # an exact code is picked out of its class here, so the backend must not stop at the limit
        query = self._service_select(
            c.API_REQUEST, service, named, since, until, limit=limit, desc=descending, cut=code is None
        )

        def produce() -> Iterator[dict[str, Any]]:
            rows = (
                {
                    "time": ns_datetime(row.time_ns),
                    "endpoint": row.tags.get(c.TAG_ENDPOINT),
                    "method": row.tags.get(c.TAG_METHOD),
                    "status_code": row.fields.get(c.FIELD_STATUS_CODE),
                    "duration_ms": row.fields.get(c.FIELD_DURATION_MS),
                    "user": row.fields.get(c.FIELD_USER),
                }
                for row in self.backend.select(query)
            )
            yield from limited((r for r in rows if code is None or r["status_code"] == code), limit)

        return Rows(produce, REQUEST_COLUMNS)

    def predictions(
        self,
        service: str,
        since: Time = None,
        until: Time = None,
        *,
        model: str | None = None,
        version: str | int | None = None,
        limit: int | None = None,
        descending: bool = False,
    ) -> Rows:
        """A service's predictions in [since, until): model, version, score and outcome, in time order."""
        text = str(version) if isinstance(version, int) and not isinstance(version, bool) else version
        named = [(c.TAG_MODEL, "model", model), (c.TAG_MODEL_VERSION, "version", text)]
        query = self._service_select(c.PREDICTION, service, named, since, until, limit=limit, desc=descending)

        def produce() -> Iterator[dict[str, Any]]:
            for row in self.backend.select(query):
                outcome = row.fields.get(c.FIELD_OUTCOME)
                yield {
                    "time": ns_datetime(row.time_ns),
                    "model": row.tags.get(c.TAG_MODEL),
                    "version": row.tags.get(c.TAG_MODEL_VERSION),
                    "score": row.fields.get(c.FIELD_SCORE),
                    "outcome": unescape_text(str(outcome)) if outcome is not None else None,
                }

        return Rows(produce, PREDICTION_COLUMNS)
