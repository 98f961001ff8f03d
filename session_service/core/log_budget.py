"""A running session's command log in bounded memory.

A computer-use device answers most commands with screenshots, inline as base64: a
session of a hundred steps would hold hundreds of megabytes of results if its log kept
them all. The store has every command's results, so a running session keeps only the
newest in memory, within a byte budget (``--session-log-bytes``); older entries keep
their actions, status and times and give their results back (``released``). The newest
entry always keeps its results: the agent and watchers of the current step need them.
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
