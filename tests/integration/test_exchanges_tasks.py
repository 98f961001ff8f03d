"""After registration: the task exchanges of aip-wire's table, a device running a task on
itself and a constellation dispatching one to a device, with the frames' shapes, the
session id echoed and the task name sanitized."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.conftest import StackFactory
from tests.integration.exchange_support import (
    RESULT_STATUSES,
    SAFE_NAME,
    assert_ack,
    assert_command,
    assert_task_end,
)
from tests.stack import (
    Stack,
    cmd,
    plan,
    register_constellation,
    register_device,
    results_for,
    task_frame,
)


async def test_device_runs_a_task_on_itself(stack: Stack) -> None:
    sid = "dev1@t-1234abcd"
    device = await register_device(stack.ws_url, "dev1")
    await device.send(task_frame("dev1", plan([cmd("a")], [cmd("b")]), session_id=sid))
    assert_ack(await device.recv(), session_id=sid)
    commands = []
    for _ in range(2):
        command = await device.recv()
        assert_command(command, sid)
        commands.append(command)
        await device.send(results_for(command, "dev1", result=command["actions"][0]["tool_name"]))
    assert [c["actions"][0]["tool_name"] for c in commands] == ["a", "b"]
    assert commands[0]["response_id"] != commands[1]["response_id"]
    end = await device.recv()
    assert_task_end(end, sid)
    assert [[r["status"] for r in step] for step in end["result"]] == [["success"], ["success"]]
    assert [[r["result"] for r in step] for step in end["result"]] == [["a"], ["b"]]
    for step in end["result"]:
        for result in step:
            assert result["status"] in RESULT_STATUSES
    # The device hears task_end once: it is both requester and device.
    await device.expect_silence(0.3)
    await device.close()


async def test_task_without_session_id_gets_one(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    await device.send(task_frame("dev1", plan([cmd("a")]), session_id=None))
    ack = await device.recv()
    assert_ack(ack)
    sid = ack["session_id"]
    assert isinstance(sid, str) and sid
    command = await device.recv_type("command")
    assert_command(command, sid)
    await device.send(results_for(command, "dev1"))
    assert_task_end(await device.recv_type("task_end"), sid)
    await device.close()


async def test_constellation_dispatches_to_a_device(stack: Stack) -> None:
    sid = "constellation-name@t-1234abcd"
    device = await register_device(stack.ws_url, "dev1")
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    await constellation.send(task_frame(
        "c1", plan([cmd("a")], [cmd("b")]), client_type="constellation", target_id="dev1",
        session_id=sid,
    ))
    assert_ack(await constellation.recv(), session_id=sid)
    for _ in range(2):
        command = await device.recv()
        assert_command(command, sid)
        await device.send(results_for(command, "dev1"))
    # The constellation gets no command frames: its next frame is task_end.
    end = await constellation.recv()
    assert_task_end(end, sid)
    device_end = await device.recv()
    assert_task_end(device_end, sid)
    assert end["result"] == device_end["result"]
    assert [[r["status"] for r in step] for step in end["result"]] == [["success"], ["success"]]
    await constellation.expect_silence(0.2)
    await device.expect_silence(0.1)
    await device.close()
    await constellation.close()


async def test_command_frame_shape(stack: Stack) -> None:
    sid = "c1@t-cafe0001"
    device = await register_device(stack.ws_url, "dev1")
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    step: list[dict[str, Any]] = [
        {"tool_name": "click", "parameters": {"x": 1, "y": 2}, "tool_type": "action",
         "call_id": "call-1"},
        {"tool_name": "screenshot", "parameters": None, "tool_type": "data_collection",
         "call_id": "call-2"},
    ]
    await constellation.send(task_frame("c1", plan(step), client_type="constellation",
                                        target_id="dev1", session_id=sid, task_name="t1"))
    assert_ack(await constellation.recv(), session_id=sid)
    command = await device.recv()
    assert_command(command, sid)
    assert command["task_name"] == "t1"
    assert command["agent_name"] == "LinuxAgent"  # routed by the linux device's platform
    assert [a["tool_name"] for a in command["actions"]] == ["click", "screenshot"]
    assert [a["tool_type"] for a in command["actions"]] == ["action", "data_collection"]
    assert [a["call_id"] for a in command["actions"]] == ["call-1", "call-2"]
    assert command["actions"][0]["parameters"] == {"x": 1, "y": 2}
    await device.send(results_for(command, "dev1"))
    end = await constellation.recv_type("task_end")
    assert_task_end(end, sid)
    assert [r["call_id"] for r in end["result"][0]] == ["call-1", "call-2"]
    await device.close()
    await constellation.close()


async def test_failed_task_ends_failed_with_an_error(make_stack: StackFactory) -> None:
    stack = await make_stack(session={"command_timeout": 0.3})
    sid = "c1@t-0000fail"
    device = await register_device(stack.ws_url, "dev1")
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    await constellation.send(task_frame("c1", plan([cmd("a")]), client_type="constellation",
                                        target_id="dev1", session_id=sid))
    assert_ack(await constellation.recv(), session_id=sid)
    assert_command(await device.recv(), sid)  # never answered: the command times out
    assert_task_end(await constellation.recv_type("task_end", 3), sid, status="failed")
    assert_task_end(await device.recv_type("task_end", 3), sid, status="failed")
    await device.close()
    await constellation.close()


@pytest.mark.parametrize("sid", ["constellation-name@t-1234abcd", "ünï/cødé sid@t-1 "])
async def test_session_id_is_echoed_byte_for_byte(stack: Stack, sid: str) -> None:
    device = await register_device(stack.ws_url, "dev1")
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    await constellation.send(task_frame("c1", plan([cmd("a")]), client_type="constellation",
                                        target_id="dev1", session_id=sid))
    async with asyncio.timeout(5):
        ack_raw = await constellation.ws.recv()
    assert json.loads(ack_raw)["session_id"] == sid
    command = await device.recv_type("command")
    assert command["session_id"] == sid
    await device.send(results_for(command, "dev1"))
    end = await constellation.recv_type("task_end")
    assert end["session_id"] == sid
    assert (await device.recv_type("task_end"))["session_id"] == sid
    await device.close()
    await constellation.close()


@pytest.mark.parametrize("task_name", ["galaxy/x/t-1", "../etc", ".hidden", "a b\\c:d*"])
async def test_task_name_is_sanitized(stack: Stack, task_name: str) -> None:
    sid = "c1@t-5afe0001"
    device = await register_device(stack.ws_url, "dev1")
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    await constellation.send(task_frame("c1", plan([cmd("a")], [cmd("b")]),
                                        client_type="constellation", target_id="dev1",
                                        session_id=sid, task_name=task_name))
    assert_ack(await constellation.recv(), session_id=sid)
    names = set()
    for _ in range(2):
        command = await device.recv_type("command")
        names.add(command["task_name"])
        await device.send(results_for(command, "dev1"))
    end = await constellation.recv_type("task_end")
    assert_task_end(end, sid)
    names.add(end["task_name"])
    assert len(names) == 1, names
    (name,) = names
    assert SAFE_NAME.fullmatch(name), name
    assert not name.startswith(".")
    assert "/" not in name and "\\" not in name
    assert name != task_name
    session = next(iter(stack.service.manager.sessions.values()))
    assert session.task_name == name
    await device.close()
    await constellation.close()
