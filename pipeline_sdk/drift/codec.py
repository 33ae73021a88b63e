"""The binary form of a profile, and its chunks.  Never pickle: every byte is described here.

Profile, format version 1 (integers little-endian, floats IEEE 754 binary64)::

    magic    4 bytes  b"MLPF"
    version  u8       1
    rows     u64      rows profiled
    features u32      how many follow, sorted by name
    then per feature:
      name     u16 length + UTF-8
      kind     u8       0 null only, 1 numeric, 2 categorical
      count    u64      rows seen, nulls included
      nulls    u64
      numeric:     min f64, max f64, mean f64, m2 f64 (sum of squared deviations),
                   discrete u8 (255: more than DISCRETE_MAX distinct values),
                   then that many (value f64, count u64), by value,
                   sketch u32 length + ``kll_floats_sketch.serialize()``
      categorical: sketch u32 length + ``frequent_strings_sketch.serialize()``

The sketches' own serialisations are Apache DataSketches' documented, cross-language formats, so a
profile can also be read outside Python.  Decoding then encoding again keeps every count, moment,
quantile and frequency; the bytes may differ, as a frequent-items sketch can list its items in
another order once deserialised.  A reader refuses another magic, a newer version, a
truncated buffer and bytes left over, with a ``ValueError`` that says which.

Chunks: a profile too big for one string field is split into chunks of at most ``max_bytes``, each::

    magic  4 bytes  b"MLPC"
    version u8      1
    digest 16 bytes BLAKE2b-128 of the whole profile's bytes (which chunks belong together)
    index  u32      0-based
    total  u32      chunks in the profile
    payload         the next slice of the profile's bytes

Nothing is ever cut: the payloads, in index order, are the profile's bytes, and the digest checks
them.  :data:`CHUNK_MAX_BYTES` is the largest chunk whose base64 text fits a string field
(``MAX_TEXT_LENGTH``, 32 KiB, in :mod:`pipeline_sdk.validation`).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence
from typing import TypeVar

import datasketches

from ..validation import MAX_TEXT_LENGTH, short_repr
from .features import CategoricalFeature, Feature, NullFeature, NumericFeature

MAGIC = b"MLPF"
VERSION = 1
CHUNK_MAGIC = b"MLPC"
CHUNK_VERSION = 1
_HEAD = struct.Struct("<4sBQI")
_FEATURE = struct.Struct("<BQQ")
_NUMERIC = struct.Struct("<ddddB")
_DISCRETE = struct.Struct("<dQ")
_LENGTH16 = struct.Struct("<H")
_LENGTH32 = struct.Struct("<I")
_CHUNK = struct.Struct("<4sB16sII")
CHUNK_HEADER_BYTES = _CHUNK.size  # 29
CHUNK_MAX_BYTES = MAX_TEXT_LENGTH // 4 * 3  # 24,576: base64 makes it exactly MAX_TEXT_LENGTH characters
_NOT_DISCRETE = 255
_T = TypeVar("_T")
_KINDS: dict[type, int] = {NullFeature: 0, NumericFeature: 1, CategoricalFeature: 2}


def encode(rows: int, features: dict[str, Feature]) -> bytes:
    """A profile's bytes (format version 1)."""
    out = [_HEAD.pack(MAGIC, VERSION, rows, len(features))]
    for name in sorted(features):
        feature = features[name]
        raw = name.encode("utf-8")
        out += [
            _LENGTH16.pack(len(raw)),
            raw,
            _FEATURE.pack(_KINDS[type(feature)], feature.count, feature.nulls),
        ]
        if isinstance(feature, NumericFeature):
            discrete = feature.discrete
            size = _NOT_DISCRETE if discrete is None else len(discrete)
            out.append(_NUMERIC.pack(feature.min, feature.max, feature.mean, feature._m2, size))
            out += [_DISCRETE.pack(value, count) for value, count in sorted((discrete or {}).items())]
        if not isinstance(feature, NullFeature):
            sketch = feature.sketch.serialize()
            out += [_LENGTH32.pack(len(sketch)), sketch]
    return b"".join(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, size: int, what: str) -> bytes:
        if self.at + size > len(self.data):
            raise ValueError(f"data is not an mlobs profile: truncated in {what} at byte {self.at}")
        chunk = self.data[self.at : self.at + size]
        self.at += size
        return chunk

    def unpack(self, fmt: struct.Struct, what: str) -> tuple[object, ...]:
        return fmt.unpack(self.take(fmt.size, what))


