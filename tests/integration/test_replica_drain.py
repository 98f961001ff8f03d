"""Admission control of a replica: graceful drain on stop/SIGTERM, no limit per device."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aip_grpc import session_api_pb2, session_api_pb2_grpc
from session_service.store import SessionStore
from tests.conftest import StackFactory
from tests.processes import GatewayService, Replica
from tests.stack import (
    Client,
    answer_commands,
    cmd,
    plan,
    register_constellation,
    register_device,
    results_for,
    task_frame,
    wait_for,
)

pb = session_api_pb2


async def start_session(address: str, device_id: str, session_id: str) -> pb.SessionInfo:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = session_api_pb2_grpc.SessionApiStub(channel)
        info: pb.SessionInfo = await stub.StartSession(pb.StartSessionRequest(
            device_id=device_id, request=plan([cmd("a")], [cmd("b")]), session_id=session_id,
        ), timeout=5)
        return info


async def health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5)
        return int(answer.status)


async def connect_pair(url: str, device_id: str) -> tuple[Client, Client]:
    """A device and a constellation ``c-<device_id>`` that drives it."""
    device = await register_device(url, device_id)
    return device, await register_constellation(url, f"c-{device_id}", device_id)


async def constellation_task(constellation: Client, device_id: str, session_id: str) -> None:
    await constellation.send(task_frame(f"c-{device_id}", plan([cmd("a")], [cmd("b")]),
                                        client_type="constellation", target_id=device_id,
                                        session_id=session_id))


async def test_drain_lets_a_running_session_finish_and_refuses_new_ones(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(session={"drain_timeout": 10.0, "store_path": ":memory:"})
    device, requester = await connect_pair(stack.ws_url, "dev1")
    await constellation_task(requester, "dev1", "finishing")
    assert (await requester.recv())["session_id"] == "finishing"  # the ack
    first = await device.recv_type("command")

    loop = asyncio.get_running_loop()
    began = loop.time()
    stopping = loop.create_task(stack.service.stop(grace=0.5))
    await wait_for(lambda: stack.service.manager.draining)
    assert await health(stack.replica.address) == health_pb2.HealthCheckResponse.NOT_SERVING

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await start_session(stack.replica.address, "dev1", "too-late")
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "replica is draining" in (refused.value.details() or "")
    await constellation_task(requester, "dev1", "too-late-ws")
    error = await requester.recv_type("error")
    # The gateway tries the other replicas, and there are none here.
    assert "draining" in error["error"] and error["session_id"] == "too-late-ws"

    # The running session goes on: its results still arrive through the open link.
    await device.send(results_for(first, "dev1"))
    await answer_commands(device, "dev1", 1)
    end = await requester.recv_type("task_end")
    assert end["status"] == "completed" and end["session_id"] == "finishing"
    async with asyncio.timeout(5):
        await stopping
    assert loop.time() - began < 5  # it stopped once the session was done, not at 10 s
    await device.close()
    await requester.close()


async def test_drain_deadline_cancels_with_replica_shutdown(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    path = str(tmp_path / "records.sqlite3")
    stack = await make_stack(session={"drain_timeout": 0.5, "store_path": path})
    device, requester = await connect_pair(stack.ws_url, "dev1")
    await constellation_task(requester, "dev1", "stuck")
    await device.recv_type("command")  # never answered

    loop = asyncio.get_running_loop()
    began = loop.time()
    await stack.service.stop(grace=0.5)
    assert 0.4 < loop.time() - began < 5
    end = await requester.recv_type("task_end")
    assert end["status"] == "failed" and end["session_id"] == "stuck"
    assert "replica_shutdown" in end["error"]
    assert (await device.recv_type("task_end"))["status"] == "failed"

    # The store was flushed before the server stopped.
    store = SessionStore(path, "reader")
    await asyncio.to_thread(store.open)
    try:
        record = await asyncio.to_thread(store.get, "stuck")
    finally:
        await asyncio.to_thread(store.close)
    assert record is not None and record.state == "cancelled"
    assert record.cancel_reason == "replica_shutdown"
    assert [c.status for c in record.commands] == ["unanswered"]
    await device.close()
    await requester.close()


async def test_sigterm_drains_the_replica_process(tmp_path: Path) -> None:
    replica = Replica(grace=0.5)
    replica.args += ["--drain-timeout", "1", "--store-path", str(tmp_path / "r.sqlite3")]
    gateway = GatewayService("g-drain", [replica])
    replica.start()
    gateway.start()
    device = requester = None
    try:
        await gateway.wait_replicas(1)
        device, requester = await connect_pair(gateway.ws_url, "dt")
        await constellation_task(requester, "dt", "sigterm")
        await device.recv_type("command")
        assert replica.process is not None
        replica.process.send_signal(signal.SIGTERM)
        end = await requester.recv_type("task_end", timeout=10)
        assert end["status"] == "failed" and "replica_shutdown" in end["error"]
        assert await asyncio.to_thread(replica.process.wait, 10) == 0
    finally:
        for client in (device, requester):
            if client is not None:
                await client.close()
        gateway.stop()
        replica.stop()


async def test_zero_means_no_limit(make_stack: StackFactory) -> None:
    """--max-running-per-device 0: every session runs at once, none waits (the queue
    itself is tests/integration/test_device_queue.py)."""
    stack = await make_stack(session={"max_running_per_device": 0, "store_path": ":memory:"})
    device = await register_device(stack.ws_url, "dev1")
    for n in range(20):
        info = await start_session(stack.replica.address, "dev1", f"s{n}")
        assert info.state == pb.SESSION_STATE_RUNNING
    assert stack.service.manager.live_counts() == {"dev1": (20, 0)}
    await device.close()
