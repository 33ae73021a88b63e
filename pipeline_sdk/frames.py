"""The spool's frame format: one spooled message, written and read back.

A frame is a header ``magic, tag length, entries length, event count, crc32`` (big-endian,
15 bytes) followed by the tag and the PackedForward ``entries``.  Its chunk id (for the
Forward protocol's ack) is derived from the spool's owner, segment and offset, so a resend
after a crash carries the same id.  A frame that fails its checks is :class:`SpoolCorrupt`;
:func:`next_intact_frame` finds where the next intact one starts.  Consecutive frames of one
tag are delivered as one :class:`Chunk`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass

HEADER = struct.Struct(">2sBIII")  # magic, tag length, entries length, count, crc32
MAGIC = b"MF"


class SpoolCorrupt(Exception):
    """A segment holds bytes that are not a whole, intact frame."""


@dataclass(frozen=True)
class Frame:
    """One spooled message: ``count`` events of one tag, and where it sits on disk."""

    tag: str
    count: int
    entries: bytes
    chunk_id: str  # base64 of 128 bits, as the Forward protocol's ``chunk`` option wants
    segment: int
    end: int  # offset just past this frame in its segment


_CRC_PIECE = 4096  # below zlib's 5 KiB threshold for releasing the GIL


def crc32_holding_gil(data: bytes, crc: int = 0) -> int:
    """zlib.crc32 in pieces small enough that zlib keeps the GIL.

    The spooler runs while the caller holds the GIL in a tight loop; every release
    and re-acquire costs the spooler a whole switch interval (5 ms), so it does its
    CPU work in one hold and releases the GIL only for the write.
    """
    view = memoryview(data)
    for start in range(0, len(view), _CRC_PIECE):
        crc = zlib.crc32(view[start : start + _CRC_PIECE], crc)
    return crc


@dataclass(frozen=True)
class Chunk:
    """Consecutive frames of one tag, delivered (and acknowledged) as one Forward message."""

    tag: str
    frames: tuple[Frame, ...]
    count: int
    chunk_id: str  # the frame's id, or one derived from the first and last frames'

    @classmethod
    def of(cls, frames: list[Frame]) -> Chunk:
        if len(frames) == 1:
            chunk_id = frames[0].chunk_id
        else:
            both = f"{frames[0].chunk_id}+{frames[-1].chunk_id}".encode()
            chunk_id = base64.b64encode(hashlib.blake2b(both, digest_size=16).digest()).decode()
        return cls(frames[0].tag, tuple(frames), sum(f.count for f in frames), chunk_id)

    @property
    def entries(self) -> list[bytes]:
        return [f.entries for f in self.frames]


def frame_bytes(tag: str, count: int, entries: bytes) -> list[bytes]:
    """The header and body of a frame, ready for ``os.pwritev``."""
    raw_tag = tag.encode()
    crc = crc32_holding_gil(entries, zlib.crc32(raw_tag))
    return [HEADER.pack(MAGIC, len(raw_tag), len(entries), count, crc), raw_tag, entries]


def read_frame(fd: int, offset: int, limit: int, *, owner: str, segment: int, verify: bool) -> Frame:
    """The frame at ``offset`` of a segment file (its bytes end at ``limit``); its checksum checked if
    ``verify``.  Raises :class:`SpoolCorrupt`, or ``OSError`` when the read fails."""
    header = os.pread(fd, min(limit - offset, HEADER.size), offset)
    if len(header) < HEADER.size or offset + HEADER.size > limit:
        raise SpoolCorrupt("truncated frame header")
    magic, tag_len, entries_len, count, crc = HEADER.unpack(header)
    if magic != MAGIC:
        raise SpoolCorrupt("bad magic")
    end = offset + HEADER.size + tag_len + entries_len
    if end > limit:
        raise SpoolCorrupt("truncated frame")
    body = os.pread(fd, tag_len + entries_len, offset + HEADER.size)
    if len(body) != tag_len + entries_len:
        raise SpoolCorrupt("truncated frame body")
    if verify and zlib.crc32(body) != crc:
        raise SpoolCorrupt("checksum mismatch")
    try:
        tag = body[:tag_len].decode()
    except UnicodeDecodeError:
        raise SpoolCorrupt("tag is not UTF-8") from None
    digest = hashlib.blake2b(f"{owner}/{segment}/{offset}".encode(), digest_size=16).digest()
    return Frame(
        tag=tag,
        count=count,
        entries=body[tag_len:],
        chunk_id=base64.b64encode(digest).decode(),
        segment=segment,
        end=end,
    )


def next_intact_frame(fd: int, offset: int, limit: int, *, owner: str, segment: int) -> int:
    """Offset of the first intact frame (checksum verified) after a corrupt one at ``offset``;
    ``limit`` when there is none."""
    try:
        data = os.pread(fd, limit - offset, offset)
    except OSError:
        return limit
    at = data.find(MAGIC, 1)
    while at != -1:
        try:
            read_frame(fd, offset + at, limit, owner=owner, segment=segment, verify=True)
        except SpoolCorrupt:
            at = data.find(MAGIC, at + 1)
            continue
        except OSError:
            return limit
        return offset + at
    return limit
