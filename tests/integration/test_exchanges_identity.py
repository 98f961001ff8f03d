"""After registration: the identity rules as attacks. A client cannot act as another
client, target a device it may not, read another device's info, answer another device's
commands, or take over a session id."""

from __future__ import annotations

import json

from tests.integration.exchange_support import (
    assert_ack,
    assert_command,
    assert_error,
    assert_task_end,
    heartbeat_acked,
    info_request,
    no_sessions,
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
from tests.wire import assert_wire_frame


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
