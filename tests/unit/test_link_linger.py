"""aip_link.batching: lazy messages (presence) wait up to the queue's linger for
company; anything else takes them along at once, in order."""

from __future__ import annotations

import asyncio

import pytest

from aip_link.batching import BatchQueue

LINGER = 0.2


async def test_lazy_messages_wait_for_each_other_within_the_linger() -> None:
    queue: BatchQueue[str] = BatchQueue(linger=LINGER)
    loop = asyncio.get_running_loop()
    started = loop.time()
    batch = asyncio.ensure_future(queue.next_batch())
    queue.put("online-1", lazy=True)
    await asyncio.sleep(LINGER / 4)
    assert not batch.done()  # still lingering
    queue.put("online-2", lazy=True)
    queue.put("offline-1", lazy=True)
    assert await batch == ["online-1", "online-2", "offline-1"]
    assert loop.time() - started >= LINGER * 0.9


async def test_a_message_that_may_not_wait_takes_the_lazy_ones_along_at_once() -> None:
    queue: BatchQueue[str] = BatchQueue(linger=30.0)
    batch = asyncio.ensure_future(queue.next_batch())
    queue.put("online", lazy=True)
    await asyncio.sleep(0.01)
    queue.put("results")
    async with asyncio.timeout(1):
        assert await batch == ["online", "results"]
    # The next lazy message lingers again: the queue is back to lazy only.
    queue.put("offline", lazy=True)
    later = asyncio.ensure_future(queue.next_batch())
    await asyncio.sleep(0.05)
    assert not later.done()
    queue.put("submit")
    async with asyncio.timeout(1):
        assert await later == ["offline", "submit"]


async def test_without_a_linger_lazy_messages_go_at_once() -> None:
    queue: BatchQueue[str] = BatchQueue()
    queue.put("online", lazy=True)
    async with asyncio.timeout(1):
        assert await queue.next_batch() == ["online"]


async def test_closing_ends_the_linger() -> None:
    queue: BatchQueue[str] = BatchQueue(linger=30.0)
    batch = asyncio.ensure_future(queue.next_batch())
    queue.put("online", lazy=True)
    await asyncio.sleep(0.01)
    queue.close()
    async with asyncio.timeout(1):
        assert await batch is None
    assert queue.put("late", lazy=True) is False


async def test_first_messages_never_linger() -> None:
    queue: BatchQueue[str] = BatchQueue(["hello", "page-1"], linger=30.0)
    async with asyncio.timeout(1):
        assert await queue.next_batch() == ["hello", "page-1"]


@pytest.mark.parametrize("eager_first", [True, False])
async def test_order_is_kept_whichever_comes_first(eager_first: bool) -> None:
    queue: BatchQueue[str] = BatchQueue(linger=30.0)
    if eager_first:
        queue.put("results")
        queue.put("online", lazy=True)
    else:
        queue.put("online", lazy=True)
        queue.put("results")
    async with asyncio.timeout(1):
        batch = await queue.next_batch()
    assert batch == (["results", "online"] if eager_first else ["online", "results"])
