"""When to try resuming a dropped session again (no I/O, no clock: time is passed in)."""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Backoff"]

#: The first attempt is immediate, then 0.1 s, 0.2 s, 0.4 s ... at most 2 s
#: (each +-20% at random, so that clients dropped together do not come back together).
FIRST_DELAY = 0.1
MAX_DELAY = 2.0
JITTER = 0.2


class Backoff:
    """The delays between the resume attempts of one drop, within ``window`` seconds.

    ``now`` is when the drop was noticed; attempts that would start after
    ``now + window`` are not made.
    """

    def __init__(self, window: float, now: float, *, rng: random.Random | None = None) -> None:
        self.window = window
        self.deadline = now + window
        #: Attempts that failed so far.
        self.attempts = 0
        self._uniform: Callable[[float, float], float] = (
            rng.uniform if rng is not None else random.uniform
        )

    def failed(self, now: float) -> float | None:
        """An attempt failed at ``now``: the delay before the next, or ``None`` to give up."""
        self.attempts += 1
        delay = min(MAX_DELAY, FIRST_DELAY * 2.0 ** (self.attempts - 1))
        delay *= self._uniform(1 - JITTER, 1 + JITTER)
        if now + delay >= self.deadline:
            return None
        return delay