def decode(data: bytes) -> tuple[int, dict[str, Feature]]:
    """The rows and features of a profile's bytes; a ``ValueError`` says what is wrong with them."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes, got {type(data).__name__} {short_repr(data)}")
    reader = _Reader(bytes(data))
    magic = reader.take(4, "the magic")
    if magic != MAGIC:
        raise ValueError(f"data is not an mlobs profile (magic {magic!r}, expected {MAGIC!r})")
    (version,) = reader.unpack(struct.Struct("<B"), "the version")
    if version != VERSION:
        raise ValueError(f"profile format version {version} is not supported (this SDK reads {VERSION})")
    rows, count = reader.unpack(struct.Struct("<QI"), "the header")
    assert isinstance(rows, int) and isinstance(count, int)
    features: dict[str, Feature] = {}
    for _ in range(count):
        (length,) = reader.unpack(_LENGTH16, "a feature name")
        assert isinstance(length, int)
        try:
            name = reader.take(length, "a feature name").decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(
                f"data is not an mlobs profile: a feature name is not UTF-8 (byte {reader.at})"
            ) from None
        kind, total, nulls = reader.unpack(_FEATURE, f"feature {name!r}")
        assert isinstance(total, int) and isinstance(nulls, int)
        features[name] = _decode_feature(reader, name, kind, total, nulls)
    if reader.at != len(reader.data):
        raise ValueError(
            f"data is not an mlobs profile: {len(reader.data) - reader.at} bytes after the last feature"
        )
    return rows, features


def _decode_feature(reader: _Reader, name: str, kind: object, count: int, nulls: int) -> Feature:
    if kind == 0:
        return NullFeature(count, nulls)
    if kind == 1:
        numeric = NumericFeature(count, nulls)
        low, high, mean, m2, size = reader.unpack(_NUMERIC, f"feature {name!r}")
        assert isinstance(size, int)
        numeric.min, numeric.max, numeric.mean, numeric._m2 = float(low), float(high), float(mean), float(m2)  # type: ignore[arg-type]
        numeric.discrete = None
        if size != _NOT_DISCRETE:
            pairs = [reader.unpack(_DISCRETE, f"feature {name!r}") for _ in range(size)]
            numeric.discrete = {float(v): int(c) for v, c in pairs}  # type: ignore[arg-type, call-overload]
        numeric.sketch = _sketch(reader, name, "KLL", datasketches.kll_floats_sketch.deserialize)
        return numeric
    if kind == 2:
        categorical = CategoricalFeature(count, nulls)
        categorical.sketch = _sketch(
            reader, name, "frequent-items", datasketches.frequent_strings_sketch.deserialize
        )
        return categorical
    raise ValueError(f"data is not an mlobs profile: feature {name!r} has unknown kind {kind}")


def _sketch(reader: _Reader, name: str, what: str, deserialize: Callable[[bytes], _T]) -> _T:
    (length,) = reader.unpack(_LENGTH32, f"feature {name!r}")
    assert isinstance(length, int)
    raw = reader.take(length, f"feature {name!r}'s sketch")
    try:
        return deserialize(raw)
    except (RuntimeError, ValueError, IndexError) as exc:
        raise ValueError(f"feature {name!r}: its {what} sketch does not deserialize ({exc})") from None


def split_chunks(data: bytes, max_bytes: int) -> list[bytes]:
    """``data`` as chunks of at most ``max_bytes`` each (header included); see the module docstring."""
    if type(max_bytes) is not int:
        raise TypeError(f"max_bytes must be an int, got {type(max_bytes).__name__} {short_repr(max_bytes)}")
    if max_bytes <= CHUNK_HEADER_BYTES:
        raise ValueError(f"max_bytes={max_bytes} is invalid: must be at least {CHUNK_HEADER_BYTES + 1}")
    payload = max_bytes - CHUNK_HEADER_BYTES
    digest = hashlib.blake2b(data, digest_size=16).digest()
    slices = [data[at : at + payload] for at in range(0, len(data), payload)] or [b""]
    return [
        _CHUNK.pack(CHUNK_MAGIC, CHUNK_VERSION, digest, i, len(slices)) + part
        for i, part in enumerate(slices)
    ]


def join_chunks(chunks: Sequence[bytes]) -> bytes:
    """The bytes :func:`split_chunks` split, from its chunks in any order; nothing missing, nothing twice."""
    if not isinstance(chunks, list | tuple):
        raise TypeError(f"chunks must be a list of bytes, got {type(chunks).__name__}")
    if not chunks:
        raise ValueError("chunks must not be empty")
    parts: dict[int, bytes] = {}
    first: tuple[bytes, int] | None = None
    for position, chunk in enumerate(chunks):
        if not isinstance(chunk, bytes) or len(chunk) < CHUNK_HEADER_BYTES:
            raise ValueError(f"chunks[{position}] is not an mlobs profile chunk")
        magic, version, digest, index, total = _CHUNK.unpack_from(chunk)
        if magic != CHUNK_MAGIC or version != CHUNK_VERSION:
            raise ValueError(
                f"chunks[{position}] is not an mlobs profile chunk (magic {magic!r}, version {version})"
            )
        if first is None:
            first = (digest, total)
        elif (digest, total) != first:
            raise ValueError(f"chunks[{position}] belongs to another profile than chunks[0]")
        if index >= total:
            raise ValueError(f"chunks[{position}] claims index {index} of {total}")
        if index in parts:
            raise ValueError(f"chunk {index} of {total} appears twice (chunks[{position}])")
        parts[index] = chunk[CHUNK_HEADER_BYTES:]
    assert first is not None
    digest, total = first
    missing = [i for i in range(total) if i not in parts]
    if missing:
        shown = ", ".join(map(str, missing[:10]))
        raise ValueError(
            f"chunk {shown} of {total} is missing"
            if len(missing) == 1
            else f"chunks {shown} of {total} are missing"
        )
    data = b"".join(parts[i] for i in range(total))
    if hashlib.blake2b(data, digest_size=16).digest() != digest:
        raise ValueError("reassembled chunks do not match their digest: a chunk was changed")
    return data
