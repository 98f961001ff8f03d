"""What the manager answers about sessions: from memory, and from the shared store.

This replica's sessions in memory are the freshest view of them; every other session
(another replica's, running or ended, or one of ours evicted from memory) is read from
the store, which every replica shares, in a worker thread so that the event loop never
waits on the disk or the database. The public API calls :meth:`SessionQueries.get` and
:meth:`SessionQueries.page`.
"""

from __future__ import annotations

import asyncio

from aip_wire.vocab import SessionState
from session_service.core.ports import RecordReader
from session_service.core.session import Session
from session_service.records import SessionRecord
from session_service.store_reads import Filters, Page


class SessionQueries:
    """The reads of :class:`~session_service.core.manager.SessionManager`."""

    replica_id: str
    sessions: dict[str, Session]
    reader: RecordReader | None

    async def get(self, session_id: str,
                  with_commands: bool = True) -> Session | SessionRecord | None:
        """The session from memory if this replica holds it, else its stored record
        (whichever replica ran it, with its progress so far if it still runs); ``None``
        when nobody has it. Store errors propagate."""
        session = self.sessions.get(session_id)
        if session is not None or self.reader is None:
            return session
        return await asyncio.to_thread(self.reader.get, session_id, with_commands)

    async def page(self, filters: Filters, page_size: int = 100,
                   page_token: str = "") -> tuple[list[Session | SessionRecord], str]:
        """A page of every replica's sessions, newest first, and the token of the next
        page (``""`` on the last); see :func:`~session_service.store_reads.page`.
        Sessions this replica holds are given from memory. Without a store, memory's
        sessions in one page.

        :raises ~session_service.store_reads.BadPageToken: a token not made by us.
        """
        if self.reader is None:
            return [s for s in self.list(limit=max(1, page_size or 100))
                    if _matches(s, filters, self.replica_id)], ""
        found: Page = await asyncio.to_thread(self.reader.page, filters, page_size,
                                              page_token)
        return [self.sessions.get(r.session_id) or r for r in found.records], found.next_token

    def find_by_task_name(self, task_name: str) -> Session | None:
        matches = [s for s in self.sessions.values() if s.task_name == task_name]
        return max(matches, key=lambda s: s.created_at) if matches else None

    def list(self, device_id: str = "", running_only: bool = False,
             limit: int = 100) -> list[Session]:
        selected = [
            s for s in self.sessions.values()
            if (not device_id or s.device_id == device_id) and (not running_only or s.running)
        ]
        selected.sort(key=lambda s: s.created_at, reverse=True)
        return selected[:limit]

    def live_counts(self) -> dict[str, tuple[int, int]]:
        """``(running, queued)`` sessions of this replica per device."""
        counts: dict[str, tuple[int, int]] = {}
        for session in self.sessions.values():
            if session.running:
                running, queued = counts.get(session.device_id, (0, 0))
                counts[session.device_id] = (running, queued + 1) \
                    if session.state is SessionState.QUEUED else (running + 1, queued)
        return counts


def _matches(session: Session, filters: Filters, replica_id: str) -> bool:
    return all(not wanted or wanted == actual for wanted, actual in (
        (filters.device_id, session.device_id), (filters.state, session.state),
        (filters.requester_id, session.requester_id), (filters.task_name, session.task_name),
        (filters.replica_id, replica_id)))
