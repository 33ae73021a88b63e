"""The hand-off every recorder shares: encoded events appended to the shipper's queues.

An :class:`EventWriter` writes through a *host*, the owner of a shipper (a
:class:`~pipeline_sdk.client.Client`), which tells its writers to refuse events once
it closes: an event queued then could never be sent.  The writer needs nothing else
of the host, so it depends on the small :class:`WriterHost` protocol, not on the client.

The recorders (:class:`~pipeline_sdk.recorder.ActiveRun`,
:class:`~pipeline_sdk.service.ServiceRecorder`) build on it; a component that writes
records of its own, such as the pipeline exporter's run records, uses
:meth:`EventWriter.write_at` directly.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from . import contract as c
from .encoding import MAX_EVENT_TIME_NS, pack_entry
from .shipper import Shipper
from .validation import check_int64, check_number, check_tag_value, check_text, escape_text, short_repr

_time_ns = time.time_ns


def _check_string(arg: str, value: object) -> str:
    return escape_text(check_text(arg, value))


_CHECK_FIELD: dict[c.FieldType, Callable[[str, object], object]] = {
    c.FieldType.FLOAT: check_number,
    c.FieldType.INTEGER: check_int64,
    c.FieldType.STRING: _check_string,
}


class WriterHost(Protocol):
    """What an :class:`EventWriter` writes through: a client, or anything that owns a shipper."""

    @property
    def shipper(self) -> Shipper:
        """The shipper whose queues the writer appends to."""
        ...

    def adopt_writer(self, writer: EventWriter) -> None:
        """Remember ``writer``, and call its :meth:`~EventWriter.host_closed` when closing."""
        ...


class EventWriter:
    """Appends encoded events to a host's queues; never waits on I/O.

    Event times are unique and increasing per writer (a clash moves an event on by 1 ns),
    so no two of its events are one InfluxDB point; :meth:`write_at` is the exception, for
    events whose time is a fact of their own.  A queue past its soft limit first lends the
    spooler the GIL (``relieve``); at its bound the event is dropped and counted.
    """

    def __init__(self, host: WriterHost) -> None:
        shipper = host.shipper
        self._shipper = shipper
        self._queues = shipper.queues
        self._soft_limit = shipper.soft_limit
        self._relieve = shipper.relieve
        self._last_ns = 0
        host.adopt_writer(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} to {self._shipper.transport.describe()}>"

    def host_closed(self) -> None:
        """The host is closing: refuse every later event (the same free check as an ended run)."""
        self._soft_limit = 0
        self._relieve = self._refuse_closed

    def _refuse_closed(self, queue: deque[bytes]) -> bool:
        raise RuntimeError(
            f"{self!r} writes through a client that was closed ({self._shipper.transport.describe()}): "
            "record before closing it, or make a new pipeline_sdk.Client()"
        )

    def write_at(self, stream: c.Stream, record: Mapping[str, object], time_ns: int) -> bool:
        """Write one record of ``stream`` at exactly ``time_ns``; False when dropped at the queue's bound.

        For events whose time is a fact of their own (a run record's end, from Kubernetes):
        the same record written twice is the same InfluxDB point.  ``stream`` is one of
        :data:`~pipeline_sdk.contract.STREAMS`; each key of ``record`` one of its tags or
        fields (at least one field), a tag's value a tag value, and a field's value of the
        field's type (a float, an int64, or text, stored escaped); ``time_ns`` nanoseconds
        since the epoch (from 0 to 2**32 seconds, Fluentd's EventTime).  Anything else
        raises here, naming the argument.  Raises ``RuntimeError`` once the host closed.
        """
        checked = _checked_record(stream, record)
        if type(time_ns) is not int:
            raise TypeError(f"time_ns must be an int, got {type(time_ns).__name__} {short_repr(time_ns)}")
        if not 0 <= time_ns <= MAX_EVENT_TIME_NS:
            raise ValueError(
                f"time_ns={time_ns} is invalid: must be from 0 to {MAX_EVENT_TIME_NS} (Fluentd's EventTime)"
            )
        return self._queue(stream.tag, time_ns, checked)

    def _emit(self, tag: str, record: Mapping[str, Any], time_ns: int | None = None) -> bool:
        """Queue one event at ``time_ns`` (default now), made unique; False when dropped (counted)."""
        t = _time_ns() if time_ns is None else time_ns
        if t <= self._last_ns:
            t = self._last_ns + 1
        self._last_ns = t
        return self._queue(tag, t, record)

    def _queue(self, tag: str, time_ns: int, record: Mapping[str, Any]) -> bool:
        queue = self._queues[tag]
        if len(queue) >= self._soft_limit and not self._relieve(queue):
            return False
        queue.append(pack_entry(time_ns, record))
        return True


def _checked_record(stream: object, record: object) -> dict[str, Any]:
    if not isinstance(stream, c.Stream) or c.STREAMS_BY_TAG.get(stream.tag) is not stream:
        raise TypeError(
            f"stream must be one of pipeline_sdk.contract.STREAMS, got {type(stream).__name__} "
            f"{short_repr(stream)}"
        )
    if not isinstance(record, Mapping):
        raise TypeError(f"record must be a mapping, got {type(record).__name__} {short_repr(record)}")
    checked: dict[str, Any] = {}
    for key, value in record.items():
        arg = f"record[{key!r}]"
        if key in stream.tags:
            checked[key] = check_tag_value(arg, value)
        elif key in stream.fields:
            checked[key] = _CHECK_FIELD[stream.fields[key]](arg, value)
        else:
            raise ValueError(
                f"record key {short_repr(key)} is invalid: not a tag or field of stream {stream.tag} "
                f"(its keys: {', '.join(stream.keys)})"
            )
    if not any(key in stream.fields for key in checked):
        raise ValueError(
            f"record is invalid: it has no field of stream {stream.tag} (a point needs one of "
            f"{', '.join(stream.fields)})"
        )
    return checked
