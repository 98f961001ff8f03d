"""Registration over real sockets: the seed's validation table and aip-wire's exchanges.

Every refusal must be an ``error`` frame (``status: error``) followed by a close with an
application close code (4000-4999); every confirmation is exactly a ``heartbeat``/``ok``
frame, the frame real clients wait for.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from gateway_service.auth import hash_token
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
    task_frame,
    wait_for,
)
from tests.wire import assert_iso_utc, assert_wire_frame


def assert_confirmation(frame: dict[str, Any]) -> None:
    assert_wire_frame(frame)
    assert frame["type"] == "heartbeat", frame
    assert frame["status"] == "ok", frame
    assert isinstance(frame["response_id"], str) and frame["response_id"], frame
    assert_iso_utc(frame["timestamp"])
    assert frame.get("error") is None, frame


async def expect_refusal(client: Client, timeout: float = 3.0) -> tuple[dict[str, Any], int]:
    """The error frame of a refused registration, then the 4xxx close code."""
    frame = await client.recv(timeout)
    assert_wire_frame(frame)
    assert frame["type"] == "error", frame
    assert frame["status"] == "error", frame
    assert isinstance(frame["error"], str) and frame["error"], frame
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(timeout):
            extra = await client.ws.recv()
        raise AssertionError(f"frame after the refusal: {extra!r}")
    assert closed.value.rcvd is not None, "the server did not send a close frame"
    code = closed.value.rcvd.code
    assert 4000 <= code <= 4999, f"close code {code} is not an application (4xxx) code"
    return frame, code


async def heartbeat_acked(client: Client, client_id: str) -> None:
    await client.send({"type": "heartbeat", "status": "ok", "client_id": client_id,
                       "client_type": "device", "timestamp": "2026-01-01T00:00:00+00:00"})
    ack = await client.recv(3)
    assert_wire_frame(ack)
    assert ack["type"] == "heartbeat" and ack["status"] == "ok", ack


# ---------------------------------------------------------------- accepted registrations


async def test_device_confirmation_is_exactly_a_heartbeat_ok(stack: Stack) -> None:
    client = await Client.connect(stack.ws_url)
    await client.send(register_frame("dev1"))
    confirmation = await client.recv()
    assert_confirmation(confirmation)
    assert set(confirmation) <= {"type", "status", "response_id", "timestamp", "session_id",
                                 "error", "result"}
    # One frame, nothing more: the reference device reads exactly one frame.
    await client.expect_silence(0.3)
    conn = stack.gateway.registry.get("dev1")
    assert conn is not None and conn.client_type == "device"
    assert conn.platform == "linux"
    assert conn.device_info == {"os": "Linux", "cpu_count": 2}
    await wait_for(lambda: stack.service.presence.device("dev1") is not None)
    await client.close()


async def test_each_confirmation_has_its_own_response_id(stack: Stack) -> None:
    first = await Client.connect(stack.ws_url)
    await first.send(register_frame("dev1"))
    second = await Client.connect(stack.ws_url)
    await second.send(register_frame("dev2"))
    a, b = await first.recv(), await second.recv()
    assert_confirmation(a)
    assert_confirmation(b)
    assert a["response_id"] != b["response_id"]
    await first.close()
    await second.close()


async def test_constellation_registers_with_a_connected_target(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    client = await Client.connect(stack.ws_url)
    await client.send(register_frame("c1", "constellation", target_id="dev1"))
    confirmation = await client.recv()
    assert_confirmation(confirmation)
    await client.expect_silence(0.2)
    conn = stack.gateway.registry.get("c1")
    assert conn is not None and conn.client_type == "constellation" and conn.target_id == "dev1"
    await heartbeat_acked(client, "c1")
    await client.close()
    await device.close()


async def test_uppercase_enumerations_are_accepted(stack: Stack) -> None:
    device = await Client.connect(stack.ws_url)
    await device.send(register_frame("dev1", "DEVICE", type="REGISTER", status="OK"))
    assert_confirmation(await device.recv())
    assert stack.gateway.registry.get("dev1").client_type == "device"  # type: ignore[union-attr]

    constellation = await Client.connect(stack.ws_url)
    await constellation.send(register_frame("c1", "Constellation", type="Register",
                                            target_id="dev1"))
    assert_confirmation(await constellation.recv())
    assert stack.gateway.registry.get("c1").client_type == "constellation"  # type: ignore[union-attr]
    await heartbeat_acked(device, "dev1")
    await device.close()
    await constellation.close()


async def test_binary_frame_with_utf8_json_is_accepted(stack: Stack) -> None:
    client = await Client.connect(stack.ws_url)
    metadata = {"platform": "linux", "system_info": {"hostname": "héllo-✓"}}
    await client.send(json.dumps(register_frame("dev-ü", metadata=metadata),
                                 ensure_ascii=False).encode("utf-8"))
    assert_confirmation(await client.recv())
    conn = stack.gateway.registry.get("dev-ü")
    assert conn is not None and conn.device_info == {"hostname": "héllo-✓"}
    # Later binary frames are accepted too.
    await client.send(json.dumps({"type": "heartbeat", "client_id": "dev-ü"}).encode())
    ack = await client.recv()
    assert ack["type"] == "heartbeat" and ack["status"] == "ok", ack
    await client.close()


async def test_absent_client_type_means_device(stack: Stack) -> None:
    frame = register_frame("dev1")
    del frame["client_type"]
    client = await Client.connect(stack.ws_url)
    await client.send(frame)
    assert_confirmation(await client.recv())
    conn = stack.gateway.registry.get("dev1")
    assert conn is not None and conn.client_type == "device"
    # ...so a constellation can target it.
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    await client.close()
    await constellation.close()


async def test_minimal_register_frame_is_accepted(stack: Stack) -> None:
    """Lenient on input: only ``type`` and ``client_id``; platform defaults to windows."""
    client = await Client.connect(stack.ws_url)
    await client.send({"type": "register", "client_id": "dev1"})
    assert_confirmation(await client.recv())
    conn = stack.gateway.registry.get("dev1")
    assert conn is not None and conn.client_type == "device" and conn.platform == "windows"
    await client.close()


# ---------------------------------------------------------------- refused registrations


async def test_constellation_with_unconnected_target_is_refused(stack: Stack) -> None:
    client = await Client.connect(stack.ws_url)
    await client.send(register_frame("c1", "constellation", target_id="dev9"))
    frame, _code = await expect_refusal(client)
    assert frame["error"] == "Target device 'dev9' is not connected"
    assert stack.gateway.registry.get("c1") is None
    assert len(stack.gateway.registry) == 0


async def test_constellation_targeting_a_constellation_is_refused(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    first = await register_constellation(stack.ws_url, "c0", "dev1")
    client = await Client.connect(stack.ws_url)
    await client.send(register_frame("c1", "constellation", target_id="c0"))
    frame, _code = await expect_refusal(client)
    assert frame["error"] == "Target device 'c0' is not connected"
    assert stack.gateway.registry.get("c1") is None
    await heartbeat_acked(first, "c0")
    await device.close()
    await first.close()


async def test_refusal_with_a_long_non_ascii_target_still_closes_with_4xxx(
    stack: Stack,
) -> None:
    """The close reason is limited to 123 bytes; a long UTF-8 id must not break the close."""
    target = "設備" * 40
    client = await Client.connect(stack.ws_url)
    await client.send(register_frame("c1", "constellation", target_id=target))
    frame, _code = await expect_refusal(client)
    assert frame["error"] == f"Target device '{target}' is not connected"


@pytest.mark.parametrize("client_id", [None, "", "   ", "absent"])
async def test_missing_or_empty_client_id_is_refused(stack: Stack, client_id: Any) -> None:
    frame = register_frame("x")
    if client_id == "absent":
        del frame["client_id"]
    else:
        frame["client_id"] = client_id
    client = await Client.connect(stack.ws_url)
    await client.send(frame)
    error, _code = await expect_refusal(client)
    assert "client id" in error["error"].lower() or "client_id" in error["error"].lower()
    assert len(stack.gateway.registry) == 0


@pytest.mark.parametrize(
    "first",
    [
        {"type": "heartbeat", "status": "ok", "client_id": "dev1"},
        {"type": "task", "status": "continue", "client_id": "dev1", "request": "x",
         "task_name": "t1"},
        {"type": "command_results", "client_id": "dev1", "session_id": "s1",
         "action_results": []},
        {"type": "device_info_request", "client_id": "dev1", "target_id": "dev1"},
    ],
    ids=["heartbeat", "task", "command_results", "device_info_request"],
)
async def test_first_frame_not_register_is_refused(
    stack: Stack, first: dict[str, Any]
) -> None:
    client = await Client.connect(stack.ws_url)
    await client.send(first)
    error, _code = await expect_refusal(client)
    assert "regist" in error["error"].lower(), error
    assert len(stack.gateway.registry) == 0
    assert not stack.service.manager.sessions


@pytest.mark.parametrize(
    "raw",
    [
        "{not json",
        "",
        "[1, 2, 3]",
        '"register"',
        '{"client_id": "dev1", "client_type": "device"}',
        '{"type": "register", "client_id": 17}',
        b"\xff\xfe\x00garbage",
    ],
    ids=["bad-json", "empty", "array", "string", "no-type", "int-client-id", "not-utf8"],
)
async def test_malformed_first_frame_is_refused(stack: Stack, raw: str | bytes) -> None:
    client = await Client.connect(stack.ws_url)
    await client.send(raw)
    await expect_refusal(client)
    assert len(stack.gateway.registry) == 0


async def test_unknown_client_type_is_refused(stack: Stack) -> None:
    client = await Client.connect(stack.ws_url)
    await client.send(register_frame("x1", "robot"))
    await expect_refusal(client)
    assert stack.gateway.registry.get("x1") is None


async def test_registration_timeout_refuses_with_4408(make_stack: StackFactory) -> None:
    stack = await make_stack(gateway={"registration_timeout": 0.3})
    client = await Client.connect(stack.ws_url)
    frame, code = await expect_refusal(client, timeout=3.0)
    assert code == 4408
    assert "time" in frame["error"].lower(), frame
    assert len(stack.gateway.registry) == 0


async def test_registration_in_time_is_not_hit_by_the_timeout(make_stack: StackFactory) -> None:
    stack = await make_stack(gateway={"registration_timeout": 0.3})
    client = await register_device(stack.ws_url, "dev1")
    await asyncio.sleep(0.45)  # past the registration timeout
    await heartbeat_acked(client, "dev1")
    assert stack.gateway.registry.get("dev1") is not None
    await client.close()


async def test_second_register_after_registration_is_an_error_not_a_close(
    stack: Stack,
) -> None:
    client = await register_device(stack.ws_url, "dev1")
    await client.send(register_frame("dev2"))
    error = await client.recv()
    assert_wire_frame(error)
    assert error["type"] == "error" and error["status"] == "error"
    assert stack.gateway.registry.get("dev2") is None
    await heartbeat_acked(client, "dev1")
    await client.close()


# ---------------------------------------------------------------- duplicate client ids


async def test_duplicate_client_id_refused_while_the_holder_answers(stack: Stack) -> None:
    holder = await register_device(stack.ws_url, "dev1")
    holder_conn = stack.gateway.registry.get("dev1")
    newcomer = await Client.connect(stack.ws_url)
    await newcomer.send(register_frame("dev1"))
    frame, code = await expect_refusal(newcomer)
    assert code == 4409
    assert "another live connection holds client_id 'dev1'" in frame["error"]
    assert stack.gateway.registry.get("dev1") is holder_conn
    await heartbeat_acked(holder, "dev1")
    await holder.close()


TOKENS = f"dev1 device {hash_token('dev-secret')};c1 constellation {hash_token('c-secret')}"


async def test_duplicate_client_id_newer_connection_with_token_takes_over(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(gateway={"tokens": TOKENS})
    url = stack.ws_url + "?token=dev-secret"
    old = await register_device(url, "dev1")
    old_conn = stack.gateway.registry.get("dev1")
    new = await register_device(url, "dev1")
    new_conn = stack.gateway.registry.get("dev1")
    assert new_conn is not None and new_conn is not old_conn

    # The stale socket is closed by the server, with a close frame.
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(3):
            await old.ws.recv()
    assert closed.value.rcvd is not None, "the old socket was dropped without a close frame"
    async with asyncio.timeout(3):
        await old.ws.wait_closed()
    await asyncio.sleep(0.2)  # let the old socket's cleanup run on the server

    # Its cleanup did not clobber the new registration.
    assert stack.gateway.registry.get("dev1") is new_conn
    assert len(stack.gateway.registry) == 1
    await heartbeat_acked(new, "dev1")
    assert stack.service.presence.device("dev1") is not None

    # The session service still knows the device: it can run a task on itself.
    await new.send(task_frame("dev1", plan([cmd("a")]), session_id="dev1@t-00000001"))
    await answer_commands(new, "dev1", 1)
    end = await new.recv_type("task_end")
    assert end["status"] == "completed" and end["session_id"] == "dev1@t-00000001", end
    await new.close()
    await wait_for(lambda: len(stack.gateway.registry) == 0)


async def test_takeover_then_old_client_closing_itself_keeps_the_new_one(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(gateway={"tokens": TOKENS})
    url = stack.ws_url + "?token=dev-secret"
    old = await register_device(url, "dev1")
    new = await register_device(url, "dev1")
    new_conn = stack.gateway.registry.get("dev1")
    await old.close()  # whatever the old socket's state, closing it changes nothing
    await asyncio.sleep(0.2)
    assert stack.gateway.registry.get("dev1") is new_conn
    constellation = await register_constellation(stack.ws_url + "?token=c-secret", "c1",
                                                 "dev1")
    await heartbeat_acked(new, "dev1")
    await new.close()
    await constellation.close()


async def test_duplicate_refused_when_configured(make_stack: StackFactory) -> None:
    stack = await make_stack(gateway={"refuse_duplicates": True})
    first = await register_device(stack.ws_url, "dev1")
    first_conn = stack.gateway.registry.get("dev1")
    second = await Client.connect(stack.ws_url)
    await second.send(register_frame("dev1"))
    frame, code = await expect_refusal(second)
    assert code == 4409
    assert "dev1" in frame["error"]
    assert stack.gateway.registry.get("dev1") is first_conn
    await heartbeat_acked(first, "dev1")
    await first.close()
