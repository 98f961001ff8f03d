"""Who is connected: one :class:`Connection` per registered socket, kept in a registry.

A connection is the per-socket context: the identity bound at registration, the device
info, the sessions it takes part in and its outbox. Nothing per-connection lives on
shared objects; the registry only maps a ``client_id`` to its current connection.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aip_wire import frames
from aip_wire.vocab import ClientType, CloseCode
from gateway_service.limits import TokenBucket

log = logging.getLogger("aip.gateway.registry")

SendText = Callable[[str], Awaitable[None]]


async def _closed_send(text: str) -> None:
    raise ConnectionError("outbox closed")


def _nothing() -> None:
    pass


class Outbox:
    """Frames waiting for one socket, written in order by at most one task at a time.

    :meth:`put` never blocks, so link readers and handlers can send without awaiting a
    slow client. A client that lets more than ``limit`` frames, or frames of more than
    ``max_bytes`` characters, pile up is cut off through ``on_overflow`` rather than
    slowing anyone else down. Characters are what ``len`` counts at no cost; for the
    JSON the gateway sends (ASCII unless a value is not) they are the bytes written. The
    frame being written is no longer counted: it is in the socket's buffer, and a frame
    queued when nothing else is always fits, however large.
    """

    __slots__ = ("_bytes", "_flusher", "_held", "_limit", "_max_bytes", "_queue", "_send",
                 "_writing", "closed", "on_overflow", "overflow", "write_now")

    def __init__(
        self, send: SendText, *, limit: int, max_bytes: int | None = None,
        on_overflow: Callable[[], None] = lambda: None,
    ) -> None:
        self._send = send
        self._limit = limit
        self._max_bytes = max_bytes
        #: Called once when the client lets too much pile up.
        self.on_overflow = on_overflow
        #: Which limit was reached, for the log: ``"1000 frames"``, ``"5000000 bytes"``.
        self.overflow: str | None = None
        # Made when there is something to hold and dropped when empty again: most sockets
        # are idle, and an empty deque still costs more than half a kilobyte.
        self._queue: deque[str] | None = None
        self._bytes = 0
        self._flusher: asyncio.Task[None] | None = None
        self._writing = False
        self._held = False
        self.closed = False
        #: Writes one frame at once when it can (``True``), past ``send`` and its task:
        #: tried only while nothing is queued, held or being written, so frames keep
        #: their order. The server's extension, when it offers one.
        self.write_now: Callable[[str], bool] | None = None

    def __len__(self) -> int:
        return len(self._queue) if self._queue is not None else 0

    @property
    def pending_bytes(self) -> int:
        """Characters of the frames queued (not of the one being written)."""
        return self._bytes

    @property
    def idle(self) -> bool:
        """Whether nothing is queued, held or being written: a frame written past the
        outbox now would still go out in order."""
        return not (self.closed or self._queue or self._writing or self._held
                    or self._flusher is not None)

    def put(self, text: str) -> bool:
        """Queue one message; ``False`` when the outbox is closed or just overflowed."""
        if self.closed:
            return False
        queue = self._queue
        if queue is None:
            write_now = self.write_now
            if (write_now is not None and not self._writing and not self._held
                    and self._flusher is None and write_now(text)):
                return True
            queue = self._queue = deque()
        elif len(queue) >= self._limit:
            return self._overflowed(f"{self._limit} frames")
        elif (queue and self._max_bytes is not None
              and self._bytes + len(text) > self._max_bytes):
            return self._overflowed(f"{self._max_bytes} bytes")
        queue.append(text)
        self._bytes += len(text)
        if self._flusher is None and not self._writing and not self._held:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return True

    def _overflowed(self, limit: str) -> bool:
        self.overflow = limit
        self.closed = True
        self._queue = None
        self._bytes = 0
        self.on_overflow()
        return False

    def hold(self) -> None:
        """Queue without starting a writer: the caller will :meth:`release`.

        The socket's own receive loop holds the outbox while it handles a frame and then
        writes the answers itself, which spares a task per answered frame.
        """
        self._held = True

    async def release(self) -> None:
        """Stop holding, and write here what was queued, unless a writer already runs."""
        self._held = False
        if self._queue and not self._writing and self._flusher is None:
            await self._write_all()

    async def _write_all(self) -> None:
        self._writing = True
        try:
            while self._queue:
                text = self._queue.popleft()
                self._bytes -= len(text)
                await self._send(text)
        except Exception as exc:  # the socket is gone; nothing more can be written
            log.debug("outbox write failed: %r", exc)
            self.closed = True
        finally:
            self._queue = None
            self._bytes = 0
            self._writing = False

    async def _flush(self) -> None:
        try:
            await self._write_all()
        finally:
            self._flusher = None

    async def drain(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until everything queued has been written."""
        flusher = self._flusher
        if flusher is not None:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(flusher)
            except (TimeoutError, asyncio.CancelledError):
                pass

    def close(self) -> None:
        self.closed = True
        self._queue = None
        self._bytes = 0
        self.write_now = None  # the socket's protocol: not kept alive by its connection
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        # Both callables refer to the connection that owns this outbox (its socket, its
        # overflow handler): dropping them ends the cycle, and reference counting frees
        # the closed connection at once.
        self._send = _closed_send
        self.on_overflow = _nothing


