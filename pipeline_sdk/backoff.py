"""Capped exponential backoff with jitter: how long to wait before the next retry.

The SDK's delivery thread (retrying a receiver that is down) and the exporter's watches
(retrying the Kubernetes API) share it: the first delay after a failure is ``first``, each
further failure doubles it up to ``cap``, and a success starts again from ``first``.  The
wait itself is spread by ``jitter`` (0.2: from 80 % to 120 % of the delay), so many clients
that failed together do not retry together.
"""

from __future__ import annotations

import random


class Backoff:
    """``failed()`` gives the next delay (``first``, doubling, at most ``cap``); ``reset()`` on success."""

    def __init__(self, first: float, cap: float, *, jitter: float = 0.2) -> None:
        for name, value in (("first", first), ("cap", cap), ("jitter", jitter)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__} {value!r}")
        if not 0 < first <= cap:
            raise ValueError(f"first={first!r}, cap={cap!r} are invalid: must be 0 < first <= cap")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter={jitter!r} is invalid: must be from 0 to less than 1")
        self.first, self.cap, self.jitter = float(first), float(cap), float(jitter)
        self.delay = 0.0  # the current delay; 0 while not failing

    def failed(self) -> float:
        """One more failure: the delay before the next retry, without jitter."""
        self.delay = min(self.cap, max(self.first, self.delay * 2))
        return self.delay

    def jittered(self) -> float:
        """The current delay spread by the jitter: what to wait."""
        if not self.jitter:
            return self.delay
        return self.delay * random.uniform(1 - self.jitter, 1 + self.jitter)  # noqa: S311 - spreads retries

    def reset(self) -> bool:
        """A success: the next failure waits ``first`` again.  True if it was failing."""
        failing, self.delay = self.delay > 0, 0.0
        return failing
