"""The TCP balancer in front of the replicas: each connection goes to the next replica
in turn, a dead one is skipped, and the target name is resolved again."""

from __future__ import annotations

import asyncio

import grpc

from aip_grpc import session_api_pb2 as pb
from aip_grpc import session_api_pb2_grpc
from session_service.balancer import Balancer, split_address
from tests.processes import free_port
from tests.stack import HOST, GatewayProcess, SessionReplica, cmd, plan, register_device


async def _start_through(address: str, session_id: str) -> str:
    """StartSession on a fresh channel (a fresh connection); the replica that ran it."""
    async with grpc.aio.insecure_channel(address) as channel:
        info = await session_api_pb2_grpc.SessionApiStub(channel).StartSession(
            pb.StartSessionRequest(device_id="dev1", request=plan([cmd()]),
                                   session_id=session_id), timeout=5)
    return info.replica_id


async def test_connections_spread_over_the_replicas_and_skip_a_dead_one() -> None:
    replicas = [SessionReplica(replica_id=f"r{n}") for n in range(3)]
    for replica in replicas:
        await replica.start()
    gateway = GatewayProcess([r.address for r in replicas])
    await gateway.start()
    dead = (HOST, free_port())  # nothing listens there
    balancer = Balancer((HOST, 0), targets=[(HOST, r.port) for r in replicas] + [dead])
    try:
        await gateway.wait_linked(3)
        device = await register_device(gateway.ws_url, "dev1")
        for replica in replicas:
            for _ in range(100):
                if replica.service.presence.device("dev1") is not None:
                    break
                await asyncio.sleep(0.05)
        await balancer.start()
        address = f"{HOST}:{balancer.port}"
        ran = [await _start_through(address, f"s-{n}") for n in range(6)]
        # Four targets in turn, the dead one skipped (to the next): every live replica
        # gets connections.
        assert set(ran) == {"r0", "r1", "r2"}, ran
        await device.close()
    finally:
        await balancer.stop()
        await gateway.stop()
        for replica in replicas:
            await replica.stop()


async def test_no_live_replica_closes_the_connection() -> None:
    balancer = Balancer((HOST, 0), targets=[(HOST, free_port())], connect_timeout=1)
    await balancer.start()
    try:
        reader, writer = await asyncio.open_connection(HOST, balancer.port)
        async with asyncio.timeout(5):
            assert await reader.read() == b""
        writer.close()
    finally:
        await balancer.stop()


async def test_the_target_name_is_resolved_and_followed() -> None:
    replica = SessionReplica()
    await replica.start()
    balancer = Balancer((HOST, 0), ("localhost", replica.port), resolve_interval=0.1)
    try:
        await balancer.start()
        assert (HOST, replica.port) in balancer.addresses
        async with grpc.aio.insecure_channel(f"{HOST}:{balancer.port}") as channel:
            answer = await session_api_pb2_grpc.SessionApiStub(channel).ListDevices(
                pb.ListDevicesRequest(), timeout=5)
        assert not answer.devices
    finally:
        await balancer.stop()
        await replica.stop()


def test_addresses() -> None:
    assert split_address("0.0.0.0:50050") == ("0.0.0.0", 50050)
    assert split_address("session:50051") == ("session", 50051)
    assert split_address("[::1]:1") == ("::1", 1)
