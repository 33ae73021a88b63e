"""A profile as points of the contract's profile stream, and the profiles those points hold.

A profile is written as one point per chunk of :meth:`Profile.to_chunks`: the chunk's base64 text
(at most 32,768 characters, the longest string field), its index, the chunk count, the rows the
profile summarises and the hex digest of the whole profile, which every chunk of it repeats.  The
chunks of one profile are points at the profile's time plus their index in nanoseconds, so they are
distinct points of one series.  A reader groups points by series and digest, and a group holds a
profile once all of its chunks are there; a group still missing one (in flight, or lost) is left out
and counted (:class:`Assembled`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import contract as c
from .codec import CHUNK_HEADER_BYTES
from .profile import Profile

PROFILE_FIELDS = (c.FIELD_CHUNK, c.FIELD_INDEX, c.FIELD_TOTAL, c.FIELD_ROWS, c.FIELD_DIGEST)
_DIGEST = slice(5, 21)  # the BLAKE2b-128 digest in a chunk's header (see codec)


def as_profile(arg: str, data: object) -> Profile:
    """``data`` as a profile: a Profile, a mapping of columns, a pandas DataFrame or an iterable of rows."""
    if isinstance(data, Profile):
        return data
    if isinstance(data, Mapping):
        return Profile.from_columns(data)
    if type(data).__name__ == "DataFrame" and hasattr(data, "columns"):
        return Profile.from_frame(data)
    if isinstance(data, str | bytes) or not isinstance(data, Iterable):
        raise TypeError(
            f"{arg} must be a drift.Profile, a mapping of columns, a pandas DataFrame or an iterable "
            f"of row mappings, got {type(data).__name__}"
        )
    return Profile.from_rows(data)


def profile_records(tags: Mapping[str, str], profile: Profile) -> list[dict[str, Any]]:
    """The points of ``profile``, in chunk order, each carrying ``tags``."""
    chunks = profile.to_chunks()
    digest = chunks[0][_DIGEST].hex()
    return [
        {
            **tags,
            c.FIELD_CHUNK: base64.b64encode(chunk).decode("ascii"),
            c.FIELD_INDEX: index,
            c.FIELD_TOTAL: len(chunks),
            c.FIELD_ROWS: profile.rows,
            c.FIELD_DIGEST: digest,
        }
        for index, chunk in enumerate(chunks)
    ]


@dataclass
class Assembled:
    """The profiles whole in a set of points, newest first, and the groups that were not whole."""

    profiles: list[tuple[int, Mapping[str, str], Profile]] = field(default_factory=list)  # (time_ns, tags, .)
    incomplete: int = 0  # groups with a chunk missing (in flight or lost)
    corrupt: int = 0  # groups whose chunks do not decode to a profile


def assemble(points: Iterable[tuple[int, Mapping[str, str], Mapping[str, Any]]]) -> Assembled:
    """Group ``(time_ns, tags, fields)`` points by series and digest; decode the whole groups."""
    groups: dict[tuple[tuple[tuple[str, str], ...], str], dict[str, Any]] = {}
    for time_ns, tags, fields in points:
        digest = fields.get(c.FIELD_DIGEST)
        index, total = fields.get(c.FIELD_INDEX), fields.get(c.FIELD_TOTAL)
        text = fields.get(c.FIELD_CHUNK)
        if not isinstance(digest, str) or not isinstance(text, str) or index is None or total is None:
            continue
        key = (tuple(sorted(tags.items())), digest)
        group = groups.setdefault(key, {"time": time_ns, "tags": tags, "total": int(total), "chunks": {}})
        group["time"] = min(group["time"], time_ns)
        group["chunks"][int(index)] = text
    out = Assembled()
    for group in groups.values():
        chunks: dict[int, str] = group["chunks"]
        if len(chunks) != group["total"] or set(chunks) != set(range(group["total"])):
            out.incomplete += 1
            continue
        try:
            raw = [base64.b64decode(chunks[i], validate=True) for i in range(group["total"])]
            if any(len(chunk) <= CHUNK_HEADER_BYTES for chunk in raw):
                raise ValueError("a chunk has no payload")
            profile = Profile.from_chunks(raw)
        except (ValueError, binascii.Error):
            out.corrupt += 1
            continue
        out.profiles.append((group["time"], group["tags"], profile))
    out.profiles.sort(key=lambda item: item[0], reverse=True)
    return out
