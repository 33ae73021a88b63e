"""A failed container's last words, as one line.

Kubernetes keeps what a container wrote to its termination message file (the SDK writes a failed
run's summary there), or with ``terminationMessagePolicy: FallbackToLogsOnError`` the tail of its
log, as ``state.terminated.message``: up to 4096 bytes of free text.  The run record keeps it
whole as one line; the ``error`` label of ``mlobs_pipeline_last_failure_info`` keeps its first
``ERROR_LABEL_MAX`` characters, so a long message never makes a long series.
"""

from __future__ import annotations

import unicodedata

ERROR_LABEL_MAX = 200  # characters of the message on the error label
ELLIPSIS = "…"  # ends a label cut to ERROR_LABEL_MAX


def one_line(message: str | None) -> str:
    """The message with control characters made spaces, runs of whitespace collapsed, trimmed."""
    if not message:
        return ""
    spaced = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in message)
    return " ".join(spaced.split())


def error_label(message: str | None) -> str:
    """one_line(message), cut to ERROR_LABEL_MAX characters (the last one then ELLIPSIS)."""
    line = one_line(message)
    return line if len(line) <= ERROR_LABEL_MAX else line[: ERROR_LABEL_MAX - 1] + ELLIPSIS
