"""A stdlib ``logging`` handler whose records carry the run's identity.

Attach it to any logger (``run()`` attaches one to the root logger for the
duration of the run).  Each record keeps its level, its logger name, its
formatted message (with the traceback when there is one) and its structured
extras (``logger.info("...", extra={"epoch": 3})``), stored as a JSON object.
"""

from __future__ import annotations

import logging

from .recorder import RunRecorder
from .validation import MAX_TEXT_LENGTH, truncate_text

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_OWN_LOGGER_PREFIX = "mlobs"  # the SDK's own warnings: never fed back into the queue


class RunLogHandler(logging.Handler):
    """Sends log records to a run; it never raises into the code that logs."""

    def __init__(self, recorder: RunRecorder, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.recorder = recorder
        self.setFormatter(logging.Formatter("%(message)s"))

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name == _OWN_LOGGER_PREFIX or name.startswith(_OWN_LOGGER_PREFIX + "."):
            return False
        return bool(super().filter(record))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = truncate_text(self.format(record), MAX_TEXT_LENGTH)
            extra = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}
            self.recorder.log_record(record.levelname, message, record.name, extra or None)
        except Exception:  # noqa: BLE001 - logging's contract: report through handleError, never raise
            self.handleError(record)
