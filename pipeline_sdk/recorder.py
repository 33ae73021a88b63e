"""The calls a pipeline step makes: params, metrics, inputs/outputs, log records.

An :class:`ActiveRun` is what ``with pipeline_sdk.run(...) as run:`` gives you and what
:func:`~pipeline_sdk.run.current_run` returns: one run identity, bound to one client.
Every call validates its arguments (a bad one raises here, naming it; but see
``on_invalid``, :mod:`pipeline_sdk.invalid`), converts the values people have (numpy,
pandas, nested configs: see :mod:`pipeline_sdk.values`), encodes the event into its
Forward-protocol entry and appends it to the client's queue of that stream
(:class:`~pipeline_sdk.writer.EventWriter`).  It never waits on I/O.

``log_metric`` is called hundreds of thousands of times a run, so its common
case (a float or int value, a name seen before) is kept to a handful of
operations; everything unusual falls back to the validators.

``log_artifact`` only checks its arguments and stats the path: a background thread hashes
(and, with the local store, copies) the file or directory and records it (see
:mod:`pipeline_sdk.artifacts` and :mod:`pipeline_sdk.run_resources`); ``record_system_sample``
records what a run's system sampler reads, from the sampler's thread.

``log_record`` and ``log_status`` are the exceptions to "a bad argument
raises": the log handler and the run's exit call them on paths that must not
raise, so their text is stored with :func:`~pipeline_sdk.validation.safe_text`
(lone surrogates as backslash escapes, long text cut with a marker), and a log
record's ``extra`` that cannot be JSON-encoded loses only the extra
(:func:`~pipeline_sdk.extra.encode_extra`).  Once the run has ended, every call raises.

``RunRecorder`` is the old name of :class:`ActiveRun`, kept for one release (deprecated).

One concern past 400 lines: the recording calls of a run, each a few lines over the validators.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import artifacts, config
from . import contract as c
from .deprecated import module_getattr
from .encoding import ENTRY_HEAD, NS_PER_S, MetricEncoder
from .extra import MAX_LEVEL_LENGTH, MAX_LOGGER_LENGTH, encode_extra
from .invalid import InvalidCalls, check_on_invalid
from .ratelog import RateLimitedLog
from .run_resources import artifact_record, artifact_store, system_rows
from .validation import (
    INT64_MAX,
    check_attempt,
    check_identity,
    check_index,
    check_name,
    check_number,
    check_tag_value,
    check_text,
    describe_error,
    escape_text,
    param_value,
    safe_text,
)
from .values import (
    as_mapping,
    checked_params,
    each_valid,
    flatten_params,
    json_text,
    nested_config,
    param_scalar,
)
from .writer import EventWriter, _time_ns

if TYPE_CHECKING:  # annotations only: client.py imports this module
    from .client import Client
    from .system import Summary

_MAX_LOCATION = 2048
log = logging.getLogger("mlobs")


class ActiveRun(EventWriter):
    """One run while it is active: what ``with run(...) as run:`` gives and ``current_run()`` returns.

    It records the events of one run identity through a :class:`~pipeline_sdk.client.Client`
    (``client``); :meth:`Client.recorder <pipeline_sdk.client.Client.recorder>` makes one
    bound to a client of your own.

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
        self.client = client  # the client its events go through
        self._identity = {
            c.TAG_RUN_ID: run_id,
            c.TAG_PIPELINE: pipeline,
            c.TAG_STEP: step,
            c.TAG_ATTEMPT: attempt,
        }
        self._metric_queue = self._queues[c.METRIC.tag]
        self._list_metric_queue = self._queues[c.LIST_METRIC.tag]
        self._simple: dict[str, MetricEncoder] = {}
        self._series: dict[str, MetricEncoder] = {}
        self._who = f"{pipeline}/{step} run_id={run_id} attempt={attempt}"
        self._invalid = InvalidCalls(mode, self._who, self._shipper.count_invalid)
        self._raise_invalid = self._invalid.raises
        self._warn_lost = RateLimitedLog(log)
        self._ended = False
        self._hasher: artifacts.BackgroundHasher | None = None  # made by the first log_artifact
        self._hasher_lock = threading.Lock()
        self._artifacts_closed = False
        self.system: Summary | None = None  # what run() measured, once it has ended (None: not sampled)

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

    def host_closed(self) -> None:
        if not self._ended:  # an ended run keeps saying that it ended
            self.close_artifacts(self.client.settings.flush_timeout)  # recorded before the client closes
            super().host_closed()

    def _refuse_ended(self, queue: deque[bytes]) -> bool:
        tag = next((t for t, q in self._queues.items() if q is queue), "")
        raise self._ended_error(_CALL_OF_TAG.get(tag, "a recording call"))

    def _ended_error(self, call: str) -> RuntimeError:
        return RuntimeError(
            f"{call}() on run {self._who}, which has ended: record inside the run's `with` block (or in "
            "the function that run() decorates), or start a new run with pipeline_sdk.run(...)"
        )

    def _check_open(self, call: str) -> None:
        if self._ended:
            raise self._ended_error(call)

    def _invalid_call(self, call: str, name: object, exc: Exception) -> None:
        """A call's argument is invalid: raise it (on_invalid="raise"), or drop the call and count it."""
        if self._raise_invalid:
            raise exc
        self._invalid.drop(call, name, exc)

    def _lost_record(self, logger: str, exc: Exception) -> None:
        """A log record captured for this run could not be recorded: count it and say why (rate-limited)."""
        self._shipper.count_lost_log_record()
        self._warn_lost.warning(
            "lost",
            "mlobs: run %s: a log record of logger %r was not recorded: %s",
            self._who,
            logger,
            describe_error(exc),
        )

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
            self._invalid_call("log_metric", name, exc)
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
            self._invalid_call("log_metrics", None, exc)
            return
        checked, refused = each_valid(
            [(name, f"metrics[{name!r}]", value) for name, value in items.items()],
            lambda name, where, value: (
                check_name(f"metrics key {name!r}", name),
                check_number(where, value),
            ),
        )
        self._invalid.refused("log_metrics", refused)
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
                params, refused = checked_params(flatten_params("value", value, prefix=name))
        except (TypeError, ValueError) as exc:
            self._invalid_call("log_param", name, exc)
            return
        self._invalid.refused("log_param", refused)
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
            checked, refused = checked_params(flatten_params("params", params))
        except (TypeError, ValueError) as exc:
            self._invalid_call("log_params", None, exc)
            return
        self._invalid.refused("log_params", refused)
        for param in checked:
            self._param(*param)

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
        self._io("log_input", c.IODirection.INPUT, name, value, (c.FIELD_SOURCE, "source", source))

    def log_output(self, name: str, value: Any, destination: str | None = None) -> None:
        """Record an output of the step: any JSON-serialisable value, and where it went.

        ``value`` is checked as in :meth:`log_input`.
        """
        self._io(
            "log_output", c.IODirection.OUTPUT, name, value, (c.FIELD_DESTINATION, "destination", destination)
        )

    def _io(
        self, call: str, direction: c.IODirection, name: str, value: Any, where: tuple[str, str, str | None]
    ) -> None:
        """An input or output; ``where`` is its location's (field, argument, value)."""
        location_field, location_arg, location = where
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
            self._invalid_call(call, name, exc)
            return
        self._emit(c.IO.tag, record)

    def log_profile(self, name: str, data: Any) -> None:
        """Record a baseline profile of a data set (a training or validation set) as part of this run.

        ``data`` is a :class:`pipeline_sdk.drift.Profile`, or anything it profiles: a mapping of
        columns, a pandas DataFrame or an iterable of row mappings.  Its chunks are points of the
        profile stream (:mod:`pipeline_sdk.drift.records`); ``ReadClient.profile(run_id, name)`` reads
        it back.  Needs the ``drift`` extra.
        """
        self._check_open("log_profile")
        from .drift.records import as_profile, profile_records  # noqa: PLC0415 - the optional drift extra

        try:
            check_name("name", name)
            records = profile_records({**self._identity, c.TAG_NAME: name}, as_profile("data", data))
        except (TypeError, ValueError) as exc:
            self._invalid_call("log_profile", name, exc)
            return
        time_ns = _time_ns()
        for index, record in enumerate(records):
            self._emit(c.PROFILE.tag, record, time_ns + index)

    # ---- artifacts and system samples ------------------------------------------------------------

    def log_artifact(
        self, path: str | os.PathLike[str], name: str | None = None, *, uri: str | None = None
    ) -> None:
        """Record a file or a directory the step produced: its name, URI, size, sha256 and media type.

        ``path`` is a local path (or ``file://`` URI), or an ``s3://`` or ``gs://`` URI, recorded
        as a reference and never read; ``name`` defaults to the file's name.  A directory is
        recorded with a manifest of its regular files.  ``uri`` records a local file under the
        URI it was uploaded to (its size and hash are the local file's).  The call only checks
        its arguments and stats the path: the hashing happens in a background thread, and the
        run's end waits for it (at most the flush timeout; what is not done by then is recorded
        without its sha256).  With the local store the bytes are also copied under
        ``MLOBS_HOME/artifacts``, for :meth:`ReadClient.restore_artifact
        <pipeline_sdk.read.ReadClient.restore_artifact>`; sent to Fluentd, only the reference is.
        A path that does not exist, or is neither a file nor a directory, is a ``ValueError``.
        """
        self._check_open("log_artifact")
        try:
            item = artifacts.pending(path, name, uri)
        except (TypeError, ValueError) as exc:
            self._invalid_call("log_artifact", name, exc)
            return
        with self._hasher_lock:
            if self._artifacts_closed:  # the run is ending, or its client closed
                raise self._ended_error("log_artifact")
            if self._hasher is None:
                store = artifact_store(self.client.transport.kind, self.client.home)
                self._hasher = artifacts.BackgroundHasher(self._record_artifact, store)
            hasher = self._hasher
        hasher.submit(item)

    def _record_artifact(self, artifact: artifacts.Artifact) -> None:
        """The hasher's delivery (from its thread): the artifact as a row of the io stream."""
        record, left_out = artifact_record(self._identity, artifact)
        if left_out:
            self._warn_lost.warning(
                "manifest",
                "mlobs: run %s: the manifest of artifact %r (%d files) is longer than a string field "
                "holds, so its event leaves it out; its sha256 still names it%s",
                self._who,
                artifact.name,
                len(artifact.files or ()),
                ", and the local store keeps it whole" if artifact.stored else "",
            )
        self._emit(c.IO.tag, record)

    def close_artifacts(self, timeout: float | None = None) -> artifacts.HasherStats | None:
        """Wait, at most ``timeout`` seconds, until every artifact logged is recorded (None: none was).

        The run's end calls it; what is not hashed by then is recorded without its sha256.
        Returns the hasher's counts; a warning says when any artifact was not hashed or lost.
        """
        with self._hasher_lock:
            hasher, closed = self._hasher, self._artifacts_closed
            self._artifacts_closed = True
        if hasher is None or closed:
            return None if hasher is None else hasher.stats
        stats = hasher.close(timeout)
        if stats.unhashed or stats.lost:
            log.warning(
                "mlobs: run %s: of its artifacts, %d were recorded without their sha256 (unreadable, or "
                "not hashed within %s s) and %d could not be recorded",
                self._who,
                stats.unhashed,
                timeout,
                stats.lost,
            )
        return stats

    def record_system_sample(self, sample: Mapping[str, Any]) -> None:
        """Record a :class:`~pipeline_sdk.system.SystemSampler` sample: a system row, and one per GPU.

        ``run()`` hands it to the run's sampler as ``on_sample``; it is called from the
        sampler's thread, and a failure is the sampler's to count.  Never waits on I/O.
        """
        for time_ns, record in system_rows(self._identity, sample):
            self._queue(c.SYSTEM.tag, time_ns, record)

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
            self._invalid_call("log_record", level, exc)
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
    c.SYSTEM.tag: "record_system_sample",
    c.LOG.tag: "log_record",
    c.RUN.tag: "log_status",
}


# The run of the current thread or task (see pipeline_sdk.run.current_run): run() sets it.
CURRENT_RUN: contextvars.ContextVar[ActiveRun | None] = contextvars.ContextVar(
    "mlobs_current_run", default=None
)

__getattr__ = module_getattr(__name__, {"RunRecorder": "ActiveRun"}, globals())  # deprecated names
