"""After registration: every exchange of aip-wire's table, the identity rules as attacks,
and heartbeats that stay prompt while a task is in flight."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from aip_link.messages import TaskSubmit
from tests.conftest import StackFactory
from tests.stack import (
    Client,
    Stack,
    answer_commands,
    cmd,
    plan,
    register_constellation,
    register_device,
    register_frame,
    results_for,
    task_frame,
    wait_for,
)
from tests.wire import assert_wire_frame

RESULT_STATUSES = {"success", "failure", "skipped", "none"}
TOOL_TYPES = {"action", "data_collection"}
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
SYSTEM_INFO = {"os": "Linux", "cpu_count": 2}


def assert_ack(frame: dict[str, Any], session_id: str | None = None) -> None:
    assert_wire_frame(frame)
    assert frame["type"] == "heartbeat" and frame["status"] == "ok", frame
    assert isinstance(frame["response_id"], str) and frame["response_id"], frame
    if session_id is not None:
        assert frame["session_id"] == session_id, frame


def assert_error(frame: dict[str, Any]) -> None:
    assert_wire_frame(frame)
    assert frame["type"] == "error" and frame["status"] == "error", frame
    assert isinstance(frame["error"], str) and frame["error"], frame


def assert_command(frame: dict[str, Any], session_id: str) -> None:
    assert_wire_frame(frame)
    assert frame["type"] == "command" and frame["status"] == "continue", frame
    assert frame["session_id"] == session_id, frame
    assert isinstance(frame["task_name"], str) and SAFE_NAME.fullmatch(frame["task_name"])
    assert isinstance(frame["response_id"], str) and frame["response_id"], frame
    assert isinstance(frame["actions"], list) and frame["actions"], frame
    for action in frame["actions"]:
        assert set(action) >= {"tool_name", "parameters", "tool_type", "call_id"}, action
        assert isinstance(action["tool_name"], str) and action["tool_name"]
        assert action["parameters"] is None or isinstance(action["parameters"], dict)
        assert action["tool_type"] in TOOL_TYPES, action
        assert isinstance(action["call_id"], str) and action["call_id"], action


def assert_task_end(frame: dict[str, Any], session_id: str, status: str = "completed") -> None:
    assert_wire_frame(frame)
    assert frame["type"] == "task_end", frame
    assert frame["status"] == status, frame
    assert frame["session_id"] == session_id, frame
    assert isinstance(frame["response_id"], str) and frame["response_id"], frame
    if status == "completed":
        assert frame.get("error") is None, frame
    else:
        assert isinstance(frame["error"], str) and frame["error"], frame


def heartbeat(client_id: str, client_type: str = "device") -> dict[str, Any]:
    return {"type": "heartbeat", "status": "ok", "client_type": client_type,
            "client_id": client_id, "timestamp": "2026-01-01T00:00:00+00:00"}


async def heartbeat_acked(client: Client, client_id: str, client_type: str = "device") -> None:
    """The connection is open and answers: the next frame is the heartbeat ack."""
    await client.send(heartbeat(client_id, client_type))
    ack = await client.recv(3)
    assert_ack(ack)
    assert ack.get("session_id") is None, ack


def info_request(client_id: str, target_id: str | None, request_id: str = "q1",
                 client_type: str = "constellation") -> dict[str, Any]:
    return {"type": "device_info_request", "status": "ok", "client_type": client_type,
            "client_id": client_id, "target_id": target_id, "request_id": request_id}


async def no_sessions(stack: Stack) -> None:
    await asyncio.sleep(0.1)  # anything wrongly submitted would be on the link by now
    assert not stack.service.manager.sessions, stack.service.manager.sessions
    assert not stack.gateway.routes, stack.gateway.routes


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


# ---------------------------------------------------------------- tasks


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
    ack_raw = await asyncio.wait_for(constellation.ws.recv(), 5)
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


# ---------------------------------------------------------------- device info


async def test_device_info_request_returns_system_info(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    await constellation.send(info_request("c1", "dev1", request_id="q-42"))
    response = await constellation.recv()
    assert_wire_frame(response)
    assert response["type"] == "device_info_response", response
    assert response["status"] == "ok", response
    assert response["result"] == SYSTEM_INFO
    assert response["response_id"] == "q-42"
    assert response.get("error") is None
    await device.expect_silence(0.2)
    await device.close()
    await constellation.close()


async def test_device_info_is_whole_metadata_without_system_info(stack: Stack) -> None:
    metadata = {"platform": "linux", "hostname": "box", "cpu": 4}
    device = await register_device(stack.ws_url, "dev1", metadata=metadata)
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    await constellation.send(info_request("c1", None, request_id="q2"))  # defaults to dev1
    response = await constellation.recv()
    assert response["type"] == "device_info_response" and response["status"] == "ok", response
    assert response["result"] == metadata
    assert response["response_id"] == "q2"
    await device.close()
    await constellation.close()


async def test_device_info_for_a_device_that_left_is_an_error_response(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    await device.close()
    await wait_for(lambda: stack.gateway.registry.get("dev1") is None)
    await constellation.send(info_request("c1", "dev1", request_id="q3"))
    response = await constellation.recv()
    assert_wire_frame(response)
    assert response["type"] == "device_info_response", response
    assert response["status"] == "error", response
    assert isinstance(response["error"], str) and response["error"], response
    assert response["response_id"] == "q3"
    assert not response.get("result")
    await heartbeat_acked(constellation, "c1")
    await constellation.close()


async def test_device_info_for_an_unknown_device_is_an_error_response(stack: Stack) -> None:
    constellation = await Client.connect(stack.ws_url)
    await constellation.send(register_frame("c1", "constellation", target_id=None))
    assert_ack(await constellation.recv())
    await constellation.send(info_request("c1", "ghost", request_id="q4"))
    response = await constellation.recv()
    assert_wire_frame(response)
    assert response["type"] == "device_info_response", response
    assert response["status"] == "error", response
    assert "ghost" in response["error"]
    assert response["response_id"] == "q4"
    await constellation.close()


async def test_device_pushes_fresh_info(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    fresh = {"os": "Linux", "cpu_count": 16, "screen": "1920x1080"}
    await device.send({"type": "device_info_response", "status": "ok", "client_type": "device",
                       "client_id": "dev1", "metadata": {"platform": "linux",
                                                         "system_info": fresh}})
    await device.expect_silence(0.3)  # no answer to a push
    await constellation.send(info_request("c1", "dev1", request_id="q5"))
    response = await constellation.recv()
    assert response["type"] == "device_info_response" and response["status"] == "ok"
    assert response["result"] == fresh
    assert response["response_id"] == "q5"
    # The session service sees the new info too.
    await wait_for(lambda: stack.service.presence.device("dev1").device_info == fresh)  # type: ignore[union-attr]
    await heartbeat_acked(device, "dev1")
    await device.close()
    await constellation.close()


# ---------------------------------------------------------------- errors


async def test_client_error_report_is_acknowledged(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    await device.send({"type": "error", "status": "error", "client_type": "device",
                       "client_id": "dev1", "error": "tool server crashed"})
    ack = await device.recv()
    assert_error(ack)
    await heartbeat_acked(device, "dev1")
    assert stack.gateway.registry.get("dev1") is not None
    await device.close()


@pytest.mark.parametrize(
    "raw",
    [
        "{not json",
        "[1, 2]",
        "null",
        '{"status": "ok", "client_id": "dev1"}',
        '{"type": "bogus", "client_id": "dev1"}',
        '{"type": "heartbeat", "client_id": 42}',
        '{"type": "task", "client_id": "dev1", "request": 17, "task_name": "t1"}',
        '{"type": "task", "client_id": "dev1", "request": "   ", "task_name": "t1"}',
        '{"type": "command_results", "client_id": "dev1", "session_id": "s",'
        ' "action_results": "not a list"}',
        '{"type": "device_info_response", "client_id": "dev1", "metadata": [1]}',
        b"\xff\xfe\xfd",
    ],
    ids=["bad-json", "array", "null", "no-type", "unknown-type", "int-client-id",
         "number-request", "blank-request", "results-not-list", "metadata-not-object",
         "not-utf8"],
)
async def test_malformed_frame_after_registration_keeps_the_connection(
    stack: Stack, raw: str | bytes
) -> None:
    device = await register_device(stack.ws_url, "dev1")
    await device.send(raw)
    assert_error(await device.recv())
    await heartbeat_acked(device, "dev1")
    await no_sessions(stack)
    await device.close()


# ---------------------------------------------------------------- identity attacks


async def test_task_claiming_another_client_id_is_refused(stack: Stack) -> None:
    dev1 = await register_device(stack.ws_url, "dev1")
    dev2 = await register_device(stack.ws_url, "dev2")
    await dev1.send(task_frame("dev2", plan([cmd("a")]), session_id="s-forged"))
    assert_error(await dev1.recv())
    await no_sessions(stack)
    await dev2.expect_silence(0.2)
    await heartbeat_acked(dev1, "dev1")
    await dev1.close()
    await dev2.close()


async def test_device_task_claiming_constellation_is_refused(stack: Stack) -> None:
    dev1 = await register_device(stack.ws_url, "dev1")
    dev2 = await register_device(stack.ws_url, "dev2")
    await dev1.send(task_frame("dev1", plan([cmd("a")]), client_type="constellation",
                               target_id="dev2", session_id="s-forged"))
    assert_error(await dev1.recv())
    await no_sessions(stack)
    await dev2.expect_silence(0.2)
    await dev1.close()
    await dev2.close()


async def test_device_targeting_another_device_is_refused(stack: Stack) -> None:
    dev1 = await register_device(stack.ws_url, "dev1")
    dev2 = await register_device(stack.ws_url, "dev2")
    await dev1.send(task_frame("dev1", plan([cmd("a")]), target_id="dev2",
                               session_id="s-forged"))
    assert_error(await dev1.recv())
    await no_sessions(stack)
    await dev2.expect_silence(0.2)
    await dev1.close()
    await dev2.close()


async def test_constellation_task_must_name_a_connected_device(stack: Stack) -> None:
    dev1 = await register_device(stack.ws_url, "dev1")
    c1 = await register_constellation(stack.ws_url, "c1", "dev1")
    c2 = await register_constellation(stack.ws_url, "c2", "dev1")
    for target in (None, "ghost", "c2"):
        await c1.send(task_frame("c1", plan([cmd("a")]), client_type="constellation",
                                 target_id=target, session_id="s-x"))
        assert_error(await c1.recv())
    await no_sessions(stack)
    await c2.expect_silence(0.1)
    await dev1.expect_silence(0.1)
    for client in (dev1, c1, c2):
        await client.close()


async def test_device_asking_device_info_is_refused(stack: Stack) -> None:
    dev1 = await register_device(stack.ws_url, "dev1")
    dev2 = await register_device(stack.ws_url, "dev2",
                                 metadata={"platform": "linux", "system_info": {"secret": 1}})
    await dev1.send(info_request("dev1", "dev2", client_type="device"))
    frame = await dev1.recv()
    assert_error(frame)
    assert "secret" not in json.dumps(frame)
    await heartbeat_acked(dev1, "dev1")
    await dev1.close()
    await dev2.close()


async def test_constellation_cannot_read_another_devices_info(stack: Stack) -> None:
    dev1 = await register_device(stack.ws_url, "dev1")
    dev2 = await register_device(stack.ws_url, "dev2",
                                 metadata={"platform": "linux", "system_info": {"secret": 2}})
    c1 = await register_constellation(stack.ws_url, "c1", "dev1")
    await c1.send(info_request("c1", "dev2", request_id="q6"))
    frame = await c1.recv()
    assert_wire_frame(frame)
    assert frame["type"] in {"error", "device_info_response"}, frame
    assert frame["status"] == "error", frame
    assert isinstance(frame["error"], str) and frame["error"]
    assert "secret" not in json.dumps(frame)
    await heartbeat_acked(c1, "c1")
    for client in (dev1, dev2, c1):
        await client.close()


async def test_forged_command_results_are_dropped(stack: Stack) -> None:
    sid = "c1@t-f0f0f0f0"
    dev1 = await register_device(stack.ws_url, "dev1")
    dev2 = await register_device(stack.ws_url, "dev2")
    c1 = await register_constellation(stack.ws_url, "c1", "dev1")
    await c1.send(task_frame("c1", plan([cmd("a")]), client_type="constellation",
                             target_id="dev1", session_id=sid))
    assert_ack(await c1.recv(), session_id=sid)
    command = await dev1.recv()
    assert_command(command, sid)

    # Another device answers under its own identity: dropped silently.
    await dev2.send(results_for(command, "dev2", result="forged"))
    # Another device answers claiming to be dev1: refused with an error frame.
    await dev2.send(results_for(command, "dev1", result="forged"))
    assert_error(await dev2.recv())
    # The requesting constellation answers in the device's place: dropped or refused.
    forged = results_for(command, "c1", result="forged")
    forged["client_type"] = None
    await c1.send(forged)

    await c1.expect_silence(0.3)  # no task_end: the session still waits
    await dev2.expect_silence(0.05)
    session = stack.service.manager.sessions[sid]
    assert session.running

    await dev1.send(results_for(command, "dev1", result="real"))
    end = await c1.recv_type("task_end")
    assert_task_end(end, sid)
    assert [[r["result"] for r in step] for step in end["result"]] == [["real"]]
    assert_task_end(await dev1.recv_type("task_end"), sid)
    for client in (dev1, dev2, c1):
        await client.close()


async def test_command_results_for_unknown_session_create_nothing(stack: Stack) -> None:
    dev1 = await register_device(stack.ws_url, "dev1")
    await dev1.send({
        "type": "command_results", "status": "continue", "client_type": "device",
        "client_id": "dev1", "session_id": "never-started", "prev_response_id": "r1",
        "action_results": [{"status": "success", "error": None, "result": 1,
                            "namespace": None, "call_id": "x"}],
    })
    await dev1.expect_silence(0.3)  # no answer to command_results
    await no_sessions(stack)
    await heartbeat_acked(dev1, "dev1")
    await dev1.close()


async def test_session_id_of_another_client_cannot_be_reused(stack: Stack) -> None:
    sid = "shared@t-00000001"
    dev1 = await register_device(stack.ws_url, "dev1")
    dev2 = await register_device(stack.ws_url, "dev2")
    c1 = await register_constellation(stack.ws_url, "c1", "dev2")
    await dev1.send(task_frame("dev1", plan([cmd("a")]), session_id=sid))
    assert_ack(await dev1.recv(), session_id=sid)
    command = await dev1.recv()
    assert_command(command, sid)

    await dev2.send(task_frame("dev2", plan([cmd("b")]), session_id=sid))
    assert_error(await dev2.recv())
    await c1.send(task_frame("c1", plan([cmd("b")]), client_type="constellation",
                             target_id="dev2", session_id=sid))
    assert_error(await c1.recv())
    await dev2.expect_silence(0.2)  # no command for the hijacked session

    # The owner's session is untouched.
    assert stack.service.manager.sessions[sid].requester_id == "dev1"
    await dev1.send(results_for(command, "dev1"))
    assert_task_end(await dev1.recv_type("task_end"), sid)
    for client in (dev1, dev2, c1):
        await client.close()


async def test_own_running_session_id_cannot_be_started_twice(stack: Stack) -> None:
    sid = "dev1@t-twice001"
    dev1 = await register_device(stack.ws_url, "dev1")
    await dev1.send(task_frame("dev1", plan([cmd("a")]), session_id=sid))
    assert_ack(await dev1.recv(), session_id=sid)
    command = await dev1.recv()
    await dev1.send(task_frame("dev1", plan([cmd("b")]), session_id=sid))
    error = await dev1.recv()
    assert_error(error)
    await dev1.send(results_for(command, "dev1"))
    end = await dev1.recv_type("task_end")
    assert_task_end(end, sid)
    assert [[r["call_id"] for r in step] for step in end["result"]] == [
        [command["actions"][0]["call_id"]]
    ]
    await dev1.expect_silence(0.2)  # no command of the second task
    await dev1.close()


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
