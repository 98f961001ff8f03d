"""A log line for an event a peer or the load decides the rate of.

A scan of the gateway's port, or a disk slower than the screenshots arriving, would
otherwise write one line per event; :class:`Throttled` writes at most one per interval,
with the count of events it stands for.
"""

from __future__ import annotations

import logging
import time
from typing import Any


class Throttled:
    """A log line for an event that may come thousands of times a second: written at
    most once per ``interval`` seconds, with the number of events it stands for."""

    __slots__ = ("_count", "_interval", "_last", "_level", "_log", "_message")

    def __init__(self, log: logging.Logger, level: int, message: str,
                 interval: float = 10.0) -> None:
        self._log = log
        self._level = level
        self._message = message
        self._interval = interval
        self._count = 0
        self._last = -interval

    def note(self, *args: Any) -> None:
        """Count one event; log ``message % args`` (with the count) if it is time to."""
        self._count += 1
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._log.log(self._level, self._message + " (%d time(s) in %gs)", *args,
                          self._count, self._interval)
            self._count = 0
            self._last = now
