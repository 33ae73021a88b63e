"""The calls a pipeline step makes: params, metrics, inputs/outputs, log records.

A :class:`RunRecorder` is bound to one run identity and one client.  Every call
validates its arguments (a bad one raises here, naming it; but see ``on_invalid``
below), converts the values people have (numpy, pandas, nested configs: see
:mod:`pipeline_sdk.values`), encodes the event into its Forward-protocol entry and
appends it to the client's queue of that stream.  It never waits on I/O.  That
hand-off (:class:`EventWriter`) is shared with the model API's
:class:`~pipeline_sdk.model_api.ServiceRecorder`.

``log_metric`` is called hundreds of thousands of times a run, so its common
case (a float or int value, a name seen before) is kept to a handful of
operations; everything unusual falls back to the validators.

``log_record`` and ``log_status`` are the exceptions to "a bad argument
raises": the log handler and the run's exit call them on paths that must not
raise, so their text is stored with :func:`~pipeline_sdk.validation.safe_text`
(lone surrogates as backslash escapes, long text cut with a marker), and a log
record's ``extra`` that cannot be JSON-encoded loses only the extra.

Each call also applies the run's policy for invalid arguments (``on_invalid``: raise, or
drop and count) and refuses to record once the run has ended.  (One concern, the calls of a
run and what each accepts, so one module a little over 400 lines.)
"""

from __future__ import annotations

import contextvars
import json
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import config
from . import contract as c
from .encoding import ENTRY_HEAD, NS_PER_S, MetricEncoder, pack_entry
from .shipper import _RateLimitedWarning
from .validation import (
    INT64_MAX,
    MAX_TEXT_LENGTH,
    check_attempt,
    check_identity,
    check_index,
    check_name,
    check_number,
    check_tag_value,
    check_text,
    describe,
    describe_error,
    escape_surrogates,
    escape_text,
    json_dumps,
    param_value,
    safe_text,
    short_repr,
    truncate_text,
)
from .values import as_mapping, each_valid, flatten_params, json_text, nested_config, param_scalar

if TYPE_CHECKING:
    from .client import Client

_time_ns = time.time_ns
_MAX_LOCATION = 2048


# Keys of the JSON object stored as a log record's extra when the extra itself could not be.
EXTRA_ERROR_KEY = c.EXTRA_ERROR_KEY
EXTRA_TRUNCATED_KEY = c.EXTRA_TRUNCATED_KEY
MAX_LEVEL_LENGTH = 32  # a log record's level name (a tag)
MAX_LOGGER_LENGTH = 256  # a log record's logger name
_MAX_EXTRA_ERROR = 1024  # characters of the reason stored under EXTRA_ERROR_KEY


def encode_extra(extra: Mapping[Any, Any]) -> str:
    """A log record's ``extra`` as a JSON object of at most MAX_TEXT_LENGTH characters; never raises.

    Values JSON has no form for are stored as their ``repr()``, and lone surrogates as JSON
    escapes (so they read back as they were).  An extra that still cannot be encoded (circular,
    nested too deep, a ``repr()`` that raises) becomes ``{EXTRA_ERROR_KEY: "<why>"}``; one whose
    JSON text is too long becomes ``{EXTRA_TRUNCATED_KEY: "<that text, cut with the marker>"}``.
    """
    try:
        # NaN and infinity stay as Python's json writes and reads them (a NaN loss is worth a log line).
        text = escape_surrogates(json_dumps(extra, default=repr, allow_nan=True))
    except Exception as exc:  # noqa: BLE001 - only the extra is lost, and the reason is stored instead
        return json.dumps(
            {EXTRA_ERROR_KEY: safe_text(describe_error(exc), _MAX_EXTRA_ERROR)}, ensure_ascii=False
        )
    if len(text) <= MAX_TEXT_LENGTH:
        return text
    budget = MAX_TEXT_LENGTH
    for _ in range(8):  # JSON-encoding the cut text escapes its quotes: shrink the cut until it fits
        capped = json.dumps({EXTRA_TRUNCATED_KEY: truncate_text(text, budget)}, ensure_ascii=False)
        over = len(capped) - MAX_TEXT_LENGTH
        if over <= 0:
            return capped
        budget -= over
    reason = f"{len(text)} characters once JSON-encoded, more than {MAX_TEXT_LENGTH}"
    return json.dumps({EXTRA_ERROR_KEY: reason})


