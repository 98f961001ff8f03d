"""Three replicas and two gateways as processes sharing one store (an SQLite file, then a
PostgreSQL database on a real server): every
replica answers for every session, an id is its first requester's everywhere and across
restarts, a retry never runs a plan twice, and a replica killed mid-session has its
sessions failed by the others within 10 s while its requester hears exactly one end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import grpc
import pytest

from aip_grpc import session_api_pb2, session_api_pb2_grpc
from tests.integration.faults_support import Recorder, ended_once, until
from tests.processes import GatewayService, Replica, wait_known
from tests.stack import (
    cmd,
    plan,
    register_constellation,
    register_device,
    results_for,
    task_frame,
)

pb = session_api_pb2
DEVICE = "dev-shared"


@dataclass
class Shared:
    replicas: list[Replica]
    gateways: list[GatewayService]
    device: Recorder
    recorders: list[Recorder]
    #: Sessions whose commands the device leaves unanswered.
    held: set[str] = field(default_factory=set)

    def any(self) -> Replica:
        return random.choice([r for r in self.replicas if r.process is not None
                              and r.process.poll() is None])

    async def connect(self, gateway: int, client_id: str) -> Recorder:
        client = await register_constellation(self.gateways[gateway].ws_url, client_id,
                                              DEVICE)
        recorder = Recorder(client, client_id)
        self.recorders.append(recorder)
        return recorder

    async def restart_all(self) -> None:
        for replica in self.replicas:
            replica.stop()
        for replica in self.replicas:
            replica.start()
        for gateway in self.gateways:
            await gateway.wait_replicas(len(self.replicas))
        await wait_known(self.replicas, DEVICE, timeout=20)


async def answer_forever(device: Recorder, held: set[str]) -> None:
    """Answer every command the device gets, except those of sessions in ``held``."""
    while True:
        try:
            command = await device.command(timeout=0.5)
        except AssertionError:
            continue
        if command["session_id"] not in held:
            await device.send(results_for(command, DEVICE))


@pytest.fixture(params=["sqlite", "postgresql"])
async def shared(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Shared]:
    if request.param == "postgresql":
        store = ("--store-url", request.getfixturevalue("postgres_url"))
    else:
        store = ("--store-path", str(tmp_path / "shared.sqlite3"))
    replicas = [Replica(grace=0.5, capture=True, extra=(
        *store, "--replica-id", f"r{n}", "--max-running-per-device", "0"))
        for n in range(3)]
    gateways = [GatewayService(f"g{n}", replicas) for n in range(2)]
    for service in [*replicas, *gateways]:
        service.start()
    recorders: list[Recorder] = []
    answering: asyncio.Task[None] | None = None
    try:
        for gateway in gateways:
            await gateway.wait_replicas(3)
        device = Recorder(await register_device(gateways[0].ws_url, DEVICE), DEVICE)
        recorders.append(device)
        await wait_known(replicas, DEVICE)
        cluster = Shared(replicas, gateways, device, recorders)
        answering = asyncio.get_running_loop().create_task(
            answer_forever(device, cluster.held))
        yield cluster
    finally:
        if answering is not None:
            answering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await answering
        for recorder in recorders:
            await recorder.close()
        for service in [*gateways, *replicas]:
            service.stop()


async def ended_everywhere(shared: Shared, session_id: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    for replica in shared.replicas:
        while (await replica.call("GetSession", pb.GetSessionRequest(
                session_id=session_id))).state == pb.SESSION_STATE_RUNNING:
            assert asyncio.get_running_loop().time() < deadline, f"{session_id} runs"
            await asyncio.sleep(0.05)


async def refused(replica: Replica, session_id: str, requester: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await replica.call("StartSession", pb.StartSessionRequest(
            device_id=DEVICE, request=plan([cmd("again")]), session_id=session_id,
            requester_id=requester))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS, caught.value
    return caught.value.details() or ""


async def test_a_backend_calling_random_replicas(shared: Shared) -> None:
    """Start, Get and List on random replicas: every call succeeds and every replica
    tells about every session; ended ids stay their first requester's on every replica
    after a restart of all of them, and a retry by that requester runs nothing."""
    ids = [f"api-{n}" for n in range(30)]
    for session_id in ids:
        info = await shared.any().call("StartSession", pb.StartSessionRequest(
            device_id=DEVICE, request=plan([cmd("a")], [cmd("b")]), session_id=session_id,
            requester_id="alice"))
        assert info.session_id == session_id
        got = await shared.any().call("GetSession", pb.GetSessionRequest(
            session_id=session_id))
        assert got.session_id == session_id and got.requester_id == "alice"
    for session_id in ids:
        await ended_everywhere(shared, session_id)
    owners = set()
    for session_id in ids:
        got = await shared.any().call("GetSession", pb.GetSessionRequest(
            session_id=session_id))
        assert got.state == pb.SESSION_STATE_COMPLETED and got.steps_done == 2, got
        assert len(got.commands) == 2
        owners.add(got.replica_id)
    assert len(owners) >= 2  # the sessions were spread: Get crossed replicas
    for replica in shared.replicas:
        listed = await replica.call("ListSessions", pb.ListSessionsRequest(
            page_size=100))
        assert {s.session_id for s in listed.sessions} >= set(ids)

    for restart in (False, True):
        if restart:
            await shared.restart_all()
        for replica in shared.replicas:
            assert "belongs to another client" in await refused(replica, "api-0", "mallory")
            # The first requester's retry gets its first session back, ended.
            again = await replica.call("StartSession", pb.StartSessionRequest(
                device_id=DEVICE, request=plan([cmd("again")]), session_id="api-1",
                requester_id="alice"))
            assert again.session_id == "api-1" and again.state == pb.SESSION_STATE_COMPLETED
    for session_id in ("api-0", "api-1"):
        got = await shared.any().call("GetSession", pb.GetSessionRequest(
            session_id=session_id))
        assert got.requester_id == "alice" and len(got.commands) == 2  # never ran again
        assert got.state == pb.SESSION_STATE_COMPLETED


def replica_named(shared: Shared, replica_id: str) -> Replica:
    return shared.replicas[int(replica_id.removeprefix("r"))]


def not_owner(shared: Shared, replica_id: str) -> Replica:
    return random.choice([r for n, r in enumerate(shared.replicas) if f"r{n}" != replica_id])


async def watch_all(replica: Replica, session_id: str,
                    updates: list[pb.SessionUpdate]) -> None:
    async with grpc.aio.insecure_channel(replica.address) as channel:
        stub = session_api_pb2_grpc.SessionApiStub(channel)
        async for update in stub.WatchSession(pb.WatchSessionRequest(session_id=session_id),
                                              timeout=20):
            updates.append(update)


def sent_seen(updates: list[pb.SessionUpdate]) -> bool:
    return any(u.kind == pb.UPDATE_KIND_COMMAND_SENT for u in updates)


async def test_watch_cancel_and_devices_on_replicas_that_do_not_own(shared: Shared) -> None:
    """WatchSession and CancelSession on a replica that does not run the session reach
    the owner; ListDevices counts running sessions over every replica; an idempotency
    key holds on every replica."""
    ids = [f"fw-{n}" for n in range(6)]
    shared.held.update(ids)
    owners = {}
    for session_id in ids:
        await shared.any().call("StartSession", pb.StartSessionRequest(
            device_id=DEVICE, request=plan([cmd("first")], [cmd("second")]),
            session_id=session_id, requester_id="bob"))
        owners[session_id] = (await shared.any().call("GetSession", pb.GetSessionRequest(
            session_id=session_id))).replica_id
    assert len(set(owners.values())) >= 2
    for replica in shared.replicas:
        devices = (await replica.call("ListDevices", pb.ListDevicesRequest())).devices
        assert [(d.device_id, d.active_sessions) for d in devices] == [(DEVICE, 6)]
        device = await replica.call("GetDevice", pb.GetDeviceRequest(device_id=DEVICE))
        assert device.active_sessions == 6

    for session_id in ids[:3]:  # watched elsewhere: every step, up to the end
        updates: list[pb.SessionUpdate] = []
        watching = asyncio.get_running_loop().create_task(
            watch_all(not_owner(shared, owners[session_id]), session_id, updates))
        await until(partial(sent_seen, updates), 10,
                    f"the watcher of {session_id} sees its first command")
        shared.held.discard(session_id)  # the second command is answered as it comes
        [first] = shared.device.of_type("command", session_id)
        await shared.device.send(results_for(first, DEVICE))
        async with asyncio.timeout(15):
            await watching
        kinds = [u.kind for u in updates]
        assert kinds[0] == pb.UPDATE_KIND_WATCHING and kinds[-1] == pb.UPDATE_KIND_ENDED
        assert kinds.count(pb.UPDATE_KIND_COMMAND_SENT) == 2, kinds
        assert kinds.count(pb.UPDATE_KIND_RESULTS_RECEIVED) == 2, kinds
        assert updates[-1].session.state == pb.SESSION_STATE_COMPLETED
        assert updates[-1].session.replica_id == owners[session_id]

    for session_id in ids[3:]:  # cancelled elsewhere: the owner's answer
        info = await not_owner(shared, owners[session_id]).call(
            "CancelSession", pb.CancelSessionRequest(session_id=session_id))
        assert info.state == pb.SESSION_STATE_CANCELLED, info
        assert info.replica_id == owners[session_id]
    for session_id in ids:
        await ended_everywhere(shared, session_id)
    for replica in shared.replicas:
        devices = (await replica.call("ListDevices", pb.ListDevicesRequest())).devices
        assert [d.active_sessions for d in devices] == [0]

    # One idempotency key, on every replica, before and after a restart: one session.
    first = await shared.replicas[0].call("StartSession", pb.StartSessionRequest(
        device_id=DEVICE, request=plan([cmd("keyed")]), requester_id="bob",
        idempotency_key="order-7"))
    for restart in (False, True):
        if restart:
            await shared.restart_all()
        for replica in shared.replicas:
            again = await replica.call("StartSession", pb.StartSessionRequest(
                device_id=DEVICE, request=plan([cmd("keyed")]), requester_id="bob",
                idempotency_key="order-7"))
            assert again.session_id == first.session_id
    other = await shared.any().call("StartSession", pb.StartSessionRequest(
        device_id=DEVICE, request=plan([cmd("keyed")]), requester_id="carol",
        idempotency_key="order-7"))  # keys are per requester
    assert other.session_id != first.session_id
    keyed = await shared.any().call("ListSessions", pb.ListSessionsRequest(
        requester_id="bob", task_name=first.task_name))
    assert [s.session_id for s in keyed.sessions] == [first.session_id]


async def test_link_retries_and_racing_gateways(shared: Shared) -> None:
    """The same requester's retry through another gateway gets its first session's
    task_end again and runs nothing; two gateways submitting one id at once make one
    session; another client's reuse is refused."""
    first = await shared.connect(0, "c-retry")
    await first.send(task_frame("c-retry", plan([cmd("once")]), client_type="constellation",
                                target_id=DEVICE, session_id="link-1", task_name="once"))
    [end] = (await ended_once(first, ["link-1"])).values()
    assert end["status"] == "completed"
    await first.close()
    again = await shared.connect(1, "c-retry")
    await again.send(task_frame("c-retry", plan([cmd("twice")]),
                                client_type="constellation", target_id=DEVICE,
                                session_id="link-1", task_name="twice"))
    [repeat] = (await ended_once(again, ["link-1"])).values()
    assert repeat["task_name"] == "once" and repeat["result"] == end["result"]
    got = await shared.any().call("GetSession", pb.GetSessionRequest(session_id="link-1"))
    assert [json.loads(c.actions_json)[0]["tool_name"] for c in got.commands] == ["once"]
    assert not any(f["session_id"] == "link-1" and f["actions"][0]["tool_name"] == "twice"
                   for f in shared.device.of_type("command"))

    racers = [await shared.connect(n, f"c-race-{n}") for n in range(2)]
    for round_ in range(5):
        session_id = f"race-{round_}"
        await asyncio.gather(*(racer.send(task_frame(
            f"c-race-{n}", plan([cmd(f"by-{n}")]), client_type="constellation",
            target_id=DEVICE, session_id=session_id)) for n, racer in enumerate(racers)))
        await until(partial(both_answered, racers, session_id), 10,
                    f"both racers answered for {session_id}")
        winners = [n for n, racer in enumerate(racers) if racer.ends(session_id)]
        assert len(winners) == 1, [r.frames for r in racers]
        commands = shared.device.of_type("command", session_id)
        assert [c["actions"][0]["tool_name"] for c in commands] == [f"by-{winners[0]}"]
    loser = await shared.connect(1, "c-other")
    await loser.send(task_frame("c-other", plan([cmd("steal")]), client_type="constellation",
                                target_id=DEVICE, session_id="link-1"))
    await until(lambda: bool(loser.of_type("error")), 5, "the thief is refused")
    assert "belongs to another client" in loser.of_type("error")[0]["error"]
    assert not loser.ends("link-1")


