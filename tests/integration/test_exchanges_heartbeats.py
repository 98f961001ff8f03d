"""After registration: heartbeats are acked, and stay prompt while a task is in flight,
its submission pending on the link or its session waiting for results."""

from __future__ import annotations

import asyncio
from typing import Any

from aip_link.messages import TaskSubmit
from tests.integration.exchange_support import (
    assert_ack,
    assert_task_end,
    heartbeat,
    heartbeat_acked,
)
from tests.stack import (
    Stack,
    answer_commands,
    cmd,
    plan,
    register_constellation,
    register_device,
    results_for,
    task_frame,
)

# ---------------------------------------------------------------- heartbeats


async def test_device_heartbeat_is_acked(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    await device.send(heartbeat("dev1"))
    ack = await device.recv()
    assert_ack(ack)
    assert set(ack) <= {"type", "status", "response_id", "timestamp", "session_id", "error"}
    await device.expect_silence(0.2)
    await device.close()


async def test_constellation_heartbeat_labelled_device_is_simply_acked(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    await constellation.send(heartbeat("c1", client_type="device"))
    assert_ack(await constellation.recv())
    # It changed nothing about who c1 is.
    assert stack.gateway.registry.get("c1").client_type == "constellation"  # type: ignore[union-attr]
    await constellation.send(heartbeat("c1", client_type="constellation"))
    assert_ack(await constellation.recv())
    await device.expect_silence(0.2)
    await device.close()
    await constellation.close()


# ---------------------------------------------------------------- concurrency


async def test_heartbeat_acked_while_task_submission_is_pending(stack: Stack) -> None:
    """Hold the task's submission on the link; the heartbeat sent after it is answered."""
    link = stack.gateway.links[0]
    real_send = link.send
    held: list[Any] = []
    release = asyncio.Event()

    def send(message: Any) -> bool:
        if isinstance(message, TaskSubmit):
            held.append(message)

            async def later() -> None:
                await release.wait()
                real_send(message)

            asyncio.get_running_loop().create_task(later())
            return True
        return real_send(message)

    link.send = send  # type: ignore[method-assign]
    sid = "dev1@t-51010001"
    device = await register_device(stack.ws_url, "dev1")
    await device.send(task_frame("dev1", plan([cmd("a")]), session_id=sid))
    await device.send(heartbeat("dev1"))
    first = await device.recv(3)
    assert_ack(first)
    assert first.get("session_id") is None, "the heartbeat waited for the task"
    assert len(held) == 1
    release.set()
    assert_ack(await device.recv(3), session_id=sid)
    await answer_commands(device, "dev1", 1)
    assert_task_end(await device.recv_type("task_end"), sid)
    await device.close()


async def test_task_and_heartbeat_back_to_back_are_both_answered(stack: Stack) -> None:
    sid = "dev1@t-b2b00001"
    device = await register_device(stack.ws_url, "dev1")
    await device.send(task_frame("dev1", plan([cmd("a")]), session_id=sid))
    await device.send(heartbeat("dev1"))
    frames = [await device.recv(3), await device.recv(3)]
    for frame in frames:
        assert_ack(frame)
    assert sorted(str(f.get("session_id")) for f in frames) == sorted([sid, "None"])
    await answer_commands(device, "dev1", 1)
    assert_task_end(await device.recv_type("task_end"), sid)
    await device.close()


async def test_heartbeats_acked_while_a_session_waits_for_results(stack: Stack) -> None:
    sid = "c1@t-a11ce001"
    device = await register_device(stack.ws_url, "dev1")
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    await constellation.send(task_frame("c1", plan([cmd("a")]), client_type="constellation",
                                        target_id="dev1", session_id=sid))
    assert_ack(await constellation.recv(), session_id=sid)
    command = await device.recv()
    for _ in range(3):
        await heartbeat_acked(device, "dev1")
        await heartbeat_acked(constellation, "c1", client_type="device")
    await device.send(results_for(command, "dev1"))
    assert_task_end(await constellation.recv_type("task_end"), sid)
    await device.close()
    await constellation.close()
