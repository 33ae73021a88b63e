"""How a run ended: its status, and what its end event records of a failure.

A run ends ``succeeded`` (no exception, or ``SystemExit`` with code 0 or None), ``cancelled``
(SIGTERM, as :class:`RunCancelled`, or Ctrl-C) or ``failed``; each end records the run's
duration, and the summary of its system sampler when it had one (:func:`end_fields`).  A
failed run's end also keeps the exception's type and message, and its
traceback: the innermost 30 frames, at most 8 KiB (:data:`TRACEBACK_FRAMES`,
:data:`TRACEBACK_CHARS`); longer text keeps its end, after a marker that says how much was
cut.  Nothing here raises: the type and message are stored with
:func:`~pipeline_sdk.validation.safe_text`, and a traceback that cannot be formatted is
described instead.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import contract as c
from .validation import describe, describe_error, safe_text

if TYPE_CHECKING:
    from .system import Summary

TRACEBACK_FRAMES = 30  # a failed run keeps the innermost frames of its traceback
TRACEBACK_CHARS = 8192  # and at most this many characters of it (its end)


class RunCancelled(SystemExit):
    """Raised in the main thread when SIGTERM arrives during a run.

    It is a ``SystemExit`` with code 128 + signal number, so the process ends with
    the conventional status once the run has recorded ``cancelled`` and flushed.
    """


def run_outcome(
    exc_type: type[BaseException] | None, exc: BaseException | None, duration_ms: float
) -> tuple[c.RunStatus, dict[str, Any]]:
    """The status a run ends with, and the fields of its end event."""
    fields: dict[str, Any] = {c.FIELD_DURATION_MS: duration_ms}
    if _succeeded(exc):
        return c.RunStatus.SUCCEEDED, fields
    if isinstance(exc, (RunCancelled, KeyboardInterrupt)):
        return c.RunStatus.CANCELLED, fields
    failed_type = type(exc) if exc is not None else exc_type
    assert failed_type is not None
    fields[c.FIELD_ERROR_TYPE] = safe_text(type_name(failed_type), 256)
    fields[c.FIELD_ERROR_MESSAGE] = safe_text(exc)
    if exc is not None:
        fields[c.FIELD_TRACEBACK] = traceback_text(exc)
    return c.RunStatus.FAILED, fields


def end_fields(fields: Mapping[str, Any], system: Summary | None) -> dict[str, Any]:
    """The end event's fields: the outcome's (:func:`run_outcome`) and the system summary's, if any."""
    return {**fields, **(system.fields() if system is not None else {})}


def traceback_text(exc: BaseException) -> str:
    """The innermost TRACEBACK_FRAMES frames, at most TRACEBACK_CHARS characters (the end); never raises."""
    try:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-TRACEBACK_FRAMES))
    except Exception as error:  # noqa: BLE001 - the run's end is recorded all the same
        return f"<traceback not formatted: {describe_error(error)}>"
    if len(text) <= TRACEBACK_CHARS:
        return text
    cut = len(text) - TRACEBACK_CHARS
    while True:  # the marker's length depends on the digits of the count it shows
        marker = f"[{cut} characters cut by mlobs]..."
        kept = TRACEBACK_CHARS - len(marker)
        if len(text) - kept == cut:
            return marker + text[cut:]
        cut = len(text) - kept


def type_name(exc_type: type[BaseException]) -> str:
    """``KeyError`` for a builtin, else ``module.QualName``; never raises."""
    qualname = describe(getattr(exc_type, "__qualname__", None) or getattr(exc_type, "__name__", "?"))
    module = getattr(exc_type, "__module__", None)
    return qualname if module in (None, "builtins") else f"{describe(module)}.{qualname}"


def _succeeded(exc: BaseException | None) -> bool:
    if exc is None:
        return True
    if isinstance(exc, SystemExit) and not isinstance(exc, RunCancelled):
        code = exc.code
        return code is None or (isinstance(code, int) and code == 0)
    return False