def both_answered(racers: list[Recorder], session_id: str) -> bool:
    """Whether the racers got two answers (task_end frames, refusals) for ``session_id``."""
    return sum(len(r.ends(session_id)) + sum(
        session_id in f.get("error", "") for f in r.of_type("error")) for r in racers) == 2


async def test_a_killed_owner_is_failed_everywhere_within_10s(shared: Shared) -> None:
    held = shared.held
    requester = await shared.connect(1, "c-doomed")
    ids = [f"doomed-{n}" for n in range(6)]
    held.update(ids)
    for session_id in ids:
        await requester.send(task_frame("c-doomed", plan([cmd("held")]),
                                        client_type="constellation", target_id=DEVICE,
                                        session_id=session_id))
    for session_id in ids:
        await requester.ack(session_id)
    owners = {}
    for session_id in ids:
        got = await shared.any().call("GetSession", pb.GetSessionRequest(
            session_id=session_id))
        owners[session_id] = got.replica_id
    victim_id = owners[ids[0]]
    victim = shared.replicas[int(victim_id.removeprefix("r"))]
    doomed = [s for s in ids if owners[s] == victim_id]
    survivors = [r for r in shared.replicas if r is not victim]
    # A watch through a survivor, relayed from the victim, ends with the failure.
    updates: list[pb.SessionUpdate] = []
    loop = asyncio.get_running_loop()
    watching = loop.create_task(watch_all(survivors[0], doomed[0], updates))
    await until(lambda: bool(updates), 10, "the relayed watch begins")
    killed_at = loop.time()
    victim.kill()
    for session_id in doomed:
        for replica in survivors:
            while True:
                got = await replica.call("GetSession", pb.GetSessionRequest(
                    session_id=session_id))
                if got.state != pb.SESSION_STATE_RUNNING:
                    break
                assert loop.time() - killed_at < 10, f"{session_id} still running"
                await asyncio.sleep(0.1)
            assert got.state == pb.SESSION_STATE_FAILED and got.cancel_reason == \
                "replica_lost", got
    took = loop.time() - killed_at
    async with asyncio.timeout(10):
        await watching
    assert updates[0].kind == pb.UPDATE_KIND_WATCHING
    assert updates[-1].kind == pb.UPDATE_KIND_ENDED, updates
    assert updates[-1].session.state == pb.SESSION_STATE_FAILED
    assert updates[-1].session.cancel_reason == "replica_lost"
    ended_once_each = await ended_once(requester, doomed, quiet=1.0)
    assert all(end["status"] == "failed" for end in ended_once_each.values())
    victim.start()  # back: it agrees, and the ids stay taken
    for gateway in shared.gateways:
        await gateway.wait_replicas(3)
    got = await victim.call("GetSession", pb.GetSessionRequest(session_id=doomed[0]))
    assert got.state == pb.SESSION_STATE_FAILED
    assert len(requester.ends(doomed[0])) == 1
    print(f"sessions of the killed replica failed everywhere {took:.1f}s after the kill")
