"""Lean stand-ins for the asyncio primitives uvicorn's WebSocket protocol makes per socket.

uvicorn gives every connection an :class:`asyncio.Queue` for the events it hands the
application and an :class:`asyncio.Event` for write flow control. Each holds deques (a
queue three, plus an event of its own; an empty deque is about 600 bytes), so the two
cost about 3.8 KiB per connection, a sixth of what an idle registered device holds. The
protocol never lets more than one or two events wait (it stops reading a socket until the
application takes its message), and one task reads them, so a list and one future, made
only while somebody waits, do the same work.

Only what the protocol calls is offered; each behaves as its asyncio counterpart does
for that call.

:func:`release_handshake` lets go of the opening handshake's request, which websockets'
server parser would otherwise keep for the life of the connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.protocol import Protocol
from websockets.streams import StreamReader


class _Waiters:
    """Futures of the tasks waiting, one each (so that cancelling one cancels no other);
    none exists while nobody waits."""

    __slots__ = ("_futures",)

    def __init__(self) -> None:
        self._futures: list[asyncio.Future[None]] | None = None

    async def _sleep(self) -> None:
        future = asyncio.get_running_loop().create_future()
        if self._futures is None:
            self._futures = [future]
        else:
            self._futures.append(future)
        try:
            await future
        finally:
            if self._futures is not None and future in self._futures:
                self._futures.remove(future)
                if not self._futures:
                    self._futures = None

    def _wake(self) -> None:
        futures, self._futures = self._futures, None
        for future in futures or ():
            if not future.done():
                future.set_result(None)


class Inbox(_Waiters):
    """``put_nowait``/``get``/``empty``/``qsize`` of an unbounded :class:`asyncio.Queue`."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        super().__init__()
        self._items: list[Any] = []

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self._wake()

    async def get(self) -> Any:
        # A reader cancelled while waiting takes nothing: the item stays for the next.
        while not self._items:
            await self._sleep()
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class Flag(_Waiters):
    """``set``/``clear``/``is_set``/``wait`` of an :class:`asyncio.Event`."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        super().__init__()
        self._set = False

    def set(self) -> None:
        self._set = True
        self._wake()

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> bool:
        while not self._set:
            await self._sleep()
        return True


def release_handshake(conn: Protocol) -> bool:
    """Swap websockets' server parser for a plain frame parser, if it is between frames.

    ``ServerProtocol.parse`` reads the handshake request into a local variable and then
    delegates to ``Protocol.parse`` for the frames; the request (its headers, about 2 KiB)
    stays in the suspended generator's frame for as long as the connection lives. When
    that frame parser waits for the first byte of a frame with nothing buffered, a fresh
    ``Protocol.parse`` started now is in the very same state, without the request. The
    state is recognized by the generators' code objects; anything else (another version
    of websockets, a frame half read) leaves the parser as it is.

    :returns: whether the parser was swapped.
    """
    outer = conn.parser
    frames = getattr(outer, "gi_yieldfrom", None)
    waiting = getattr(frames, "gi_yieldfrom", None)
    if (
        getattr(frames, "gi_code", None) is not Protocol.parse.__code__
        or getattr(waiting, "gi_code", None) is not StreamReader.at_eof.__code__
        or conn.reader.buffer
        or conn.reader.eof
    ):
        return False
    fresh = Protocol.parse(conn)
    next(fresh)  # runs to the same wait for a frame's first byte
    conn.parser = fresh
    outer.close()  # type: ignore[attr-defined]
    return True
