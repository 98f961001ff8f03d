"""Outgoing link messages, written as one stream message per batch.

One gRPC stream message costs tens of microseconds of CPU whatever it holds, so each end
of the link queues what it sends and its writer drains the queue into batches: a burst of
frames from many sockets goes out as one message. A batch is bounded in bytes (by the
queue's ``measure``, see :func:`aip_link.sizes.size_hint`), so that a burst of large
frames becomes several stream messages of ordinary size rather than one the channel
refuses. :meth:`BatchQueue.put` never blocks and never awaits, so any code on the event
loop may send.

Messages that may wait a moment (a gateway's presence: a client came or went) are put
``lazy``: while the queue holds nothing else, the writer waits up to ``linger`` seconds
for more before writing, so that registrations arriving one by one share stream
messages. Any other message ends the wait, and goes out behind them in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Generic, TypeVar

from aip_link.channel import LINK_BATCH_BYTES

T = TypeVar("T")


class BatchQueue(Generic[T]):
    """Messages for one open stream; closed for good when the stream ends.

    With a ``measure`` (bytes per message), each batch holds at most ``limit`` bytes, or
    one message alone when that one is larger (the writer then fragments it). Without
    one, a batch is everything queued.
    """

    __slots__ = ("_buffer", "_eager", "_limit", "_linger", "_measure", "_wakeup", "closed")

    def __init__(self, first: list[T] | None = None, *,
                 measure: Callable[[T], int] | None = None,
                 limit: int = LINK_BATCH_BYTES, linger: float = 0.0) -> None:
        self._buffer: list[T] = list(first) if first else []
        self._measure = measure
        self._limit = limit
        self._linger = linger
        #: The buffer holds a message that was not put ``lazy``: no lingering.
        self._eager = bool(self._buffer)
        self._wakeup = asyncio.Event()
        if self._buffer:
            self._wakeup.set()
        self.closed = False

    def __len__(self) -> int:
        return len(self._buffer)

    def put(self, message: T, *, lazy: bool = False) -> bool:
        """Queue one message; ``False`` once the queue is closed (the stream is gone).

        A ``lazy`` message may wait up to the queue's ``linger`` for company."""
        if self.closed:
            return False
        buffer = self._buffer
        buffer.append(message)
        if not lazy:
            self._eager = True
            self._wakeup.set()
        elif len(buffer) == 1:
            self._wakeup.set()  # a writer lingering over others needs no wake-up for it
        return True

    def close(self) -> None:
        """Refuse further messages, drop the queued ones and wake the writer to stop."""
        self.closed = True
        self._buffer = []
        self._wakeup.set()

    async def next_batch(self) -> list[T] | None:
        """The oldest messages queued, up to the bound, once there is something;
        ``None`` once closed."""
        while not self._buffer:
            if self.closed:
                return None
            await self._wakeup.wait()
            self._wakeup.clear()
            # One more turn of the loop lets whatever else is ready in this turn (other
            # sockets' frames) join the batch.
            await asyncio.sleep(0)
        if self._linger and not self._eager:
            await self._linger_for_more()
        if self.closed:
            return None
        buffer = self._buffer
        cut = self._cut(buffer)
        if cut == len(buffer):
            self._buffer = []
            self._eager = False
            return buffer
        self._buffer = buffer[cut:]  # over the bytes bound already: no lingering
        return buffer[:cut]

    async def _linger_for_more(self) -> None:
        """Wait until a message that may not wait is put, the queue closes, or
        ``linger`` seconds have passed."""
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            self._wakeup.set()

        timer = asyncio.get_running_loop().call_later(self._linger, expire)
        try:
            while not (expired or self._eager or self.closed):
                self._wakeup.clear()
                await self._wakeup.wait()
        finally:
            timer.cancel()

    def _cut(self, buffer: list[T]) -> int:
        """How many of the oldest messages make the next batch: at least one."""
        measure = self._measure
        if measure is None:
            return len(buffer)
        limit = self._limit
        total = 0
        for index, message in enumerate(buffer):
            total += measure(message)
            if total > limit:
                return index or 1
        return len(buffer)


async def pump(
    queue: BatchQueue[T],
    encode: Callable[[list[T]], Iterable[Any]],
    write: Callable[[Any], Awaitable[None]],
) -> None:
    """Write the queue's batches until it is closed, each encoded as the stream messages
    it takes (one, or a large message's fragments); a failed write raises."""
    while True:
        batch = await queue.next_batch()
        if batch is None:
            return
        for item in encode(batch):
            await write(item)
