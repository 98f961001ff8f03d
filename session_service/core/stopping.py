"""How a replica's sessions stop: a drain that lets them finish, then a shutdown that
cancels what is left. Part of :class:`~session_service.core.manager.SessionManager`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aip_wire.vocab import CancelReason
from session_service.core.session import Session
from session_service.core.waiting import WaitingRoom

log = logging.getLogger("aip.session")


class Stopping:
    """The drain and the shutdown of :class:`~session_service.core.manager.
    SessionManager`."""

    sessions: dict[str, Session]
    waiting: WaitingRoom
    active: int
    draining: bool

    def cancel(self, session_id: str, reason: str) -> Session | None:
        raise NotImplementedError

    async def drain(self, timeout: float, can_progress: Callable[[], bool]) -> int:
        """Refuse new sessions and wait up to ``timeout`` seconds for the running ones.

        The wait stops early once ``can_progress()`` is false (no gateway is linked, so
        no command can reach a device and no result come back).

        :returns: how many sessions still run.
        """
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self.active:
            log.info("draining: waiting up to %gs for %d session(s)", timeout, self.active)
        while self.active and can_progress():
            left = deadline - loop.time()
            if left <= 0:
                break
            await asyncio.sleep(min(left, 0.05))
        return self.active

    async def shutdown(self, reason: str = CancelReason.REPLICA_SHUTDOWN) -> None:
        await self.waiting.close()
        running = [s for s in self.sessions.values() if s.running]
        for session in running:
            self.cancel(session.session_id, reason)
        if running:
            try:
                async with asyncio.timeout(5):
                    await asyncio.gather(*(session.ended.wait() for session in running))
            except TimeoutError:
                log.warning("%d session(s) did not end within 5s of shutdown", len(running))
