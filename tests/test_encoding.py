"""The hand-built metric entries are exactly what msgpack and fluent-logger's EventTime produce."""

from __future__ import annotations

import struct

import msgpack
from fluent.sender import EventTime
from hypothesis import given
from hypothesis import strategies as st

from pipeline_sdk import contract as c
from pipeline_sdk.encoding import ENTRY_HEAD, NS_PER_S, MetricEncoder, decode_entries, pack_entry

IDENTITY = {c.TAG_RUN_ID: "r-1", c.TAG_PIPELINE: "train", c.TAG_STEP: "fit", c.TAG_ATTEMPT: "1"}
times = st.integers(min_value=0, max_value=2**32 * NS_PER_S - 1)


def reference(time_ns: int, record: dict[str, object]) -> bytes:
    """A generic msgpack encoding: ints packed minimally, so compare decoded, not bytes."""
    return msgpack.packb([EventTime.from_unix_nano(time_ns), record], use_bin_type=True)


@given(time_ns=times, value=st.floats(allow_nan=False, allow_infinity=False), index=st.integers(0, 2**63 - 1))
def test_list_metric_entry_decodes_like_the_generic_one(time_ns: int, value: float, index: int) -> None:
    enc = MetricEncoder(c.LIST_METRIC, IDENTITY, "val/loss")
    entry = enc.entry(time_ns, value, index)
    record = {**IDENTITY, c.TAG_NAME: "val/loss", c.FIELD_VALUE: value, c.FIELD_INDEX: index}
    assert decode_entries(entry) == decode_entries(reference(time_ns, record)) == [(time_ns, record)]
    # the EventTime bytes are fluent-logger's, byte for byte
    ext = EventTime.from_unix_nano(time_ns)
    assert entry[: len(ENTRY_HEAD) + 8] == ENTRY_HEAD + ext.data


@given(time_ns=times, value=st.floats(allow_nan=False, allow_infinity=False))
def test_simple_metric_entry_is_byte_identical_to_msgpack(time_ns: int, value: float) -> None:
    enc = MetricEncoder(c.METRIC, IDENTITY, "acc")
    record = {**IDENTITY, c.TAG_NAME: "acc", c.FIELD_VALUE: value}
    # msgpack packs a Python float as float64 (0xcb), so here the bytes match exactly
    assert enc.entry(time_ns, value) == reference(time_ns, record) == pack_entry(time_ns, record)


def test_event_time_is_nanosecond_ext_type_zero() -> None:
    t = 1_795_334_978_609_664_088
    entry = pack_entry(t, {"a": 1})
    assert entry[:3] == b"\x92\xd7\x00"  # [ fixext8 type 0
    assert struct.unpack(">II", entry[3:11]) == divmod(t, NS_PER_S)
    assert decode_entries(entry) == [(t, {"a": 1})]


def test_long_names_use_a_wider_map_and_still_decode() -> None:
    name = "n" * 250
    enc = MetricEncoder(c.LIST_METRIC, IDENTITY, name)
    [(t, record)] = decode_entries(enc.entry(5 * NS_PER_S, 1.5, 7))
    assert (t, record[c.TAG_NAME], record[c.FIELD_VALUE], record[c.FIELD_INDEX]) == (
        5 * NS_PER_S,
        name,
        1.5,
        7,
    )
