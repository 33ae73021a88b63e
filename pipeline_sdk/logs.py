"""A stdlib ``logging`` handler whose records carry the run's identity.

Attach it to any logger (``run()`` attaches one to the root logger for the
duration of the run).  Each record keeps its level, its logger name, its
formatted message (with the traceback when there is one) and its structured
extras (``logger.info("...", extra={"epoch": 3})``), stored as a JSON object.

A record is never lost for what it holds: a message that cannot be formatted
is stored as a description of the call, text that is not valid Unicode with
backslash escapes, an extra that cannot be encoded as a marker (see
:func:`~pipeline_sdk.recorder.encode_extra`), and a level name that cannot be
a tag as ``Level <number>``.  Should recording fail all the same, the handler
counts the record in ``lost_records`` and reports it through logging's own
``handleError``: it never raises into the code that logs.
"""

from __future__ import annotations

import logging

from .recorder import MAX_LEVEL_LENGTH, RunRecorder
from .validation import check_tag_value, describe_error, short_repr

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
        self.lost_records = 0  # records that could not be recorded (each one reported by handleError)
        self.setFormatter(logging.Formatter("%(message)s"))

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name == _OWN_LOGGER_PREFIX or name.startswith(_OWN_LOGGER_PREFIX + "."):
            return False
        return bool(super().filter(record))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.recorder.log_record(_level(record), _message(self, record), record.name, _extra(record))
        except Exception:  # noqa: BLE001 - logging's contract: report through handleError, never raise
            self.lost_records += 1
            self.recorder.client.shipper.count_lost_log_record()  # and in Client.stats()
            self.handleError(record)


def _level(record: logging.LogRecord) -> str:
    try:
        return check_tag_value("level", record.levelname, MAX_LEVEL_LENGTH)
    except (TypeError, ValueError):  # a custom level name that cannot be a tag (a line break, ...)
        return f"Level {record.levelno}"


def _message(handler: logging.Handler, record: logging.LogRecord) -> str:
    try:
        return handler.format(record)
    except Exception as exc:  # noqa: BLE001 - the call is kept, described, rather than lost
        return (
            f"<unformattable log message {short_repr(record.msg)} with args {short_repr(record.args)}: "
            f"{describe_error(exc)}>"
        )


def _extra(record: logging.LogRecord) -> dict[str, object] | None:
    extra = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}
    return extra or None
