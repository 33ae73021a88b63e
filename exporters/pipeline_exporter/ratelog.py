"""Log lines that cannot flood the log: at most one per key and interval.

A thousand malformed objects, or a flood of new pipeline labels, must not write a
thousand lines.  The first occurrence is logged as it is (it names the object);
later ones within the interval are counted, and the next line logged says how many
were held back.  The counters of the exporter count every occurrence.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class RateLimitedLog:
    """``warning(key, msg, *args)``: logged when ``interval`` seconds have passed for ``key``."""

    def __init__(
        self, logger: logging.Logger, interval: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
            raise ValueError(f"interval: expected a positive number of seconds, got {interval!r}")
        self._logger = logger
        self._interval = float(interval)
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object, exc_info: bool = False) -> bool:
        """Log (and return True), or count the line as held back (and return False)."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._held[key] = self._held.get(key, 0) + 1
                return False
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held:
            msg += f" ({held} more like it in the last {self._interval:.0f} s)"
        self._logger.warning(msg, *args, exc_info=exc_info)
        return True
