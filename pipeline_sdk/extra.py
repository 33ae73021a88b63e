"""A log record's ``extra`` as bounded JSON text, and the bounds of a log record's other parts.

:func:`encode_extra` never raises: the log handler and the run's capture call it on paths
that must not.  What cannot be stored as it is is stored as a marker that says why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from . import contract as c
from .validation import (
    MAX_TEXT_LENGTH,
    describe_error,
    escape_surrogates,
    json_dumps,
    safe_text,
    truncate_text,
)

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
