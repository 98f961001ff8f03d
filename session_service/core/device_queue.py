"""One driver per device: which session may run on a device now, and which waits.

A computer-use device has one screen, so by default one session runs on it at a time,
across every replica and gateway; the others wait in a first-come, first-served queue
per device. The rule is :func:`place`, a pure function of counts, applied by whoever
holds the queue: the shared store (:mod:`session_service.store_slots`) under a lock per
device, so that replicas sharing a store share each device's queue, or
:class:`MemorySlots` for a replica without a store.

A queue entry is a *ticket*: its session's place in line, held from the session's
creation until its end. A ticket is running (it holds one of the device's
``max_running`` slots) or waiting; a waiting ticket runs once a slot is free and no
waiting ticket of its device is older.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum, auto


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """``--max-running-per-device`` (0: no limit, nothing ever waits) and
    ``--max-queued-per-device`` (0: a busy device refuses at once)."""

    max_running: int = 1
    max_queued: int = 16


class Verdict(Enum):
    RUN = auto()  # holds a slot: start now
    WAIT = auto()  # waits in line, at ``position``
    FULL = auto()  # a new session the queue has no room for: refused
    GONE = auto()  # the ticket is not held any more (its replica counted as lost)


@dataclass(frozen=True, slots=True)
class Placement:
    verdict: Verdict
    #: 1 for the next in line; 0 unless ``verdict`` is WAIT.
    position: int = 0


RUN = Placement(Verdict.RUN)
FULL = Placement(Verdict.FULL)
GONE = Placement(Verdict.GONE)


def place(*, running: int, waiting_ahead: int, limits: QueueLimits,
          new: bool) -> Placement:
    """Where a ticket stands: ``running`` slots of its device are held, and
    ``waiting_ahead`` tickets of the device wait before it (for a ``new`` one: all that
    wait). Only a new ticket can be refused; one that is in line keeps its place."""
    if limits.max_running == 0 or (running < limits.max_running and waiting_ahead == 0):
        return RUN
    if new and waiting_ahead >= limits.max_queued:
        return FULL
    return Placement(Verdict.WAIT, waiting_ahead + 1)


@dataclass(slots=True)
class _Line:
    """One device's tickets in this process: those running, those waiting in order."""

    running: set[str]
    waiting: list[str]


class MemorySlots:
    """Every device's queue held in this process: the queue of a replica without a
    shared store (its devices' queues are then its own). Synchronous; the callbacks
    mirror :class:`~session_service.store.SessionStore`'s, which answer later."""

    def __init__(self, limits: QueueLimits) -> None:
        self.limits = limits
        self._lines: dict[str, _Line] = {}
        self._device_of: dict[str, str] = {}

    def enqueue(self, session_id: str, device_id: str) -> Placement:
        line = self._lines.setdefault(device_id, _Line(set(), []))
        placement = place(running=len(line.running), waiting_ahead=len(line.waiting),
                          limits=self.limits, new=True)
        if placement.verdict is Verdict.RUN:
            line.running.add(session_id)
        elif placement.verdict is Verdict.WAIT:
            line.waiting.append(session_id)
        else:
            self._tidy(device_id, line)
            return placement
        self._device_of[session_id] = device_id
        return placement

    def poll(self, session_ids: Iterable[str]) -> dict[str, Placement]:
        """Start what may start among the waiting ``session_ids``; where each stands."""
        answers: dict[str, Placement] = {}
        for session_id in session_ids:
            device_id = self._device_of.get(session_id)
            line = self._lines.get(device_id) if device_id is not None else None
            if line is None or session_id not in line.waiting:
                answers[session_id] = (RUN if line is not None
                                       and session_id in line.running else GONE)
                continue
            ahead = line.waiting.index(session_id)
            placement = place(running=len(line.running), waiting_ahead=ahead,
                              limits=self.limits, new=False)
            if placement.verdict is Verdict.RUN:
                line.waiting.remove(session_id)
                line.running.add(session_id)
            answers[session_id] = placement
        return answers

    def release(self, session_id: str) -> None:
        device_id = self._device_of.pop(session_id, None)
        line = self._lines.get(device_id) if device_id is not None else None
        if line is None or device_id is None:
            return
        line.running.discard(session_id)
        if session_id in line.waiting:
            line.waiting.remove(session_id)
        self._tidy(device_id, line)

    def counts(self) -> dict[str, tuple[int, int]]:
        """``(running, waiting)`` tickets per device."""
        return {device_id: (len(line.running), len(line.waiting))
                for device_id, line in self._lines.items()}

    def _tidy(self, device_id: str, line: _Line) -> None:
        if not line.running and not line.waiting:
            del self._lines[device_id]


Polled = Callable[[dict[str, Placement]], None]