class EventWriter:
    """The hand-off every recorder shares: it appends encoded entries to the client's queues.

    Event times are unique and increasing per writer (a clash moves an event on by 1 ns),
    so no two of its events are one InfluxDB point.  A queue past its soft limit first
    lends the spooler the GIL (``relieve``); at its bound the event is dropped and counted.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        shipper = client.shipper
        self._queues = shipper.queues
        self._soft_limit = shipper.soft_limit
        self._relieve = shipper.relieve
        self._last_ns = 0
        client._adopt_writer(self)

    def _client_closed(self) -> None:
        """The client is closing: refuse every later event (the same free check as an ended run)."""
        self._soft_limit = 0
        self._relieve = self._refuse_closed

    def _refuse_closed(self, queue: deque[bytes]) -> bool:
        raise RuntimeError(
            f"{self!r} writes through a client that was closed ({self.client.describe()}): "
            "record before closing it, or make a new pipeline_sdk.Client()"
        )

    def _emit(
        self, tag: str, record: Mapping[str, Any], time_ns: int | None = None, *, exact: bool = False
    ) -> bool:
        """Queue one event; False when it was dropped at the queue's bound (counted there).

        ``exact`` keeps ``time_ns`` as given, for events whose time is a fact of their own
        (a run record's end) and that must write the same point when sent twice.
        """
        t = _time_ns() if time_ns is None else time_ns
        if not exact:
            if t <= self._last_ns:
                t = self._last_ns + 1
            self._last_ns = t
        queue = self._queues[tag]
        if len(queue) >= self._soft_limit and not self._relieve(queue):
            return False
        queue.append(pack_entry(t, record))
        return True


class RunRecorder(EventWriter):
    """Records the events of one run through a :class:`~pipeline_sdk.client.Client`.

    ``on_invalid`` says what a call with an invalid argument does: ``"raise"`` (the default,
    from ``MLOBS_ON_INVALID``) raises at the call; ``"drop"`` records nothing of that call (of a
    batch, only its invalid entries), counts it in ``Client.stats().dropped_invalid`` and logs
    why (at most one warning every 10 seconds), so a long job's result survives a bad name.
    Once the run has ended (see :attr:`ended`), every recording call raises ``RuntimeError``.
    """

    def __init__(
        self,
        client: Client,
        pipeline: str,
        step: str,
        run_id: str,
        attempt: str = c.FIRST_ATTEMPT,
        *,
        on_invalid: str | None = None,
    ) -> None:
        self.pipeline = check_identity("pipeline", pipeline)
        self.step = check_identity("step", step)
        self.run_id = check_identity("run_id", run_id)
        self.attempt = check_attempt("attempt", attempt)
        mode = config.ON_INVALID.get() if on_invalid is None else check_on_invalid("on_invalid", on_invalid)
        super().__init__(client)
        self._identity = {
            c.TAG_RUN_ID: run_id,
            c.TAG_PIPELINE: pipeline,
            c.TAG_STEP: step,
            c.TAG_ATTEMPT: attempt,
        }
        shipper = client.shipper
        self._metric_queue = shipper.queues[c.METRIC.tag]
        self._list_metric_queue = shipper.queues[c.LIST_METRIC.tag]
        self._simple: dict[str, MetricEncoder] = {}
        self._series: dict[str, MetricEncoder] = {}
        self._who = f"{pipeline}/{step} run_id={run_id} attempt={attempt}"
        self._raise_invalid = mode == "raise"
        self._dropped = 0
        self._warn_invalid = _RateLimitedWarning()
        self._warn_lost = _RateLimitedWarning()
        self._ended = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._who}>"

    # ---- the end of the run ------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        """True once the run has ended: every recording call then raises ``RuntimeError``."""
        return self._ended

    def _end(self) -> None:
        """Refuse every later call.  The metric fast path already compares each queue with its soft
        limit: a limit of 0 sends every call to ``relieve``, which now refuses it, for no cost."""
        self._ended = True
        self._soft_limit = 0
        self._relieve = self._refuse_ended

    def _client_closed(self) -> None:
        if not self._ended:  # an ended run keeps saying that it ended
            super()._client_closed()

    def _refuse_ended(self, queue: deque[bytes]) -> bool:
        tag = next((t for t, q in self.client.shipper.queues.items() if q is queue), "")
        raise self._ended_error(_CALL_OF_TAG.get(tag, "a recording call"))

    def _ended_error(self, call: str) -> RuntimeError:
        return RuntimeError(
            f"{call}() on run {self._who}, which has ended: record inside the run's `with` block (or in "
            "the function that run() decorates), or start a new run with pipeline_sdk.run(...)"
        )

    def _check_open(self, call: str) -> None:
        if self._ended:
            raise self._ended_error(call)

    def _drop(self, call: str, name: object, exc: Exception) -> None:
        """on_invalid="drop": count the refused call and say why (rate-limited)."""
        self.client.shipper.count_invalid()
        self._dropped += 1
        shown = f"{call}({'' if name is None else short_repr(name)})"
        self._warn_invalid(
            "mlobs: run %s: %s dropped (on_invalid='drop'): %s (%d dropped so far)",
            self._who,
            shown,
            describe(exc),
            self._dropped,
        )

    def _lost_record(self, logger: str, exc: Exception) -> None:
        """A log record captured for this run could not be recorded: count it and say why (rate-limited)."""
        self.client.shipper.count_lost_log_record()
        self._warn_lost(
            "mlobs: run %s: a log record of logger %r was not recorded: %s",
            self._who,
            logger,
            describe_error(exc),
        )

    def _refused(self, call: str, refused: list[tuple[Any, Exception]]) -> None:
        """Entries of a batch that were refused: raise the first, or drop each."""
        if refused and self._raise_invalid:
            raise refused[0][1]
        for name, exc in refused:
            self._drop(call, name, exc)

    # ---- metrics: the hot path -----------------------------------------------------------

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        """Record a simple metric, or with ``step`` one value of a list metric.

        ``value`` is a finite real number (stored as float); ``step`` an int from 0,
        for example the epoch or batch number.  A list metric is one series per run.
        """
        try:
            if step is None:
                enc = self._simple.get(name)
                if enc is None:
                    enc = self._encoder(c.METRIC, name)
            else:
                enc = self._series.get(name)
                if enc is None:
                    enc = self._encoder(c.LIST_METRIC, name)
                if type(step) is not int or step < 0 or step > INT64_MAX:
                    step = check_index("step", step)
            if type(value) is not float or value - value != 0.0:  # not a finite float
                value = check_number("value", value)
        except (TypeError, ValueError) as exc:
            self._check_open("log_metric")
            if self._raise_invalid:
                raise
            self._drop("log_metric", name, exc)
            return
        t = _time_ns()
        if t <= self._last_ns:  # unique, increasing event times: no two points collide
            t = self._last_ns + 1
        self._last_ns = t
        sec, nsec = divmod(t, NS_PER_S)
        queue = self._list_metric_queue if step is not None else self._metric_queue
        if len(queue) >= self._soft_limit and not self._relieve(queue):  # also where an ended run refuses
            return
        if step is None:
            queue.append(enc.pack(ENTRY_HEAD, sec, nsec, enc.prefix, enc.value_key, value))
        else:
            queue.append(
                enc.pack(ENTRY_HEAD, sec, nsec, enc.prefix, enc.value_key, value, enc.index_key, step)
            )

    def _encoder(self, stream: c.Stream, name: str) -> MetricEncoder:
        check_name("name", name)
        enc = MetricEncoder(stream, self._identity, name)
        (self._series if stream is c.LIST_METRIC else self._simple)[name] = enc
        return enc

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record several metrics at once (a mapping, ``argparse.Namespace`` or pandas Series).

        All are validated before any is recorded; with ``on_invalid="drop"`` the valid ones are.
        """
        self._check_open("log_metrics")
        try:
            items = as_mapping("metrics", metrics)
            if step is not None:
                step = check_index("step", step)
        except (TypeError, ValueError) as exc:
            if self._raise_invalid:
                raise
            self._drop("log_metrics", None, exc)
            return
        checked, refused = each_valid(
            [(name, f"metrics[{name!r}]", value) for name, value in items.items()],
            lambda name, where, value: (
                check_name(f"metrics key {name!r}", name),
                check_number(where, value),
            ),
        )
        self._refused("log_metrics", refused)
        for name, number in checked:
            self.log_metric(name, number, step)

    # ---- params, inputs and outputs --------------------------------------------------------

    def log_param(self, name: str, value: Any) -> None:
        """Record a parameter: a str, int, float, bool or None (stored as text, and as a number).

        A nested config as ``value`` records one param per leaf, named ``name.key.subkey``;
        see :func:`log_params`.
        """
        self._check_open("log_param")
        try:
            check_name("name", name)
            nested = nested_config(value)
            if nested is None or not len(nested):
                params = [(name, *param_value("value", param_scalar("value", value)))]
                refused: list[tuple[Any, Exception]] = []
            else:
                params, refused = self._checked_params(flatten_params("value", value, prefix=name))
        except (TypeError, ValueError) as exc:
            if self._raise_invalid:
                raise
            self._drop("log_param", name, exc)
            return
        self._refused("log_param", refused)
        for param in params:
            self._param(*param)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record several parameters; all are validated before any is recorded.

        A nested config (dicts, OmegaConf-like mappings, ``argparse.Namespace``, dataclasses) is
        flattened to dotted names: ``{"optim": {"lr": 0.1}}`` records ``optim.lr``.  A list, tuple
        or numpy array is stored as its JSON text; numpy scalars, paths and timestamps as their Python
        value, text and ISO text (see :mod:`pipeline_sdk.values`).
        """
        self._check_open("log_params")
        try:
            checked, refused = self._checked_params(flatten_params("params", params))
        except (TypeError, ValueError) as exc:
            if self._raise_invalid:
                raise
            self._drop("log_params", None, exc)
            return
        self._refused("log_params", refused)
        for param in checked:
            self._param(*param)

    @staticmethod
    def _checked_params(
        leaves: list[tuple[str, str, object]],
    ) -> tuple[list[tuple[str, str, float | None]], list[tuple[Any, Exception]]]:
        return each_valid(
            leaves,
            lambda name, where, value: (
                check_name(f"params key {name!r}", name),
                *param_value(where, param_scalar(where, value)),
            ),
        )

    def _param(self, name: str, text: str, number: float | None) -> None:
        record: dict[str, Any] = {**self._identity, c.TAG_NAME: name, c.FIELD_VALUE: escape_text(text)}
        if number is not None:
            record[c.FIELD_NUMBER] = number
        self._emit(c.PARAM.tag, record)

    def log_input(self, name: str, value: Any, source: str | None = None) -> None:
        """Record an input of the step: a JSON value (numpy and pandas values converted), and its source.

        ``value`` is stored as JSON text of at most 32,768 characters, its containers nested at
        most :data:`~pipeline_sdk.validation.MAX_JSON_DEPTH` (64) deep (``[]`` is 1, ``[[]]`` 2);
        NaN, infinity, a circular reference or text that is not valid Unicode is a ``ValueError``
        naming ``value``, a type JSON cannot hold a ``TypeError``.  numpy scalars and arrays,
        pandas objects and timestamps are converted first (see :mod:`pipeline_sdk.values`).
        """
        self._io(
            "log_input",
            c.IODirection.INPUT,
            name,
            value,
            location_field=c.FIELD_SOURCE,
            location_arg="source",
            location=source,
        )

    def log_output(self, name: str, value: Any, destination: str | None = None) -> None:
        """Record an output of the step: any JSON-serialisable value, and where it went.

        ``value`` is checked as in :meth:`log_input`.
        """
        self._io(
            "log_output",
            c.IODirection.OUTPUT,
            name,
            value,
            location_field=c.FIELD_DESTINATION,
            location_arg="destination",
            location=destination,
        )

    def _io(
        self,
        call: str,
        direction: c.IODirection,
        name: str,
        value: Any,
        *,
        location_field: str,
        location_arg: str,
        location: str | None,
    ) -> None:
        self._check_open(call)
        try:
            check_name("name", name)
            record: dict[str, Any] = {
                **self._identity,
                c.TAG_DIRECTION: direction.value,
                c.TAG_NAME: name,
                c.FIELD_VALUE: escape_text(json_text("value", value)),
            }
            if location is not None:
                record[location_field] = escape_text(check_text(location_arg, location, _MAX_LOCATION))
        except (TypeError, ValueError) as exc:
            if self._raise_invalid:
                raise
            self._drop(call, name, exc)
            return
        self._emit(c.IO.tag, record)

    # ---- log records and lifecycle (used by the handler and the run context) -----------------

    def log_record(
        self,
        level: str,
        message: object,
        logger: object = "",
        extra: Mapping[Any, Any] | None = None,
        time_ns: int | None = None,
    ) -> None:
        """Record one log line with the run's identity; ``extra`` is stored as a JSON object.

        Only ``level`` (a tag of at most 32 characters) can be refused.  The text is always kept:
        ``message`` and ``logger`` go through :func:`~pipeline_sdk.validation.safe_text` (cut
        to 32,768 and 256 characters), and ``extra`` through :func:`encode_extra`.
        """
        self._check_open("log_record")
        try:
            tag = check_tag_value("level", level, MAX_LEVEL_LENGTH)
        except (TypeError, ValueError) as exc:
            if self._raise_invalid:
                raise
            self._drop("log_record", level, exc)
            return
        record: dict[str, Any] = {
            **self._identity,
            c.TAG_LEVEL: tag,
            c.FIELD_MESSAGE: escape_text(safe_text(message)),
            c.FIELD_LOGGER: escape_text(safe_text(logger, MAX_LOGGER_LENGTH)),
        }
        if extra:
            record[c.FIELD_EXTRA] = escape_text(encode_extra(extra))
        self._emit(c.LOG.tag, record, time_ns)

    def log_status(
        self,
        status: c.RunStatus,
        fields: Mapping[str, Any],
        time_ns: int | None = None,
    ) -> None:
        """Record a lifecycle event (started, succeeded, failed, cancelled).

        The run's exit calls this: a string field's value is stored with
        :func:`~pipeline_sdk.validation.safe_text`, so no text makes it raise.
        """
        self._check_open("log_status")
        record: dict[str, Any] = {**self._identity, c.TAG_STATUS: status.value}
        for key, value in fields.items():
            is_text = c.RUN.fields.get(key) is c.FieldType.STRING
            record[key] = escape_text(safe_text(value)) if is_text else value
        self._emit(c.RUN.tag, record, time_ns)


# The call an ended run names when an event reaches its queue (log_metric's fast path).
_CALL_OF_TAG = {
    c.METRIC.tag: "log_metric",
    c.LIST_METRIC.tag: "log_metric",
    c.PARAM.tag: "log_param",
    c.IO.tag: "log_input",
    c.LOG.tag: "log_record",
    c.RUN.tag: "log_status",
}


def check_on_invalid(arg: str, value: object) -> str:
    """``"raise"`` or ``"drop"`` (any case): what a recording call with an invalid argument does."""
    if not isinstance(value, str):
        raise TypeError(f"{arg} must be 'raise' or 'drop', got {type(value).__name__} {short_repr(value)}")
    try:
        return config.on_invalid(value)
    except ValueError as exc:
        raise ValueError(f"{arg}={short_repr(value)} is invalid: {exc}") from None


# The run of the current thread or task (see pipeline_sdk.run.current_run): run() sets it.
CURRENT_RUN: contextvars.ContextVar[RunRecorder | None] = contextvars.ContextVar(
    "mlobs_current_run", default=None
)