_serials = itertools.count(1)
_NONE: frozenset[Any] = frozenset()


@dataclass(eq=False, slots=True)
class Connection:
    """One registered socket and everything that belongs to it alone."""

    client_id: str
    client_type: ClientType
    platform: str
    target_id: str | None
    device_info: dict[str, Any]
    outbox: Outbox
    close: Callable[[CloseCode, str], None]
    task_bucket: TokenBucket = field(default_factory=lambda: TokenBucket(20.0, 40.0))
    serial: int = field(default_factory=lambda: next(_serials))
    #: Sessions this socket asked for or runs, and its handler tasks in flight. Both stay
    #: a shared empty frozenset until first used: most sockets never need them.
    sessions: set[str] | frozenset[str] = _NONE
    tasks: set[asyncio.Task[Any]] | frozenset[asyncio.Task[Any]] = _NONE
    #: Pings the socket: whether a pong came within the timeout given (``None``: the
    #: server offers no probe, and the connection counts as alive).
    probe: Callable[[float], Awaitable[bool]] | None = None
    #: Monotonic time of the last frame received, for the silence limit.
    last_seen: float = field(default_factory=time.monotonic)
    #: Wall-clock time of the registration, for operators.
    connected_at: float = field(default_factory=time.time)

    def add_session(self, session_id: str) -> None:
        if not self.sessions:
            self.sessions = set()
        assert isinstance(self.sessions, set)
        self.sessions.add(session_id)

    def discard_session(self, session_id: str) -> None:
        if session_id in self.sessions:
            assert isinstance(self.sessions, set)
            self.sessions.discard(session_id)

    def track(self, task: asyncio.Task[Any]) -> None:
        """Own a handler task: cancelled if the socket goes, forgotten when done."""
        if not self.tasks:
            self.tasks = set()
        assert isinstance(self.tasks, set)
        self.tasks.add(task)
        task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[Any]) -> None:
        if task in self.tasks:
            assert isinstance(self.tasks, set)
            self.tasks.discard(task)

    @property
    def is_device(self) -> bool:
        return self.client_type == ClientType.DEVICE

    def send(self, frame: dict[str, Any]) -> bool:
        return self.outbox.put(frames.encode(frame))

    def send_text(self, text: str) -> bool:
        return self.outbox.put(text)

    def describe(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "client_type": self.client_type,
            "platform": self.platform,
            "target_id": self.target_id,
            "active_sessions": len(self.sessions),
        }


class ClientRegistry:
    """``client_id`` -> the connection currently registered under it."""

    def __init__(self) -> None:
        self._clients: dict[str, Connection] = {}

    def __len__(self) -> int:
        return len(self._clients)

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._clients.values()))

    def get(self, client_id: str) -> Connection | None:
        return self._clients.get(client_id)

    def device(self, client_id: str) -> Connection | None:
        conn = self._clients.get(client_id)
        return conn if conn is not None and conn.is_device else None

    def is_device_connected(self, client_id: str) -> bool:
        return self.device(client_id) is not None

    def add(self, conn: Connection) -> Connection | None:
        """Register ``conn``; returns the connection it replaced, if any."""
        previous = self._clients.get(conn.client_id)
        self._clients[conn.client_id] = conn
        return previous

    def remove(self, conn: Connection) -> bool:
        """Unregister ``conn`` if it is still the current one for its ``client_id``."""
        if self._clients.get(conn.client_id) is conn:
            del self._clients[conn.client_id]
            return True
        return False
