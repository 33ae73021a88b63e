"""What a recording call with an invalid argument does: raise at the call, or drop it.

``on_invalid="raise"`` (the default, from ``MLOBS_ON_INVALID``) raises at the call;
``"drop"`` records nothing of that call (of a batch, only its invalid entries), counts it
in ``Client.stats().dropped_invalid`` and logs why, at most one warning every 10 seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from . import config
from .ratelog import RateLimitedLog
from .validation import describe, short_repr

log = logging.getLogger("mlobs")


def check_on_invalid(arg: str, value: object) -> str:
    """``"raise"`` or ``"drop"`` (any case): what a recording call with an invalid argument does."""
    if not isinstance(value, str):
        raise TypeError(f"{arg} must be 'raise' or 'drop', got {type(value).__name__} {short_repr(value)}")
    try:
        return config.on_invalid(value)
    except ValueError as exc:
        raise ValueError(f"{arg}={short_repr(value)} is invalid: {exc}") from None


class InvalidCalls:
    """One run's policy for invalid calls, and what it dropped: ``count`` is told of each drop."""

    def __init__(self, mode: str | None, who: str, count: Callable[[], None]) -> None:
        self.raises = mode == "raise"
        self.dropped = 0
        self._who = who
        self._count = count
        self._warn = RateLimitedLog(log)

    def drop(self, call: str, name: object, exc: Exception) -> None:
        """on_invalid="drop": count the refused call and say why (rate-limited)."""
        self._count()
        self.dropped += 1
        shown = f"{call}({'' if name is None else short_repr(name)})"
        self._warn.warning(
            "invalid",
            "mlobs: run %s: %s dropped (on_invalid='drop'): %s (%d dropped so far)",
            self._who,
            shown,
            describe(exc),
            self.dropped,
        )

    def refused(self, call: str, refused: Sequence[tuple[Any, Exception]]) -> None:
        """Entries of a batch that were refused: raise the first, or drop each."""
        if refused and self.raises:
            raise refused[0][1]
        for name, exc in refused:
            self.drop(call, name, exc)
