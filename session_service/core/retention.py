"""Which ended sessions stay in memory: the newest, within a budget of bytes.

An ended session is kept so that its requester and the public API can read it without
the store, but the store holds the history: memory keeps only the most recent ended
sessions whose estimated sizes fit ``budget`` bytes (and at most ``max_count`` of them,
none older than ``retention`` seconds). The oldest go first. A session is evicted only
once its end record is *settled* (committed, or failed for good), so that a read of an
evicted session finds its end in the store rather than a record still ``running``.

:func:`estimated_bytes` is about the size of a session's JSON (request, command log,
result; :func:`~session_service.core.log_budget.approx_bytes`) plus a fixed allowance per
session and per command: a stable, cheap proxy for the memory its objects hold, which is
a small multiple of it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from session_service.core.log_budget import approx_bytes
from session_service.core.session import CommandEntry

#: Allowance for a session's own objects (lifecycle, dispatcher, event, fields).
SESSION_OVERHEAD = 2048
#: Allowance for a command entry's own objects.
COMMAND_OVERHEAD = 256


def estimated_bytes(request: str, commands: Iterable[CommandEntry], result: Any) -> int:
    """What an ended session is counted for against the budget."""
    # Estimated without encoding: a session's result may repeat every step's screenshots,
    # and encoding megabytes only to measure them cost a twentieth of the replica's CPU.
    size = SESSION_OVERHEAD + len(request) + approx_bytes(result)
    for entry in commands:
        # The size measured when the results came.
        results = entry.size if entry.size else approx_bytes(entry.results)
        size += COMMAND_OVERHEAD + approx_bytes(entry.actions) + results
    return size


@dataclass(slots=True, eq=False)
class Held:
    """One ended session in memory: its key, its end time, its size, whether its end
    record is settled."""

    session: Any
    ended_at: float
    size: int
    settled: bool = False


class EndedSessions:
    """The ended sessions held in memory, oldest first, and their total size."""

    def __init__(self, budget: int, max_count: int, retention: float) -> None:
        self.budget = budget
        self.max_count = max_count
        self.retention = retention
        self.bytes = 0
        self._held: deque[Held] = deque()

    def __len__(self) -> int:
        return len(self._held)

    def add(self, session: Any, ended_at: float, size: int) -> Held:
        held = Held(session, ended_at, size)
        self._held.append(held)
        self.bytes += size
        return held

    def evict(self, now: float) -> list[Any]:
        """Drop, oldest first, what is over the budget, the count or the retention.

        A session whose end is not settled stops the eviction (records settle in the
        order they ended), unless it is past the retention: then nothing can be waited
        for any more.
        """
        held, evicted = self._held, []
        horizon = now - self.retention
        while held:
            oldest = held[0]
            over = self.bytes > self.budget or len(held) > self.max_count
            if not (oldest.ended_at < horizon or (over and oldest.settled)):
                break
            held.popleft()
            self.bytes -= oldest.size
            evicted.append(oldest.session)
        return evicted
