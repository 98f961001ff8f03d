"""One driver per device: sessions on a busy device wait in its queue, first come first
served, on one replica and across replicas sharing a store; what a queued session shows,
how it is refused, cancelled, timed out, and failed when its device leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from aip_grpc import session_api_pb2, session_api_pb2_grpc
from tests.conftest import StackFactory
from tests.integration.faults_support import Recorder
from tests.processes import GatewayService, Replica, wait_known
from tests.stack import (
    api_call,
    cmd,
    get_session,
    plan,
    register_constellation,
    register_device,
    results_for,
    task_frame,
    wait_for,
)

pb = session_api_pb2
TWO_STEPS = plan([cmd("a")], [cmd("b")])


async def start(address: str, device_id: str, session_id: str,
                request: str = TWO_STEPS) -> pb.SessionInfo:
    info: pb.SessionInfo = await api_call(address, "StartSession", pb.StartSessionRequest(
        device_id=device_id, request=request, session_id=session_id, requester_id="ops"))
    return info


async def answer(device: Recorder, device_id: str, session_id: str, steps: int = 2) -> None:
    for _ in range(steps):
        await device.send(results_for(await device.command(session_id), device_id))


async def state_of(address: str, session_id: str) -> tuple[int, int]:
    info = await get_session(address, session_id)
    return info.state, info.queue_position


async def until_state(address: str, session_id: str, state: int,
                      timeout: float = 10.0) -> pb.SessionInfo:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        info = await get_session(address, session_id)
        if info.state == state:
            return info
        assert asyncio.get_running_loop().time() < deadline, (session_id, info)
        await asyncio.sleep(0.05)


def commands_of(device: Recorder, *session_ids: str) -> list[dict[str, Any]]:
    return [f for f in device.of_type("command") if f["session_id"] in session_ids]


async def test_one_session_at_a_time_in_arrival_order(make_stack: StackFactory) -> None:
    """The default: one session runs on a device; the next ones are acked at once, wait
    in order with their position visible, start when the one before ends, and a
    cancelled waiting session leaves the line without the device ever hearing of it."""
    stack = await make_stack(session={"store_path": ":memory:"})
    address = stack.replica.address
    device = Recorder(await register_device(stack.ws_url, "dev1"), "dev1")
    requester = Recorder(await register_constellation(stack.ws_url, "c1", "dev1"), "c1")
    try:
        first = await start(address, "dev1", "one")
        assert first.state == pb.SESSION_STATE_RUNNING and first.queue_position == 0
        second = await start(address, "dev1", "two")
        assert (second.state, second.queue_position) == (pb.SESSION_STATE_QUEUED, 1)
        await requester.send(task_frame("c1", TWO_STEPS, client_type="constellation",
                                        target_id="dev1", session_id="three"))
        await wait_for(lambda: any(f.get("session_id") == "three" and f["type"] != "error"
                                   for f in requester.frames), what="three's ack")
        assert await state_of(address, "three") == (pb.SESSION_STATE_QUEUED, 2)
        listed = await api_call(address, "ListSessions", pb.ListSessionsRequest(
            state=pb.SESSION_STATE_QUEUED))
        assert sorted(s.session_id for s in listed.sessions) == ["three", "two"]
        [shown] = (await api_call(address, "ListDevices", pb.ListDevicesRequest())).devices
        assert (shown.running_sessions, shown.queued_sessions, shown.active_sessions) == \
            (1, 2, 3)

        async with grpc.aio.insecure_channel(address) as channel:
            watch = session_api_pb2_grpc.SessionApiStub(channel).WatchSession(
                pb.WatchSessionRequest(session_id="two"))
            watched = await watch.read()
            assert watched.kind == pb.UPDATE_KIND_WATCHING
            assert watched.session.state == pb.SESSION_STATE_QUEUED

            step = await device.command("one")
            await asyncio.sleep(0.6)  # several polls of the queue: nobody jumps the line
            assert not commands_of(device, "two", "three")
            await device.send(results_for(step, "dev1"))
            await answer(device, "dev1", "one", steps=1)
            async with asyncio.timeout(10):
                update = await watch.read()
            assert update.kind == pb.UPDATE_KIND_STARTED, update
            assert update.session.state == pb.SESSION_STATE_RUNNING
            watch.cancel()
        assert (await get_session(address, "one")).state == pb.SESSION_STATE_COMPLETED
        step = await device.command("two")
        await wait_for(lambda: stack.service.manager.sessions["three"].queue_position == 1,
                       what="three moves up")

        cancelled = await api_call(address, "CancelSession", pb.CancelSessionRequest(
            session_id="three", reason="requested"))
        assert cancelled.state == pb.SESSION_STATE_CANCELLED
        await wait_for(lambda: bool(requester.ends("three")), what="three's task_end")
        assert requester.ends("three")[0]["status"] == "failed"
        await device.send(results_for(step, "dev1"))
        await answer(device, "dev1", "two", steps=1)
        await until_state(address, "two", pb.SESSION_STATE_COMPLETED)
        await asyncio.sleep(0.3)
        assert not commands_of(device, "three") and not device.ends("three")
        assert not stack.service.manager.live_counts()
    finally:
        for client in (device, requester):
            await client.close()


async def test_full_queue_timeout_and_device_leaving(make_stack: StackFactory) -> None:
    """A full queue refuses (RESOURCE_EXHAUSTED, an error frame); a session that waits
    longer than the queue timeout is cancelled; a device leaving ends its line."""
    stack = await make_stack(session={"store_path": ":memory:", "max_queued_per_device": 1,
                                      "queue_timeout": 1.0})
    address = stack.replica.address
    device = Recorder(await register_device(stack.ws_url, "dev1"), "dev1")
    requester = Recorder(await register_constellation(stack.ws_url, "c1", "dev1"), "c1")
    try:
        await start(address, "dev1", "busy")
        assert (await start(address, "dev1", "waits")).state == pb.SESSION_STATE_QUEUED
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await start(address, "dev1", "no-room")
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "1 session(s) already wait" in (refused.value.details() or "")
        await requester.send(task_frame("c1", TWO_STEPS, client_type="constellation",
                                        target_id="dev1", session_id="no-room-ws"))
        await wait_for(lambda: bool(requester.of_type("error", "no-room-ws")),
                       what="an error frame")
        assert "already wait" in requester.of_type("error", "no-room-ws")[0]["error"]

        timed_out = await until_state(address, "waits", pb.SESSION_STATE_CANCELLED,
                                      timeout=10)
        assert timed_out.cancel_reason == "queue_timeout"
        assert (await get_session(address, "busy")).state == pb.SESSION_STATE_RUNNING

        assert (await start(address, "dev1", "left")).state == pb.SESSION_STATE_QUEUED
        await device.close()
        gone = await until_state(address, "left", pb.SESSION_STATE_CANCELLED)
        assert gone.cancel_reason == "device_disconnected"
        assert (await get_session(address, "busy")).cancel_reason == "device_disconnected"
        assert not commands_of(device, "waits", "left")
    finally:
        for client in (device, requester):
            await client.close()


# ---------------------------------------------------------------- across replicas


@dataclass
class Pair:
    replicas: list[Replica]
    gateway: GatewayService
    device: Recorder


@pytest.fixture(params=["sqlite", "postgresql"])
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Pair]:
    """Two replicas sharing one store, one gateway linked to both, one device."""
    if request.param == "postgresql":
        store = ("--store-url", request.getfixturevalue("postgres_url"))
    else:
        store = ("--store-path", str(tmp_path / "shared.sqlite3"))
    replicas = [Replica(grace=0.5, capture=True, extra=(
        *store, "--replica-id", f"r{n}", "--lease-ttl", "2")) for n in range(2)]
    gateway = GatewayService("g0", replicas)
    device: Recorder | None = None
    for service in [*replicas, gateway]:
        service.start()
    try:
        await gateway.wait_replicas(2)
        device = Recorder(await register_device(gateway.ws_url, "dev1"), "dev1")
        await wait_known(replicas, "dev1")
        yield Pair(replicas, gateway, device)
    finally:
        if device is not None:
            await device.close()
        for service in [gateway, *replicas]:
            service.stop()


async def test_one_driver_across_replicas(pair: Pair) -> None:
    """A session started on one replica waits for the device's session on the other: no
    command of it reaches the device before that one ended; then it runs, and the next
    waits for it in turn; ListDevices counts both replicas' sessions."""
    first, second = (replica.address for replica in pair.replicas)
    device = pair.device
    assert (await start(first, "dev1", "a")).state == pb.SESSION_STATE_RUNNING
    waiting = await start(second, "dev1", "b")
    assert (waiting.state, waiting.queue_position) == (pb.SESSION_STATE_QUEUED, 1)
    assert (await start(first, "dev1", "c")).queue_position == 2
    assert await state_of(first, "b") == (pb.SESSION_STATE_QUEUED, 1)  # read from the store
    [shown] = (await api_call(second, "ListDevices", pb.ListDevicesRequest())).devices
    assert (shown.running_sessions, shown.queued_sessions) == (1, 2)

    step = await device.command("a")
    await asyncio.sleep(1.0)
    assert not commands_of(device, "b", "c")
    await device.send(results_for(step, "dev1"))
    await answer(device, "dev1", "a", steps=1)
    step = await device.command("b", timeout=10)
    assert (await get_session(first, "a")).state == pb.SESSION_STATE_COMPLETED
    for _ in range(100):  # its replica learns at its next poll of the queue
        if await state_of(first, "c") == (pb.SESSION_STATE_QUEUED, 1):
            break
        await asyncio.sleep(0.05)
    assert await state_of(second, "c") == (pb.SESSION_STATE_QUEUED, 1)
    await device.send(results_for(step, "dev1"))
    await answer(device, "dev1", "b", steps=1)
    await answer(device, "dev1", "c")
    for session_id in ("a", "b", "c"):
        await until_state(second, session_id, pb.SESSION_STATE_COMPLETED)


async def test_a_killed_replica_gives_the_device_back(pair: Pair) -> None:
    """The replica running the device's session is killed: once its lease lapses, the
    survivor fails that session and starts the one that waited."""
    first, second = pair.replicas
    assert (await start(first.address, "dev1", "held")).state == pb.SESSION_STATE_RUNNING
    assert (await start(second.address, "dev1", "next")).state == pb.SESSION_STATE_QUEUED
    await pair.device.command("held")
    first.kill()
    command = await pair.device.command("next", timeout=20)
    lost = await until_state(second.address, "held", pb.SESSION_STATE_FAILED)
    assert lost.cancel_reason == "replica_lost"
    await pair.device.send(results_for(command, "dev1"))
    await pair.device.send(results_for(await pair.device.command("next"), "dev1"))
    await until_state(second.address, "next", pb.SESSION_STATE_COMPLETED)
