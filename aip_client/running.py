"""The work a device has in flight, by session, so that a session's end can stop it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable


class RunningWork:
    """Background tasks of a device (commands, info pushes); each command is filed under
    its ``session_id`` until it finishes."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()
        self._by_session: dict[str, set[asyncio.Task[None]]] = {}
        #: Sessions whose running commands were cancelled by their end.
        self.sessions_cancelled = 0

    def spawn(self, coro: Awaitable[None], session_id: object = None) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        if isinstance(session_id, str) and session_id:
            self._by_session.setdefault(session_id, set()).add(task)
            task.add_done_callback(lambda done: self._forget(session_id, done))
        return task

    def _forget(self, session_id: str, task: asyncio.Task[None]) -> None:
        running = self._by_session.get(session_id)
        if running is not None:
            running.discard(task)
            if not running:
                del self._by_session[session_id]

    def running_for(self, session_id: str) -> int:
        return sum(1 for task in self._by_session.get(session_id, ()) if not task.done())

    def cancel_session(self, session_id: object) -> int:
        """Cancel what still runs for ``session_id``; how many tasks that was."""
        if not isinstance(session_id, str):
            return 0
        running = [task for task in self._by_session.pop(session_id, ()) if not task.done()]
        for task in running:
            task.cancel()
        if running:
            self.sessions_cancelled += 1
        return len(running)

    def cancel_sessions(self) -> int:
        """Cancel every session's running commands (not the other tasks); how many
        sessions had some."""
        cancelled = 0
        for session_id in list(self._by_session):
            cancelled += bool(self.cancel_session(session_id))
        return cancelled

    async def cancel_all(self, timeout: float) -> None:
        """Cancel every task and wait up to ``timeout`` seconds for them to end."""
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=timeout)
