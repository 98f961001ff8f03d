"""Sessions run by the default plan agent, driven over real WebSockets.

Each test checks the frames the clients see (ack, ``command``, ``task_end``) and, where the
docs promise it, the session record the replica keeps (read back over the public gRPC
API).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aip_grpc import session_api_pb2
from tests.conftest import StackFactory
from tests.stack import (
    Client,
    Stack,
    answer_commands,
    cmd,
    get_session,
    no_running_sessions,
    plan,
    register_constellation,
    register_device,
    results_for,
    task_frame,
    wait_for,
)


async def self_task(device: Client, client_id: str, request: Any, *, session_id: str,
                    task_name: str = "t1") -> dict[str, Any]:
    """Send a device's task on itself and return the ack."""
    await device.send(task_frame(client_id, request, session_id=session_id,
                                 task_name=task_name))
    ack = await device.recv()
    assert ack["type"] == "heartbeat" and ack["status"] == "ok", ack
    assert ack["session_id"] == session_id
    return ack


async def assert_clean(stack: Stack) -> None:
    await wait_for(lambda: len(stack.gateway.registry) == 0 and not stack.gateway.routes
                   and no_running_sessions(stack))


# ---------------------------------------------------------------- plan forms


async def test_steps_plan_one_command_frame_per_step(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    await self_task(device, "dev1", plan([cmd("a"), cmd("b")], [cmd("c")]), session_id="s1")
    first = await device.recv_type("command")
    assert first["status"] == "continue"
    assert first["session_id"] == "s1" and first["task_name"] == "t1"
    assert [a["tool_name"] for a in first["actions"]] == ["a", "b"]
    assert all(a["tool_type"] == "action" and a["call_id"] for a in first["actions"])
    # The default agent name for a linux device routes the command to its tool server.
    assert first["agent_name"] == "LinuxAgent"
    await device.send(results_for(first, "dev1", result="r1"))
    second = await device.recv_type("command")
    assert [a["tool_name"] for a in second["actions"]] == ["c"]
    assert second["response_id"] != first["response_id"]
    await device.send(results_for(second, "dev1", result="r2"))
    end = await device.recv_type("task_end")
    assert end["status"] == "completed", end
    assert end["session_id"] == "s1"
    assert end.get("error") is None
    result = end["result"]
    assert [[r["status"] for r in step] for step in result] == [["success", "success"],
                                                                ["success"]]
    assert [[r["result"] for r in step] for step in result] == [["r1", "r1"], ["r2"]]
    assert [r["call_id"] for r in result[0]] == [a["call_id"] for a in first["actions"]]
    await device.close()
    await assert_clean(stack)


async def test_plain_list_is_one_command_per_step(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    request = json.dumps([cmd("a", x=1), cmd("b"), cmd("c")])
    await self_task(device, "dev1", request, session_id="s-list")
    commands = await answer_commands(device, "dev1", 3)
    assert [[a["tool_name"] for a in c["actions"]] for c in commands] == [["a"], ["b"], ["c"]]
    assert commands[0]["actions"][0]["parameters"] == {"x": 1}
    end = await device.recv_type("task_end")
    assert end["status"] == "completed", end
    assert len(end["result"]) == 3
    assert all(len(step) == 1 and step[0]["status"] == "success" for step in end["result"])
    await device.close()
    await assert_clean(stack)


async def test_failure_result_fails_session_at_that_step(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    await self_task(device, "dev1", plan([cmd("a")], [cmd("b")], [cmd("c")]), session_id="sf")
    await answer_commands(device, "dev1", 1)
    await answer_commands(device, "dev1", 1, status="failure")
    end = await device.recv_type("task_end")
    assert end["status"] == "failed", end
    assert "Step 2" in end["error"], end["error"]
    # The steps run so far are reported; the third step is never sent.
    assert [[r["status"] for r in step] for step in end["result"]] == [["success"],
                                                                      ["failure"]]
    await device.expect_silence(0.3)
    info = await get_session(stack.replica.address, "sf")
    assert info.state == session_api_pb2.SESSION_STATE_FAILED
    assert "Step 2" in info.error
    assert info.steps_done == 2 and info.steps_total == 3
    await device.close()
    await assert_clean(stack)


async def test_continue_on_failure_runs_every_step(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    await self_task(device, "dev1", plan([cmd("a")], [cmd("b")], continue_on_failure=True),
                    session_id="sc")
    await answer_commands(device, "dev1", 1, status="failure")
    await answer_commands(device, "dev1", 1)
    end = await device.recv_type("task_end")
    assert end["status"] == "completed", end
    assert end.get("error") is None
    assert [[r["status"] for r in step] for step in end["result"]] == [["failure"],
                                                                      ["success"]]
    await device.close()
    await assert_clean(stack)


async def test_step_object_routing_fields_and_timeout(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    step = {"actions": [cmd("open", path="/tmp")], "agent_name": "X", "process_name": "P",
            "root_name": "R", "timeout": 0.3}
    await self_task(device, "dev1", json.dumps({"steps": [step, [cmd("never")]]}),
                    session_id="so")
    command = await device.recv_type("command")
    assert command["agent_name"] == "X"
    assert command["process_name"] == "P"
    assert command["root_name"] == "R"
    assert command["actions"][0]["tool_name"] == "open"
    # The device never answers: the step's own 0.3 s timeout (not the 60 s default) ends it.
    end = await device.recv_type("task_end", timeout=3)
    assert end["status"] == "failed", end
    assert "Step 1" in end["error"]
    [[result]] = end["result"]
    assert result["status"] == "failure"
    assert result["error"] and "0.3" in result["error"]
    assert result["call_id"] == command["actions"][0]["call_id"]
    await device.expect_silence(0.2)
    await device.close()
    await assert_clean(stack)


async def test_default_command_timeout_from_settings(make_stack: StackFactory) -> None:
    stack = await make_stack(session={"command_timeout": 0.3})
    device = await register_device(stack.ws_url, "dev1")
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    await constellation.send(task_frame("c1", plan([cmd("a")]), client_type="constellation",
                                        target_id="dev1", session_id="sd"))
    ack = await constellation.recv()
    assert ack["type"] == "heartbeat" and ack["session_id"] == "sd"
    await device.recv_type("command")
    end = await constellation.recv_type("task_end", timeout=3)
    assert end["status"] == "failed", end
    assert end["result"][0][0]["status"] == "failure"
    assert end["result"][0][0]["error"]
    device_end = await device.recv_type("task_end", timeout=3)
    assert device_end["session_id"] == "sd" and device_end["status"] == "failed"
    await device.close()
    await constellation.close()
    await assert_clean(stack)


async def test_request_that_is_not_a_plan_fails_at_once(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    await device.send(task_frame("dev1", "open notepad", session_id="snl"))
    ack = await device.recv()
    assert ack["type"] == "heartbeat" and ack["status"] == "ok" and ack["session_id"] == "snl"
    end = await device.recv(timeout=3)
    assert end["type"] == "task_end", end
    assert end["status"] == "failed"
    assert end["session_id"] == "snl"
    assert "steps" in end["error"], end["error"]
    info = await get_session(stack.replica.address, "snl")
    assert info.state == session_api_pb2.SESSION_STATE_FAILED
    await device.close()
    await assert_clean(stack)


async def test_concurrent_sessions_on_several_devices(stack: Stack) -> None:
    count = 5
    devices = [await register_device(stack.ws_url, f"dev{i}") for i in range(count)]
    constellations = [await register_constellation(stack.ws_url, f"c{i}", f"dev{i}")
                      for i in range(count)]

    async def run(i: int) -> dict[str, Any]:
        constellation, device = constellations[i], devices[i]
        await constellation.send(task_frame(
            f"c{i}", plan([cmd(f"a{i}")], [cmd(f"b{i}")]), client_type="constellation",
            target_id=f"dev{i}", session_id=f"c{i}@s", task_name=f"job-{i}",
        ))
        ack = await constellation.recv()
        assert ack["session_id"] == f"c{i}@s"
        commands = await answer_commands(device, f"dev{i}", 2)
        assert [c["actions"][0]["tool_name"] for c in commands] == [f"a{i}", f"b{i}"]
        assert all(c["session_id"] == f"c{i}@s" for c in commands)
        return await constellation.recv_type("task_end")

    # All sessions are running at the same time before any device answers.
    ends = await asyncio.gather(*(run(i) for i in range(count)))
    for i, end in enumerate(ends):
        assert end["status"] == "completed", end
        assert end["session_id"] == f"c{i}@s"
        assert end["task_name"] == f"job-{i}"
    for client in (*devices, *constellations):
        await client.close()
    await assert_clean(stack)


async def test_sessions_run_concurrently_interleaved(stack: Stack) -> None:
    a = await register_device(stack.ws_url, "devA")
    b = await register_device(stack.ws_url, "devB")
    await self_task(a, "devA", plan([cmd("a1")], [cmd("a2")]), session_id="sA")
    await self_task(b, "devB", plan([cmd("b1")]), session_id="sB")
    command_a = await a.recv_type("command")
    command_b = await b.recv_type("command")
    assert len([s for s in stack.service.manager.sessions.values() if s.running]) == 2
    # B finishes while A is still waiting on its first step.
    await b.send(results_for(command_b, "devB"))
    end_b = await b.recv_type("task_end")
    assert end_b["status"] == "completed" and end_b["session_id"] == "sB"
    assert stack.service.manager.sessions["sA"].running
    await a.send(results_for(command_a, "devA"))
    await answer_commands(a, "devA", 1)
    end_a = await a.recv_type("task_end")
    assert end_a["status"] == "completed" and end_a["session_id"] == "sA"
    await a.close()
    await b.close()
    await assert_clean(stack)


async def test_session_deadline_fails_the_session(make_stack: StackFactory) -> None:
    stack = await make_stack(session={"session_timeout": 0.5})
    device = await register_device(stack.ws_url, "dev1")
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    await constellation.send(task_frame("c1", plan([cmd("slow")]), client_type="constellation",
                                        target_id="dev1", session_id="sdl"))
    await constellation.recv()
    await device.recv_type("command")  # never answered; the command timeout is 60 s
    end = await constellation.recv_type("task_end", timeout=3)
    assert end["status"] == "failed", end
    assert end["session_id"] == "sdl"
    assert end["error"] and "deadline" in end["error"].lower()
    info = await get_session(stack.replica.address, "sdl")
    assert info.state in (session_api_pb2.SESSION_STATE_FAILED,
                          session_api_pb2.SESSION_STATE_CANCELLED)
    assert info.HasField("ended_time")
    await device.close()
    await constellation.close()
    await assert_clean(stack)


# ---------------------------------------------------------------- session ids and records


async def test_same_clients_retry_of_an_ended_session_id_gets_its_end_again(
    stack: Stack,
) -> None:
    """An id is its requester's for as long as its record is kept: a retry runs
    nothing and gets the first session's task_end again."""
    device = await register_device(stack.ws_url, "dev1")
    await self_task(device, "dev1", plan([cmd("first")]), session_id="reuse", task_name="one")
    await answer_commands(device, "dev1", 1)
    end = await device.recv_type("task_end")
    assert end["status"] == "completed"
    await device.send(task_frame("dev1", plan([cmd("second")]), session_id="reuse",
                                 task_name="two"))
    again = await device.recv_type("task_end")
    fresh = ("timestamp", "response_id")  # the frame's own, not the session's
    assert {k: v for k, v in again.items() if k not in fresh} == \
        {k: v for k, v in end.items() if k not in fresh}
    await device.expect_silence()  # no command: the plan did not run again
    info = await get_session(stack.replica.address, "reuse")
    assert info.task_name == "one" and len(info.commands) == 1
    await device.close()
    await assert_clean(stack)


async def test_running_session_id_cannot_be_reused_by_same_client(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    await self_task(device, "dev1", plan([cmd("a")]), session_id="busy")
    command = await device.recv_type("command")
    await device.send(task_frame("dev1", plan([cmd("b")]), session_id="busy"))
    refusal = await device.recv_type("error")
    assert refusal["status"] == "error" and "busy" in refusal["error"]
    await device.send(results_for(command, "dev1"))
    end = await device.recv_type("task_end")
    assert end["status"] == "completed"
    assert [[r["status"] for r in s] for s in end["result"]] == [["success"]]
    await device.close()
    await assert_clean(stack)


async def test_session_id_of_another_client_is_refused(stack: Stack) -> None:
    dev1 = await register_device(stack.ws_url, "dev1")
    dev2 = await register_device(stack.ws_url, "dev2")
    await self_task(dev1, "dev1", plan([cmd("a")]), session_id="mine")
    command = await dev1.recv_type("command")
    # While it runs.
    await dev2.send(task_frame("dev2", plan([cmd("x")]), session_id="mine"))
    refusal = await dev2.recv_type("error")
    assert refusal["status"] == "error" and "mine" in refusal["error"]
    await dev1.send(results_for(command, "dev1"))
    assert (await dev1.recv_type("task_end"))["status"] == "completed"
    # And after it ended, while its record exists.
    await dev2.send(task_frame("dev2", plan([cmd("x")]), session_id="mine"))
    refusal = await dev2.recv_type("error")
    assert refusal["status"] == "error" and "mine" in refusal["error"]
    await dev2.expect_silence(0.3)
    await dev1.expect_silence(0.1)
    info = await get_session(stack.replica.address, "mine")
    assert info.requester_id == "dev1" and info.device_id == "dev1"
    await dev1.close()
    await dev2.close()
    await assert_clean(stack)


async def test_record_is_kept_after_the_end(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    await constellation.send(task_frame("c1", plan([cmd("a")], [cmd("b")]),
                                        client_type="constellation", target_id="dev1",
                                        session_id="c1@t-rec", task_name="galaxy/x/t-1"))
    await constellation.recv()
    await answer_commands(device, "dev1", 2)
    end = await constellation.recv_type("task_end")
    assert end["status"] == "completed"
    await device.close()
    await constellation.close()
    await assert_clean(stack)
    # Everybody is gone; the record stays.
    info = await get_session(stack.replica.address, "c1@t-rec")
    assert info.state == session_api_pb2.SESSION_STATE_COMPLETED
    assert info.device_id == "dev1" and info.requester_id == "c1"
    assert info.requester_kind == "constellation"
    assert info.task_name == "galaxy_x_t-1"  # sanitized on the WebSocket path
    assert json.loads(info.result_json) == end["result"]
    assert info.error == "" and info.cancel_reason == ""
    assert info.steps_done == 2 and info.steps_total == 2
    assert info.ended_time.ToNanoseconds() >= info.created_time.ToNanoseconds() > 0
