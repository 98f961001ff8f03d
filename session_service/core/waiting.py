"""This replica's sessions that wait for their device, and how they get to run.

Where a session stands in its device's line is the record sink's to say (the shared
store holds every replica's lines, :mod:`session_service.store_slots`); the waiting
room asks it again and again. While anything waits it polls every
:data:`POLL_INTERVAL` (another replica's session may have ended), and at once when a
session of this replica ends on a device that someone here waits for. A session that
is told to run is handed to the manager to start; one that waited longer than the queue
timeout is expired; one whose ticket is gone (its replica counted as lost) is lost.
Nothing polls while nothing waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from aip_runtime.throttled_log import Throttled
from session_service.core.device_queue import Placement, Verdict
from session_service.core.session import Session, Update, UpdateKind

log = logging.getLogger("aip.session")
_unanswered = Throttled(log, logging.WARNING, "the device queues could not be read: "
                        "%d waiting session(s) ask again")

#: Seconds between two polls of the queues while a session of this replica waits.
POLL_INTERVAL = 0.2

Hand = Callable[[Session], None]
Answer = Callable[[dict[str, Placement] | None], None]
#: The record sink's ``poll_slots``: where the waiting sessions stand now.
Poll = Callable[[list[str], Answer], None]


class WaitingRoom:
    """The waiting sessions, in the order they arrived."""

    def __init__(self, poll: Poll, timeout: float, *, start: Hand,
                 expire: Hand, lost: Hand, interval: float = POLL_INTERVAL) -> None:
        self._poll = poll
        self.timeout = timeout
        self.interval = interval
        self._start, self._expire, self._lost = start, expire, lost
        self.sessions: dict[str, Session] = {}
        self._task: asyncio.Task[None] | None = None
        self._asking = False
        self._ask_again = False

    def __len__(self) -> int:
        return len(self.sessions)

    def add(self, session: Session, position: int) -> None:
        """``session`` waits at ``position`` (its acceptance is announced already)."""
        session.lifecycle.queue()
        session.queued_at = time.monotonic()
        self.sessions[session.session_id] = session
        self._moved(session, position)
        log.info("session %s waits for device %s (position %d)", session.session_id,
                 session.device_id, position)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(),
                                                                name="device-queue")

    def remove(self, session: Session) -> None:
        self.sessions.pop(session.session_id, None)

    def freed(self, device_id: str) -> None:
        """A session of this replica on ``device_id`` ended: ask now if anyone here
        waits for that device (its ticket's release is queued before the question)."""
        if any(s.device_id == device_id for s in self.sessions.values()):
            self._ask()

    async def _run(self) -> None:
        while self.sessions:
            try:
                self._tick(time.monotonic())
            except Exception:  # a bug: the line must go on for the others
                log.exception("the device queue's poll failed; polling on")
            await asyncio.sleep(self.interval)

    def _tick(self, now: float) -> None:
        for session in list(self.sessions.values()):
            assert session.queued_at is not None
            if now - session.queued_at >= self.timeout:
                self._expire(session)
        if self.sessions:
            self._ask()

    def _ask(self) -> None:
        if self._asking:  # one question at a time; ask once more after this answer
            self._ask_again = True
            return
        self._asking = True
        self._poll(list(self.sessions), self._answered)

    def _answered(self, answers: dict[str, Placement] | None) -> None:
        self._asking = False
        if answers is None:  # every POLL_INTERVAL while the store fails: throttled
            _unanswered.note(len(self.sessions))
        else:
            for session_id, placement in answers.items():
                session = self.sessions.get(session_id)
                if session is None:  # ended meanwhile: its end gives the ticket back
                    continue
                if placement.verdict is Verdict.RUN:
                    self.remove(session)
                    session.queue_position = 0
                    self._start(session)
                elif placement.verdict is Verdict.WAIT:
                    self._moved(session, placement.position)
                else:
                    self.remove(session)
                    self._lost(session)
        if self._ask_again:
            self._ask_again = False
            if self.sessions:
                self._ask()

    @staticmethod
    def _moved(session: Session, position: int) -> None:
        if position != session.queue_position:
            session.queue_position = position
            session.publish(Update(UpdateKind.QUEUED, detail={"position": position}))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
