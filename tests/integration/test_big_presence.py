"""A replica restarted under a gateway with a thousand devices, each with 70 KB of device
info, learns all of them again.

The presence snapshot that opens the new link is 72 MB: more than one gRPC message may
carry (64 MiB before the link was bounded), so the link never came back. It now travels
as a Hello and presence pages of a few MiB each. Both services run as processes; the
replica is killed with SIGKILL and started again on its port.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
import pytest
import websockets

from aip_grpc import session_api_pb2, session_api_pb2_grpc
from aip_link.channel import CHANNEL_OPTIONS
from tests.processes import GatewayService, Replica
from tests.stack import register_frame

DEVICES = 1000
INFO_BYTES = 70_000


async def known_devices(replica: Replica) -> dict[str, int]:
    """device_id -> size of its device info, as the replica lists them. The answer (some
    70 MB) is past a default client's 4 MiB, hence the link's channel options."""
    async with grpc.aio.insecure_channel(replica.address, options=CHANNEL_OPTIONS) as channel:
        stub = session_api_pb2_grpc.SessionApiStub(channel)
        answer = await stub.ListDevices(session_api_pb2.ListDevicesRequest(), timeout=30)
    return {device.device_id: len(device.device_info_json) for device in answer.devices}


async def until_all_known(replica: Replica, timeout: float) -> dict[str, int]:
    deadline = asyncio.get_running_loop().time() + timeout
    known: dict[str, int] = {}
    while True:
        try:
            known = await known_devices(replica)
        except grpc.aio.AioRpcError:
            pass  # not up yet
        if len(known) == DEVICES:
            return known
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the replica knows {len(known)} of {DEVICES} devices")
        await asyncio.sleep(0.2)


async def connect_device(url: str, number: int) -> websockets.ClientConnection:
    ws = await websockets.connect(url, max_size=None, open_timeout=30)
    info = {"os": "Linux", "number": number, "blob": "i" * INFO_BYTES}
    await ws.send(json.dumps(register_frame(f"dev-{number:04}", "device",
                                            metadata={"platform": "linux",
                                                      "system_info": info})))
    async with asyncio.timeout(30):
        confirmation = json.loads(await ws.recv())
    assert confirmation["type"] == "heartbeat" and confirmation["status"] == "ok"
    return ws


@pytest.fixture
async def crowded() -> AsyncIterator[tuple[Replica, GatewayService]]:
    replica = Replica(grace=30.0)
    gateway = GatewayService("g1", [replica])
    replica.start()
    gateway.start()
    try:
        yield replica, gateway
    finally:
        gateway.stop()
        replica.stop()


async def test_a_restarted_replica_learns_a_thousand_large_devices_again(
    crowded: tuple[Replica, GatewayService],
) -> None:
    replica, gateway = crowded
    await gateway.wait_replicas(1)
    sockets: list[websockets.ClientConnection] = []
    try:
        for first in range(0, DEVICES, 100):
            sockets += await asyncio.gather(*(connect_device(gateway.ws_url, number)
                                              for number in range(first, first + 100)))
        before = await until_all_known(replica, timeout=60)
        assert min(before.values()) > INFO_BYTES

        replica.kill()
        replica.start()
        await gateway.wait_replicas(1, timeout=60)
        after = await until_all_known(replica, timeout=60)
        assert after == before
        assert sorted(after) == [f"dev-{number:04}" for number in range(DEVICES)]
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
