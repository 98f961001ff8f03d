"""A running session's command log in bounded memory.

A computer-use device answers most commands with screenshots, inline as base64: a
session of a hundred steps would hold hundreds of megabytes of results if its log kept
them all. The store has every command's results, so a running session keeps only the
newest in memory, within a byte budget (``--session-log-bytes``); older entries keep
their actions, status and times and give their results back (``released``). The newest
entry always keeps its results: the agent and watchers of the current step need them.

An agent that collects results for the session's own result (the plan agent: every
step's) keeps them within the same budget through :class:`StepResults`: older steps
are *elided* there, each action keeping its status, error and call id and its
``result`` replaced by a marker with its size. Without it, a long plan answered with
screenshots held all of them until the session ended (a 2,000-step plan of 5 MB results:
10 GB), and its ``task_end`` could never have been sent.
"""

from __future__ import annotations

from typing import Any

from session_service.core.session import Session

#: What a number, ``None`` or a boolean is counted for; containers add this much each.
SCALAR_BYTES = 8
_SCALARS = frozenset({type(None), bool, int, float})


def approx_bytes(value: Any) -> int:
    """About how many bytes ``value`` (decoded JSON) takes as JSON, without encoding it:
    strings count their length, which is what dominates (base64 screenshots). Its cost
    grows with the number of values, not with their size.

    It runs once per command's results, hence the exact type checks and plain loops
    (half the time of ``isinstance`` and generator expressions); subclasses of ``str``,
    ``dict`` and ``list`` take the slower checks at the end."""
    kind = type(value)
    if kind is str:
        return len(value) + 2
    if kind is dict:
        total = SCALAR_BYTES
        for key, item in value.items():
            total += (len(key) if type(key) is str else len(str(key))) + 3
            kind = type(item)
            if kind is str:
                total += len(item) + 2
            elif kind in _SCALARS:
                total += SCALAR_BYTES
            else:
                total += approx_bytes(item)
        return total
    if kind is list or kind is tuple:
        total = SCALAR_BYTES
        for item in value:
            total += approx_bytes(item) + 1
        return total
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, dict):
        return approx_bytes(dict(value))
    if isinstance(value, list | tuple):
        return approx_bytes(list(value))
    return SCALAR_BYTES


def elided(results: Any, size: int, reason: str) -> Any:
    """``results`` without their payloads: each action keeps everything but its
    ``result``, which becomes a marker of the size it had and ``reason``."""
    marker = {"elided": True, "bytes": size, "reason": reason}
    if isinstance(results, list) and all(isinstance(item, dict) for item in results):
        return [{**item, "result": marker} for item in results]
    return marker


#: Why a step's results are missing from a session's result.
RESULT_REASON = ("the session's result keeps its newest results within "
                 "--session-log-bytes; the store's record of the session has every "
                 "command's results")


class StepResults:
    """Each step's results, in order, for a session's result: once they pass ``budget``
    bytes, the oldest are elided (the newest is always whole)."""

    __slots__ = ("_bytes", "_oldest", "_sizes", "budget", "items")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        #: Every step's results so far, the oldest perhaps elided.
        self.items: list[Any] = []
        self._sizes: list[int] = []
        self._bytes = 0
        self._oldest = 0  # the first step not elided

    def append(self, results: Any) -> None:
        size = approx_bytes(results)
        self.items.append(results)
        self._sizes.append(size)
        self._bytes += size
        last = len(self.items) - 1
        while self._bytes > self.budget and self._oldest < last:
            index = self._oldest
            self.items[index] = elided(self.items[index], self._sizes[index], RESULT_REASON)
            self._bytes -= self._sizes[index]
            self._oldest += 1


def keep_within(session: Session, budget: int) -> int:
    """Release the results of the session's oldest commands until what it holds is
    within ``budget`` bytes, the newest command excepted; returns how many were released
    now."""
    commands = session.commands
    released = 0
    while session.log_bytes > budget and session.released < len(commands) - 1:
        entry = commands[session.released]
        session.log_bytes -= entry.size
        entry.results = None
        entry.size = 0
        entry.released = True
        session.released += 1
        released += 1
    return released
