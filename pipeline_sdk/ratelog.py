"""Log lines that cannot flood the log: at most one per key and interval.

A full disk, a receiver that is down, a thousand malformed objects or a loop of invalid
calls must not write a line each.  The first line of a key is logged as it is (it names
what happened); later ones within the interval are counted, and the next line logged for
that key says how many were held back.  The counters of the SDK and the exporter count
every occurrence: the log only says that it happens, and why.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

WARN_EVERY = 10.0  # the SDK's interval: seconds between two lines of one key


class RateLimitedLog:
    """``warning(key, msg, *args)`` (or ``log(key, level, ...)``): logged when ``interval``
    seconds have passed since the last line of ``key``, else counted as held back.

    ``clock`` defaults to ``time.monotonic`` (read at each call).  Thread-safe.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = WARN_EVERY,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
            raise ValueError(f"interval: expected a positive number of seconds, got {interval!r}")
        self._logger = logger
        self._interval = float(interval)
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, key: str, level: int, msg: str, *args: object, exc_info: bool = False) -> bool:
        """Log (and return True), or count the line as held back (and return False)."""
        now = self._clock() if self._clock is not None else time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._held[key] = self._held.get(key, 0) + 1
                return False
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held:
            msg += f" ({held} similar messages suppressed)"
        self._logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def warning(self, key: str, msg: str, *args: object, exc_info: bool = False) -> bool:
        """:meth:`log` at WARNING."""
        return self.log(key, logging.WARNING, msg, *args, exc_info=exc_info)
