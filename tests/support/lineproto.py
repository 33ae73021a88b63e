"""A strict reader of one line of InfluxDB line protocol, following InfluxDB's escaping rules.

Measurement: ``\\,`` and ``\\ `` are escapes.  Tag keys, tag values and field keys:
``\\,``, ``\\=`` and ``\\ ``.  String field values are double-quoted, with ``\\"`` and
``\\\\``.  Any other backslash is a literal backslash.  A raw line break ends the
point, so a line that holds one is not one point.
"""

from __future__ import annotations

from typing import Any


class LineProtocolError(ValueError):
    pass


def _read_escaped(line: str, pos: int, stops: str, escapable: str) -> tuple[str, int]:
    out = []
    while pos < len(line):
        ch = line[pos]
        if ch == "\\" and pos + 1 < len(line) and line[pos + 1] in escapable:
            out.append(line[pos + 1])
            pos += 2
            continue
        if ch in stops:
            break
        out.append(ch)
        pos += 1
    return "".join(out), pos


def _read_field_value(line: str, pos: int) -> tuple[Any, int]:
    if line[pos] == '"':
        out = []
        pos += 1
        while True:
            if pos >= len(line):
                raise LineProtocolError("unterminated string field")
            ch = line[pos]
            if ch == "\\" and pos + 1 < len(line) and line[pos + 1] in '"\\':
                out.append(line[pos + 1])
                pos += 2
                continue
            if ch == '"':
                return "".join(out), pos + 1
            out.append(ch)
            pos += 1
    end = pos
    while end < len(line) and line[end] not in ", ":
        end += 1
    raw = line[pos:end]
    if raw.endswith("i"):
        value: Any = int(raw[:-1])
        if not -(2**63) <= value < 2**63:
            raise LineProtocolError(f"integer out of range: {raw}")
    elif raw in ("t", "T", "true", "True", "TRUE"):
        value = True
    elif raw in ("f", "F", "false", "False", "FALSE"):
        value = False
    else:
        value = float(raw)
    return value, end


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, Any], int | None]:
    """(measurement, tags, fields, timestamp) of one point; raises LineProtocolError."""
    if "\n" in line or "\r" in line:
        raise LineProtocolError("a raw line break splits the point")
    measurement, pos = _read_escaped(line, 0, ", ", ", ")
    tags: dict[str, str] = {}
    while pos < len(line) and line[pos] == ",":
        key, pos = _read_escaped(line, pos + 1, "=", ",= ")
        if pos >= len(line) or line[pos] != "=":
            raise LineProtocolError("tag without '='")
        value, pos = _read_escaped(line, pos + 1, ", ", ",= ")
        if not key or not value:
            raise LineProtocolError("empty tag key or value")
        tags[key] = value
    if pos >= len(line) or line[pos] != " ":
        raise LineProtocolError("no field set")
    fields: dict[str, Any] = {}
    pos += 1
    while True:
        key, pos = _read_escaped(line, pos, "=", ",= ")
        if pos >= len(line) or line[pos] != "=":
            raise LineProtocolError("field without '='")
        fields[key], pos = _read_field_value(line, pos + 1)
        if pos < len(line) and line[pos] == ",":
            pos += 1
            continue
        break
    timestamp = None
    if pos < len(line):
        if line[pos] != " ":
            raise LineProtocolError(f"unexpected {line[pos:]!r}")
        timestamp = int(line[pos + 1 :])
    if not fields:
        raise LineProtocolError("no fields")
    return measurement, tags, fields, timestamp
