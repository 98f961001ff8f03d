"""A timed wait that is cancelled in the same turn of the loop as the thing it waits for
completes ends cancelled (Python 3.11's ``asyncio.wait_for`` returned the result there
and lost the cancellation, which is why the code uses ``asyncio.timeout``)."""

from __future__ import annotations

import asyncio

from aip_client.constellation import TaskHandle, TaskResult


async def _waiter_whose_task_just_ended() -> asyncio.Task[TaskResult]:
    """A task in ``TaskHandle.wait``, its task's end set in this very turn."""
    loop = asyncio.get_running_loop()
    handle = TaskHandle("s1", "t1", "dev1", loop.create_future(), loop.create_future())
    waiting = loop.create_task(handle.wait(timeout=60))
    await asyncio.sleep(0)  # the waiter now waits on the task's end
    handle.ended.set_result(TaskResult("s1", "t1", "completed", {"answer": 1}, None))
    return waiting


async def test_a_task_wait_cancelled_as_the_task_ends_is_cancelled() -> None:
    waiting = await _waiter_whose_task_just_ended()
    waiting.cancel()  # in the same turn as the end
    done, _ = await asyncio.wait([waiting], timeout=5)
    assert done, "the cancelled waiter kept waiting"
    assert waiting.cancelled()


async def test_a_task_wait_that_is_not_cancelled_returns_the_result() -> None:
    waiting = await _waiter_whose_task_just_ended()
    assert (await waiting).result == {"answer": 1}
