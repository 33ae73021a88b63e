"""Fluentd Forward-protocol encoding of events.

An event is an *entry*: the msgpack array ``[time, record]`` where ``time`` is
Fluentd's EventTime (msgpack ext type 0: seconds and nanoseconds, both uint32
big-endian) and ``record`` a map.  Entries of one tag are concatenated into the
``entries`` of a PackedForward message.  The caller encodes its own entry, so the
background threads only move bytes.

Metrics are the hot path (a value per batch, for hundreds of thousands of
batches), so their entries are built by one ``struct.pack`` over a prefix that
holds the run identity and the metric name, packed once per name.  Every other
event goes through msgpack with fluent-logger's ``EventTime``; a test holds the
two paths to the same bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import msgpack
from fluent.sender import EventTime

from . import contract as c

NS_PER_S = 1_000_000_000
MAX_EVENT_TIME_NS = 2**32 * NS_PER_S - 1  # EventTime holds seconds as a uint32: up to early 2106
ENTRY_HEAD = b"\x92\xd7\x00"  # fixarray(2), fixext8 of ext type 0 (EventTime)
_FLOAT64 = b"\xcb"
_INT64 = b"\xd3"


def pack_entry(time_ns: int, record: Mapping[str, Any]) -> bytes:
    """One ``[EventTime, record]`` entry, through msgpack and fluent-logger's EventTime."""
    packed: bytes = msgpack.packb([EventTime.from_unix_nano(time_ns), record], use_bin_type=True)
    return packed


def _map_header(size: int) -> bytes:
    if size < 16:
        return bytes([0x80 | size])
    return b"\xde" + struct.pack(">H", size)


def _metric_record_size(stream: c.Stream) -> int:
    """Keys in a metric record: the identity, the name, the value and, for a list metric, the index."""
    return len(c.IDENTITY_TAGS) + 2 + (1 if stream is c.LIST_METRIC else 0)


class MetricEncoder:
    """Pre-packed layout of the entries of one metric name of one run."""

    __slots__ = ("index_key", "pack", "prefix", "value_key", "with_index")

    def __init__(self, stream: c.Stream, identity: Mapping[str, str], name: str) -> None:
        if stream is c.LIST_METRIC:
            self.with_index = True
        elif stream is c.METRIC:
            self.with_index = False
        else:
            raise ValueError(f"no fast encoder for stream {stream.tag}")
        pairs = [(key, identity[key]) for key in c.IDENTITY_TAGS] + [(c.TAG_NAME, name)]
        prefix = _map_header(_metric_record_size(stream)) + b"".join(
            msgpack.packb(k, use_bin_type=True) + msgpack.packb(v, use_bin_type=True) for k, v in pairs
        )
        self.prefix = prefix
        self.value_key = msgpack.packb(c.FIELD_VALUE) + _FLOAT64
        self.index_key = msgpack.packb(c.FIELD_INDEX) + _INT64
        layout = f">3sII{len(prefix)}s{len(self.value_key)}sd"
        if self.with_index:
            layout += f"{len(self.index_key)}sq"
        self.pack = struct.Struct(layout).pack

    def entry(self, time_ns: int, value: float, index: int | None = None) -> bytes:
        """The entry bytes; the recorder inlines this call on its hot path."""
        sec, nsec = divmod(time_ns, NS_PER_S)
        if self.with_index:
            return self.pack(ENTRY_HEAD, sec, nsec, self.prefix, self.value_key, value, self.index_key, index)
        return self.pack(ENTRY_HEAD, sec, nsec, self.prefix, self.value_key, value)


class EventTimeNs(int):
    """An EventTime decoded to integer nanoseconds (a plain int in an entry is whole seconds)."""


def decode_event_time(code: int, data: bytes) -> Any:
    """msgpack ``ext_hook``: EventTime to :class:`EventTimeNs`; other ext types unchanged."""
    if code == 0 and len(data) == 8:
        sec, nsec = struct.unpack(">II", data)
        return EventTimeNs(sec * NS_PER_S + nsec)
    return msgpack.ExtType(code, data)


def entry_time_ns(time: Any) -> int:
    """Nanoseconds of an entry's time: EventTime, or integer / float seconds."""
    if isinstance(time, EventTimeNs):
        return int(time)
    if isinstance(time, (int, float)) and not isinstance(time, bool):
        return int(time * NS_PER_S)
    raise ValueError(f"bad event time {time!r}")


def decode_entries(entries: bytes) -> list[tuple[int, dict[str, Any]]]:
    """The ``(time_ns, record)`` pairs of a PackedForward ``entries`` blob."""
    unpacker = msgpack.Unpacker(ext_hook=decode_event_time, raw=False, strict_map_key=True)
    unpacker.feed(entries)
    return [(entry_time_ns(time), record) for time, record in unpacker]
