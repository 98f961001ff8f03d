"""Frames for a client written at once by the gateway's WebSocket protocol (its
``aip.write_now`` extension) while nothing else is pending for that client, and through
the ASGI ``send`` otherwise: either way every frame arrives, once, in order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aip_wire import frames
from gateway_service.ws_protocol import GatewayWebSocketProtocol
from tests.conftest import StackFactory
from tests.integration.exchange_support import assert_ack, assert_command, assert_task_end
from tests.stack import Stack, cmd, plan, register_device, results_for, task_frame


@pytest.fixture
def direct_writes(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each direct write the gateway tried was taken."""
    seen: list[bool] = []
    write_now = GatewayWebSocketProtocol.write_now

    def counting(self: GatewayWebSocketProtocol, text: str) -> bool:
        taken = write_now(self, text)
        seen.append(taken)
        return taken

    monkeypatch.setattr(GatewayWebSocketProtocol, "write_now", counting)
    return seen


async def test_a_sessions_commands_are_written_at_once(
        stack: Stack, direct_writes: list[bool]) -> None:
    device = await register_device(stack.ws_url, "dev-direct")
    try:
        steps = [[cmd("click", n=n)] for n in range(5)]
        await device.send(task_frame("dev-direct", plan(*steps), session_id="s-direct"))
        assert_ack(await device.recv(), session_id="s-direct")
        for n in range(5):
            command = await device.recv()
            assert_command(command, "s-direct")
            assert command["actions"][0]["parameters"] == {"n": n}
            await device.send(results_for(command, "dev-direct"))
        assert_task_end(await device.recv_type("task_end"), "s-direct")
        # The registration's heartbeat, the ack, five commands and the end, all taken.
        assert direct_writes.count(True) >= 7
    finally:
        await device.close()


async def test_frames_past_a_full_buffer_wait_in_order(
        make_stack: StackFactory, direct_writes: list[bool]) -> None:
    """A peer that does not read fills the transport: later frames are refused a direct
    write, queue, and still arrive after the ones written before them."""
    stack = await make_stack()
    device = await register_device(stack.ws_url, "dev-full")
    conn = stack.gateway.registry.get("dev-full")
    assert conn is not None
    try:
        for n in range(30):
            assert conn.send(frames.error_frame("z" * 200_000, session_id=f"s-{n}"))
        await asyncio.sleep(0.3)
        assert True in direct_writes and False in direct_writes, direct_writes
        for n in range(30):
            assert (await device.recv())["session_id"] == f"s-{n}"
        await device.send({"type": "heartbeat", "client_id": "dev-full"})
        assert (await device.recv())["type"] == "heartbeat"
    finally:
        await device.close()


async def test_no_direct_write_once_the_peer_has_closed(
        stack: Stack, direct_writes: list[bool]) -> None:
    device = await register_device(stack.ws_url, "dev-gone")
    conn = stack.gateway.registry.get("dev-gone")
    assert conn is not None
    protocol: Any = conn.outbox.write_now
    assert protocol is not None
    await device.close()
    for _ in range(100):
        if stack.gateway.registry.get("dev-gone") is None:
            break
        await asyncio.sleep(0.02)
    # The socket is gone: its protocol refuses, and the closed outbox no longer asks it.
    assert protocol("late") is False
    assert conn.outbox.write_now is None and conn.send_text("late") is False
