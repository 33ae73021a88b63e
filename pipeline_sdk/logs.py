"""A run's log records: captured in the context that logs them, and the console left as it is.

**What a run captures.**  During ``with run(...)`` (or a function ``run()`` decorates), every
stdlib ``logging`` record at or above the run's ``log_level`` (argument of ``run()``, else
``MLOBS_LOG_LEVEL``, else INFO) is recorded with the run's identity, if it is logged in the
run's *context*: ``current_run()`` when the record is logged.  So two runs in two threads
each get their own lines.  A thread started inside a run belongs to it only when it runs in a
copy of the run's context (``ctx = contextvars.copy_context()``, then
``Thread(target=ctx.run, args=(work,))``); a plain new thread starts with an empty context and
its records go to no run.  asyncio tasks copy the context when they are created, so a task
started inside a run is in it.  A nested run takes over until it ends (with
``capture_logs=False`` its records go nowhere); records logged after a run has ended (by a
thread that outlives it) are not recorded.

Levels you set on loggers below the root still apply (``logging.getLogger("httpx")
.setLevel(WARNING)`` keeps its INFO lines out of the run too); the root logger's level does
not: a run captures INFO even where the root is at WARNING, as ``logging`` is configured by
default.  Records of the SDK's own ``mlobs`` loggers are never captured.  Each record keeps its
level, its logger name, its message (with the traceback when there is one) and its extras
(``logger.info("...", extra={"epoch": 3})``), stored as a JSON object.

**What your console shows does not change.**  Your handlers get exactly the records they get
without mlobs, whatever the levels of your loggers and handlers: mlobs changes no level,
adds no handler (so ``logging.basicConfig()`` inside a run still configures logging, and a
script that configures nothing still prints warnings through logging's last resort), and
touches no record a handler sees.  How: while at least one run captures, two methods of
``logging.Logger`` are wrapped (and put back when the last such run ends):

* ``isEnabledFor(level)`` is also true, *in a capturing run's context*, for the levels the
  run captures on a logger whose level is inherited from the root.  Without that, logging
  would never create an INFO record under a root at WARNING.  It is the one visible effect:
  code that asks ``isEnabledFor`` inside a run learns that the run wants those records;
* ``callHandlers(record)``, which logging calls once per record after the logger's own
  filters, records it into the run and then calls the handlers, as before, unless the record
  exists only because of the run (the logger's own level would not have let it through).

Changing the root's level instead would show records your console never showed; adding a
handler to the root would turn ``basicConfig()`` into a no-op and silence the last resort.
One limit: a record handed to ``Logger.handle()`` directly, below that logger's level, in a
capturing run's context is taken for one the run asked for (recorded, not shown).

A record is never lost for what it holds: a message that cannot be formatted is stored as a
description of the call, text that is not valid Unicode with backslash escapes, an extra that
cannot be encoded as a marker (see :func:`~pipeline_sdk.extra.encode_extra`), and a level
name that cannot be a tag as ``Level <number>``.  Should recording fail all the same, the
record is counted in ``Client.stats().dropped_log_records`` and a warning says why (at most
one every 10 seconds): logging never raises into the code that logs.

:class:`RunLogHandler` records one logger's records into one run, in any context, for those
who attach it by hand.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .extra import MAX_LEVEL_LENGTH
from .recorder import CURRENT_RUN, ActiveRun
from .validation import check_tag_value, describe_error, short_repr

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_OWN_LOGGER_PREFIX = "mlobs"  # the SDK's own warnings: never fed back into the queue
_FORMATTER = logging.Formatter()  # formats tracebacks and stacks, as logging's default does


def _own(name: str) -> bool:
    return name == _OWN_LOGGER_PREFIX or name.startswith(_OWN_LOGGER_PREFIX + ".")


class RunLogHandler(logging.Handler):
    """Sends the records of the logger it is attached to into one run; it never raises into the code
    that logs.  (``run()`` does not need it: it captures its context's records by itself.)"""

    def __init__(self, recorder: ActiveRun, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.recorder = recorder
        self.lost_records = 0  # records that could not be recorded (each one reported by handleError)

    def filter(self, record: logging.LogRecord) -> bool:
        return not _own(record.name) and bool(super().filter(record))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record_into(self.recorder, record)
        except Exception:  # noqa: BLE001 - logging's contract: report through handleError, never raise
            self.lost_records += 1
            self.recorder.client.shipper.count_lost_log_record()  # and in Client.stats()
            self.handleError(record)


def record_into(recorder: ActiveRun, record: logging.LogRecord) -> None:
    """Record ``record`` into ``recorder``'s run; the record itself is left as it was."""
    recorder.log_record(_level(record), _message(record), record.name, _extra(record))


def _level(record: logging.LogRecord) -> str:
    try:
        return check_tag_value("level", record.levelname, MAX_LEVEL_LENGTH)
    except (TypeError, ValueError):  # a custom level name that cannot be a tag (a line break, ...)
        return f"Level {record.levelno}"


def _message(record: logging.LogRecord) -> str:
    """The message as ``logging.Formatter("%(message)s")`` formats it, without caching anything on
    the record (``exc_text`` is the user's formatters' to set)."""
    try:
        text = record.getMessage()
    except Exception as exc:  # noqa: BLE001 - the call is kept, described, rather than lost
        text = (
            f"<unformattable log message {short_repr(record.msg)} with args {short_repr(record.args)}: "
            f"{describe_error(exc)}>"
        )
    extras = []
    try:
        if record.exc_info:
            extras.append(_FORMATTER.formatException(record.exc_info))
        elif record.exc_text:
            extras.append(record.exc_text)
        if record.stack_info:
            extras.append(_FORMATTER.formatStack(record.stack_info))
    except Exception as exc:  # noqa: BLE001 - the message is kept, and why its traceback is not
        extras.append(f"<traceback not formatted: {describe_error(exc)}>")
    for extra in extras:
        if extra:
            text = (text if text.endswith("\n") else text + "\n") + extra
    return text


def _extra(record: logging.LogRecord) -> dict[str, object] | None:
    extra = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}
    return extra or None


# ---- capture per context ---------------------------------------------------------------------------


class _Capturing:
    """The runs that capture (changed under ``lock``, read without it)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.levels: dict[ActiveRun, int] = {}  # each run, and the lowest level it captures
        self.lowest = _NO_LEVEL  # the lowest of those levels: below it, no run wants a record

    def changed(self) -> None:
        self.lowest = min(self.levels.values(), default=_NO_LEVEL)


_NO_LEVEL = logging.CRITICAL + 1
_capturing = _Capturing()


def capture(recorder: ActiveRun, level: int) -> None:
    """Capture the records at ``level`` and above logged while ``recorder`` is the current run."""
    with _capturing.lock:
        _capturing.levels[recorder] = level
        _capturing.changed()
        for hook in _HOOKS:
            hook.install()


def release(recorder: ActiveRun) -> None:
    """Stop capturing for ``recorder``; the last run to stop puts ``logging.Logger`` back."""
    with _capturing.lock:
        _capturing.levels.pop(recorder, None)
        _capturing.changed()
        if not _capturing.levels:
            for hook in _HOOKS:
                hook.uninstall()


class _Hook:
    """One method of ``logging.Logger``, wrapped while runs capture."""

    def __init__(self, name: str, replacement: Callable[..., Any]) -> None:
        self.name = name
        self.replacement = replacement
        self.original: Any = getattr(logging.Logger, name)
        self.installed = False

    def install(self) -> None:
        if not self.installed:
            self.original = getattr(logging.Logger, self.name)
            setattr(logging.Logger, self.name, self.replacement)
            self.installed = True

    def uninstall(self) -> None:
        # Someone who wrapped it after us calls ours: leave ours in place (it does nothing while no
        # run captures) rather than remove their wrapper.
        if self.installed and getattr(logging.Logger, self.name) is self.replacement:
            setattr(logging.Logger, self.name, self.original)
            self.installed = False


def _is_enabled_for(self: logging.Logger, level: int) -> bool:
    if _ENABLED.original(self, level):
        return True
    if level < _capturing.lowest:  # the common case, logger.debug() in a run at INFO: decided at once
        return False
    recorder = CURRENT_RUN.get()
    if recorder is None:
        return False
    floor = _capturing.levels.get(recorder)
    return floor is not None and level >= floor and _inherits_the_root_level(self, level)


def _inherits_the_root_level(logger: logging.Logger, level: int) -> bool:
    """Whether only the root's level keeps ``level`` from ``logger`` (not one the user set below it)."""
    if logger.disabled or logger.manager.disable >= level or _own(logger.name):
        return False
    node: logging.Logger | None = logger
    while node is not None and node.parent is not None:  # the root is the one without a parent
        if node.level:
            return False
        node = node.parent
    return True


def _call_handlers(self: logging.Logger, record: logging.LogRecord) -> None:
    recorder = CURRENT_RUN.get()
    floor = _capturing.levels.get(recorder) if recorder is not None else None
    if recorder is None or floor is None:
        _CALLS.original(self, record)
        return
    try:
        if _ENABLED.original(self, record.levelno):  # the user's own logging lets it through
            _CALLS.original(self, record)
    finally:
        if record.levelno >= floor and not _own(record.name):
            _capture(recorder, record)


def _capture(recorder: ActiveRun, record: logging.LogRecord) -> None:
    try:
        record_into(recorder, record)
    except Exception as exc:  # noqa: BLE001 - never into the code that logs: counted and said
        recorder._lost_record(record.name, exc)


_ENABLED = _Hook("isEnabledFor", _is_enabled_for)
_CALLS = _Hook("callHandlers", _call_handlers)
_HOOKS = (_ENABLED, _CALLS)
