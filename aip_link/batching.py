"""Outgoing link messages, written as one stream message per batch.

One gRPC stream message costs tens of microseconds of CPU whatever it holds, so each end
of the link queues what it sends and its writer drains the queue whole: a burst of
frames from many sockets goes out as one message. :meth:`BatchQueue.put` never blocks
and never awaits, so any code on the event loop may send.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class BatchQueue(Generic[T]):
    """Messages for one open stream; closed for good when the stream ends."""

    __slots__ = ("_buffer", "_wakeup", "closed")

    def __init__(self, first: list[T] | None = None) -> None:
        self._buffer: list[T] = list(first) if first else []
        self._wakeup = asyncio.Event()
        if self._buffer:
            self._wakeup.set()
        self.closed = False

    def __len__(self) -> int:
        return len(self._buffer)

    def put(self, message: T) -> bool:
        """Queue one message; ``False`` once the queue is closed (the stream is gone)."""
        if self.closed:
            return False
        self._buffer.append(message)
        self._wakeup.set()
        return True

    def close(self) -> None:
        """Refuse further messages, drop the queued ones and wake the writer to stop."""
        self.closed = True
        self._buffer = []
        self._wakeup.set()

    async def next_batch(self) -> list[T] | None:
        """Everything queued, once there is something; ``None`` once closed."""
        while not self._buffer:
            if self.closed:
                return None
            await self._wakeup.wait()
            self._wakeup.clear()
            # One more turn of the loop lets whatever else is ready in this turn (other
            # sockets' frames) join the batch.
            await asyncio.sleep(0)
        if self.closed:
            return None
        batch, self._buffer = self._buffer, []
        return batch


async def pump(
    queue: BatchQueue[T],
    encode: Callable[[list[T]], Any],
    write: Callable[[Any], Awaitable[None]],
) -> None:
    """Write the queue's batches (encoded) until it is closed; a failed write raises."""
    while True:
        batch = await queue.next_batch()
        if batch is None:
            return
        await write(encode(batch))
