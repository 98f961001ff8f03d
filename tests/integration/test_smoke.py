"""The whole path once: a constellation drives a device through a two-step plan."""

from __future__ import annotations

from tests.stack import (
    Stack,
    answer_commands,
    cmd,
    plan,
    register_constellation,
    register_device,
    task_frame,
    wait_for,
)


async def test_constellation_task_end_to_end(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    await constellation.send(task_frame(
        "c1", plan([cmd("a")], [cmd("b")]), client_type="constellation", target_id="dev1",
        session_id="c1@t-1234abcd", task_name="galaxy/x/t-1",
    ))
    ack = await constellation.recv()
    assert ack["type"] == "heartbeat" and ack["status"] == "ok"
    assert ack["session_id"] == "c1@t-1234abcd"
    commands = await answer_commands(device, "dev1", 2)
    assert [c["actions"][0]["tool_name"] for c in commands] == ["a", "b"]
    end = await constellation.recv_type("task_end")
    assert end["status"] == "completed" and end["session_id"] == "c1@t-1234abcd"
    assert [[r["status"] for r in step] for step in end["result"]] == [["success"], ["success"]]
    device_end = await device.recv_type("task_end")
    assert device_end["session_id"] == "c1@t-1234abcd"
    await device.close()
    await constellation.close()
    await wait_for(lambda: len(stack.gateway.registry) == 0 and not stack.gateway.routes)
