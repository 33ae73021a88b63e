r"""What the ``mlobs`` CLI prints: tables, JSON lines and text, never a control character raw.

What is read back was written by code the reader does not control, so nothing
reaches the terminal as a control character.  Tables, log lines and error
messages show C0 and C1 controls, DEL, line and paragraph separators and bidi
controls escaped (``\x1b``, ``\x9b``, ``\r``, ``\u202e``); a log message's line
breaks (a traceback) start continuation lines indented by four spaces, so no
message can pose as another record.  JSON stays exact: JSON escapes C0 itself,
and DEL, C1 and the rest are written as ``\u`` escapes, which decode to the same
text.  Times are UTC, and say so: ``2026-11-22T10:15:03Z``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

TABLE_BATCH = 1000  # rows whose widths set a streamed table's columns
CELL_MAX = 60  # characters of a table cell; longer text is cut with an ellipsis
CONTINUATION = "    "  # starts each further line of a multi-line log message
TABLE_TIME = "%Y-%m-%dT%H:%M:%SZ"  # a time in a table: UTC to the second (ISO 8601, pasteable into --since)
LOG_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # a log record's time: UTC to the microsecond
WHOLE_PAIRS = ("error", "system")  # keys of write_pairs whose text is shown whole, never cut

# What a terminal acts on or reorders rather than shows: C0, DEL, C1, the line and paragraph
# separators, and the bidi controls (U+061C, U+200E-F, U+202A-E, U+2066-9).
_UNSAFE_OTHER = "\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE_RE = re.compile(f"[\x00-\x1f{_UNSAFE_OTHER}]")
_UNSAFE_BUT_NEWLINE_RE = re.compile(f"[\x00-\x09\x0b-\x1f{_UNSAFE_OTHER}]")
_SHORT_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    short = _SHORT_ESCAPES.get(ch)
    if short is not None:
        return short
    return f"\\x{ord(ch):02x}" if ord(ch) <= 0xFF else f"\\u{ord(ch):04x}"


def visible(text: str) -> str:
    """``text`` with every character a terminal would act on shown as an escape (``\\x1b``, ``\\n``)."""
    return _UNSAFE_RE.sub(_escape, text)


def visible_lines(text: str) -> str:
    """As :func:`visible`, but a line break stays one, the next line indented by CONTINUATION."""
    return _UNSAFE_BUT_NEWLINE_RE.sub(_escape, text).replace("\n", "\n" + CONTINUATION)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def to_json(value: Any) -> str:
    """JSON of ``value``, non-ASCII text as it is but for the characters a terminal acts on.

    json escapes C0 itself; DEL, C1 and the rest of ``_UNSAFE_OTHER`` can only occur
    in its strings, where a ``\\u`` escape decodes to the same character.
    """
    text = json.dumps(value, default=_json_default, ensure_ascii=False, allow_nan=False)
    return _UNSAFE_RE.sub(_json_escape, text)


def cell(value: Any, cut: bool = True) -> str:
    """A value as a table cell: times in UTC to the second (``…Z``), floats to 6 significant digits.

    Text longer than CELL_MAX is cut with an ellipsis, unless not ``cut``.
    """
    if value is None:
        text = "-"
    elif isinstance(value, datetime):
        text = value.astimezone(UTC).strftime(TABLE_TIME)
    elif isinstance(value, float):
        text = "nan" if math.isnan(value) else f"{value:.6g}"
    elif isinstance(value, dict | list):
        text = to_json(value)
    else:
        text = visible(str(value))
    return text if len(text) <= CELL_MAX or not cut else text[: CELL_MAX - 1] + "…"


def write_table(
    rows: Iterable[dict[str, Any]], columns: Sequence[str], out: TextIO, whole: Sequence[str] = ()
) -> int:
    """Print rows as aligned columns, streaming: the first batch of rows sets the widths.

    The cells of the ``whole`` columns are never cut (a URI); the others at CELL_MAX.
    """
    it = iter(rows)
    cut = [col not in whole for col in columns]
    count = 0
    while True:
        batch = [next(it, None) for _ in range(TABLE_BATCH)]
        batch_rows = [r for r in batch if r is not None]
        if count == 0:
            heads = [visible(col) for col in columns]
            widths = [len(head) for head in heads]
            cells = [[cell(r.get(col), k) for col, k in zip(columns, cut, strict=True)] for r in batch_rows]
            for line in cells:
                widths = [max(w, len(v)) for w, v in zip(widths, line, strict=True)]
            out.write("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip() + "\n")
        else:
            cells = [[cell(r.get(col), k) for col, k in zip(columns, cut, strict=True)] for r in batch_rows]
        for line in cells:
            out.write("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() + "\n")
        count += len(batch_rows)
        if len(batch_rows) < TABLE_BATCH:
            return count


def write_pairs(pairs: Iterable[tuple[str, Any]], out: TextIO) -> None:
    """``key  value`` lines, keys aligned, a None value left out (WHOLE_PAIRS shown whole)."""
    items = list(pairs)
    width = max((len(k) for k, _ in items), default=0)
    for key, value in items:
        if value is not None:
            out.write(f"{key.ljust(width)}  {cell(value) if key not in WHOLE_PAIRS else visible(value)}\n")


def write_section(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str], out: TextIO) -> None:
    out.write(f"\n{title}:\n")
    if rows:
        write_table(rows, columns, out)
    else:
        out.write("(none)\n")


def write_text_block(title: str, text: str, last_lines: int, out: TextIO) -> None:
    """A multi-line text (a traceback) under ``title``, indented, its last ``last_lines`` lines only."""
    lines = text.splitlines()
    out.write(f"\n{title}:\n")
    if len(lines) > last_lines:
        out.write(f"{CONTINUATION}({len(lines) - last_lines} earlier lines not shown; --json has them all)\n")
    for line in lines[-last_lines:]:
        out.write(f"{CONTINUATION}{visible(line)}\n")
