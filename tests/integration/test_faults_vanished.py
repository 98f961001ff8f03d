"""Fault injection: devices that vanish without a close frame, found by WebSocket pings
or by the gateway's silence limit.

The device's task ends exactly once for its requester (``task_end`` frames are collected
for a quiet period after the expected one arrived, so a duplicate is caught), the session
record says why, and nothing is left in any registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import websockets

from aip_grpc import session_api_pb2
from tests.conftest import StackFactory
from tests.integration.faults_support import Recorder, ended_once, until
from tests.stack import (
    Client,
    Stack,
    cmd,
    get_session,
    plan,
    register_constellation,
    register_device,
    register_frame,
    task_frame,
)

pb = session_api_pb2

def stack_released(stack: Stack) -> bool:
    gateway = stack.gateway
    manager = stack.service.manager
    return (len(gateway.registry) == 0 and gateway.routes == {} and not gateway.sessions.pending
            and len(stack.service.presence) == 0 and manager.active == 0
            and not any(s.running for s in manager.sessions.values()))


async def test_device_that_stops_reading_is_found_by_pings(make_stack: StackFactory) -> None:
    stack = await make_stack(gateway={"ws_ping_interval": 0.2, "ws_ping_timeout": 0.2})
    raw = await websockets.connect(stack.ws_url, ping_interval=None, max_size=None)
    await raw.send(json.dumps(register_frame("dev1")))
    async with asyncio.timeout(5):
        confirmation = json.loads(await raw.recv())
    assert confirmation["type"] == "heartbeat" and confirmation["status"] == "ok"
    device = Recorder(Client(raw), "dev1")
    constellation = Recorder(await register_constellation(stack.ws_url, "c1", "dev1"), "c1")
    await constellation.send(task_frame("c1", plan([cmd("a")], [cmd("b")]),
                                        client_type="constellation", target_id="dev1",
                                        session_id="c1@vanish", task_name="vanish"))
    await constellation.ack("c1@vanish")
    await device.command("c1@vanish")

    # The device vanishes: it never reads again, so it answers no ping and never closes.
    raw.transport.pause_reading()
    await until(lambda: stack.gateway.registry.get("dev1") is None, 5,
                "the gateway evicts the silent peer")
    ends = await ended_once(constellation, ["c1@vanish"], timeout=5)
    end = ends["c1@vanish"]
    assert end["status"] == "failed" and "device_disconnected" in (end["error"] or ""), end
    info = await get_session(stack.replica.address, "c1@vanish")
    assert info.state == pb.SESSION_STATE_CANCELLED, info
    assert info.cancel_reason == "device_disconnected"
    assert stack.gateway.registry.get("c1") is not None  # the constellation stays
    assert stack.gateway.routes == {}

    device.abort()
    await device.close()
    await constellation.close()
    await until(lambda: stack_released(stack), 5, "everything released")


async def test_device_silent_beyond_the_silence_limit_is_evicted(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(gateway={"silence_limit": 0.5, "ws_ping_interval": 0.1,
                                      "ws_ping_timeout": 1.0})
    # The device keeps answering WebSocket pings (its client reads all the time) but sends
    # no frame; the constellation heartbeats.
    device = Recorder(await register_device(stack.ws_url, "dev1"), "dev1")
    constellation = Recorder(await register_constellation(stack.ws_url, "c1", "dev1"), "c1")

    async def heartbeat() -> None:
        while True:
            await constellation.send({"type": "heartbeat", "status": "ok", "client_id": "c1"})
            await asyncio.sleep(0.1)

    beating = asyncio.get_running_loop().create_task(heartbeat())
    try:
        await constellation.send(task_frame("c1", plan([cmd("a")]), client_type="constellation",
                                            target_id="dev1", session_id="c1@mute",
                                            task_name="mute"))
        await constellation.ack("c1@mute")
        await device.command("c1@mute")
        await until(lambda: device.closed, 5, "the silent device is closed")
        assert device.close_code == 4408, device.close_code
        assert stack.gateway.registry.get("dev1") is None
        ends = await ended_once(constellation, ["c1@mute"], timeout=5)
        end = ends["c1@mute"]
        assert end["status"] == "failed" and "device_disconnected" in (end["error"] or ""), end
        info = await get_session(stack.replica.address, "c1@mute")
        assert info.state == pb.SESSION_STATE_CANCELLED, info
        assert info.cancel_reason == "device_disconnected"
        assert stack.gateway.registry.get("c1") is not None  # heartbeats keep it
        assert not constellation.closed
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
    await device.close()
    await constellation.close()
    await until(lambda: stack_released(stack), 5, "everything released")
