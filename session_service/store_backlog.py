"""What the store's writer still has to write, bounded in bytes.

The writer thread writes as fast as the disk allows; results arrive as fast as devices
send screenshots. Where the disk is slower (a shared volume, a busy Postgres), the queue
would grow without bound and hold every screenshot in memory. :class:`Backlog` counts
the bytes of results queued and not yet written; a command's results that would take it
past the bound are recorded *elided*: each action keeps its status, error and call id,
and its ``result`` becomes a small marker saying how large it was and why it is missing.
The session itself is unaffected: its agent and its requester got the results already.
"""

from __future__ import annotations

import threading
from typing import Any

from session_service.core import log_budget

#: Results smaller than this are always queued whole: eliding them would save nothing.
ALWAYS_KEPT = 4096
REASON = "the store's write backlog was full (--store-backlog-bytes)"


class Backlog:
    """Bytes queued for the writer; :meth:`admit` on the event loop, :meth:`written` on
    the writer thread."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.bytes = 0
        self._lock = threading.Lock()

    def admit(self, size: int) -> bool:
        """Count ``size`` more bytes queued, unless that would pass the limit."""
        with self._lock:
            if size > ALWAYS_KEPT and self.bytes + size > self.limit:
                return False
            self.bytes += size
            return True

    def written(self, size: int) -> None:
        """``size`` bytes left the queue (written, or failed for good)."""
        if size:
            with self._lock:
                self.bytes -= size


def elided(results: Any, size: int) -> Any:
    """``results`` as recorded when they could not be queued whole."""
    return log_budget.elided(results, size, REASON)
