"""A failed run's last words: a short summary in the container's termination message file.

Kubernetes keeps what a container wrote to its termination message file (by default
``/dev/termination-log``, bind-mounted by the kubelet) as ``state.terminated.message`` of its
status, at most 4096 bytes.  The pipeline exporter watches those pods and puts the message in the
failure alert, so the email says *why* a step failed in the step's own words.

When a run fails, ``run()`` writes :func:`summary` of the exception there: its qualified type, its
message and the innermost frame's ``file:line``.  The file is ``MLOBS_TERMINATION_LOG`` when set
(an absolute path, or ``off``), else ``/dev/termination-log`` when it exists and is writable: so
outside a container nothing is written.  Writing never raises; a failure is logged once per file.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Mapping
from pathlib import Path

from . import contract as c
from .config import TERMINATION_LOG
from .outcome import type_name

log = logging.getLogger(__name__)

CUT_MARKER = " …[cut]"  # ends a summary cut to the kubelet's limit
OFF = "off"  # MLOBS_TERMINATION_LOG's value that turns the summary off (config.termination_log)

_warned: set[str] = set()


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - any __str__ may raise; the summary must still be written
        return "<message not printable>"


def summary(exc: BaseException) -> str:
    """``Type: message`` and ``  at file:line in function`` of the innermost frame, as valid UTF-8.

    At most ``TERMINATION_MESSAGE_MAX_BYTES`` bytes of UTF-8; a longer one ends with ``CUT_MARKER``.
    Characters UTF-8 cannot carry (lone surrogates) are written as backslash escapes.
    """
    message = _message(exc)
    kind = type_name(type(exc))
    text = f"{kind}: {message}" if message else kind
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ is not None else []
    if frames:
        inner = frames[-1]
        text += f"\n  at {inner.filename}:{inner.lineno} in {inner.name}"
    data = text.encode("utf-8", "backslashreplace")
    limit = c.TERMINATION_MESSAGE_MAX_BYTES
    if len(data) <= limit:
        return data.decode("utf-8")
    room = limit - len(CUT_MARKER.encode("utf-8"))
    head = data[:room].decode("utf-8", "ignore")  # a character cut in two is dropped whole
    return head + CUT_MARKER


def resolve_path(
    environ: Mapping[str, str] | None = None, default: str | Path = c.DEFAULT_TERMINATION_LOG
) -> Path | None:
    """The file a failed run's summary goes to, or None (off, or not in a container).

    Raises SettingError (a ValueError), naming the variable, when ``MLOBS_TERMINATION_LOG`` is
    neither an absolute path nor ``off``.
    """
    value = TERMINATION_LOG.get(environ)
    if value is not None:
        return None if value == OFF else Path(value)
    path = Path(default)
    return path if path.is_file() and os.access(path, os.W_OK) else None


def write(path: Path, text: str) -> bool:
    """Replace the file's content with ``text``; False (logged once per file) when it cannot."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(text.encode("utf-8", "backslashreplace"))
    except OSError as error:
        if str(path) not in _warned:
            _warned.add(str(path))
            log.warning("mlobs: the run's termination message was not written to %s: %s", path, error)
        return False
    return True


def leave(path: Path, exc: BaseException) -> None:
    """Write summary(exc) to path; never raises (see write)."""
    write(path, summary(exc))
