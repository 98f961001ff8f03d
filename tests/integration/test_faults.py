"""Fault injection: processes killed with SIGKILL and restarted, a link cut and restored,
devices that vanish without a close frame.

After each fault every task ends exactly once for its requester (``task_end`` frames are
collected for a quiet period after the expected ones arrived, so a duplicate is caught),
the session records are complete, and nothing is left in any registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import websockets

from aip_grpc import session_api_pb2
from tests.conftest import StackFactory
from tests.processes import Cluster, Replica, wait_known
from tests.stack import (
    Client,
    GatewayProcess,
    SessionReplica,
    Stack,
    api_call,
    cmd,
    get_session,
    plan,
    register_constellation,
    register_device,
    register_frame,
    results_for,
    task_frame,
    wait_for,
)
from tests.tcp_proxy import TcpProxy

pb = session_api_pb2

#: How long to keep listening after the expected task_end frames arrived.
QUIET = 0.5


# ------------------------------------------------------------------------ helpers


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    await wait_for(condition, timeout, interval=0.02, what=what)


class Recorder:
    """Reads every frame a client receives in the background, so tests can wait for
    frames of any kind without losing the others; records the close code too."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name
        self.frames: list[dict[str, Any]] = []
        self.closed = False
        self._taken: set[int] = set()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            async for raw in self.client.ws:
                self.frames.append(json.loads(raw))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed = True

    @property
    def close_code(self) -> int | None:
        return self.client.ws.close_code

    async def send(self, frame: dict[str, Any]) -> None:
        await self.client.send(frame)

    def of_type(self, kind: str, session_id: str | None = None) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == kind
                and (session_id is None or f.get("session_id") == session_id)]

    def ends(self, session_id: str) -> list[dict[str, Any]]:
        return self.of_type("task_end", session_id)

    async def command(self, session_id: str | None = None,
                      timeout: float = 5.0) -> dict[str, Any]:
        """The next command (for ``session_id``) not taken yet."""
        found: list[dict[str, Any]] = []

        def ready() -> bool:
            for n, frame in enumerate(self.frames):
                if (n not in self._taken and frame.get("type") == "command"
                        and (session_id is None or frame.get("session_id") == session_id)):
                    self._taken.add(n)
                    found.append(frame)
                    return True
            return False

        await until(ready, timeout, f"{self.name} gets a command for {session_id}")
        return found[0]

    async def ack(self, session_id: str, timeout: float = 5.0) -> None:
        await until(lambda: any(f.get("type") == "heartbeat" and f.get("session_id") == session_id
                                for f in self.frames),
                    timeout, f"{self.name} gets the ack of {session_id}")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.close(), 3)
        self.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, 3)

    def abort(self) -> None:
        transport = self.client.ws.transport
        if not transport.is_closing():
            transport.abort()


async def ended_once(recorder: Recorder, session_ids: list[str] | set[str],
                     timeout: float = 10.0, quiet: float = QUIET) -> dict[str, dict[str, Any]]:
    """Wait for a task_end of each session, listen ``quiet`` seconds more, then check
    that each session ended exactly once; returns the task_end frames."""
    wanted = sorted(session_ids)
    await until(lambda: all(recorder.ends(s) for s in wanted), timeout,
                f"{recorder.name} gets task_end for {wanted}")
    await asyncio.sleep(quiet)
    counts = {s: len(recorder.ends(s)) for s in wanted}
    assert counts == dict.fromkeys(wanted, 1), (
        f"{recorder.name}: task_end count per session {counts}: {recorder.of_type('task_end')}"
    )
    return {s: recorder.ends(s)[0] for s in wanted}


async def listed_devices(address: str) -> list[str]:
    answer = await api_call(address, "ListDevices", pb.ListDevicesRequest())
    return sorted(device.device_id for device in answer.devices)


async def http_get(url: str) -> Any:
    async with httpx.AsyncClient(timeout=5) as http:
        answer = await http.get(url)
    return answer.json()


def stored_sessions(path: str) -> dict[str, tuple[str, int]]:
    """session_id -> (state, number of commands) as committed in a store file."""
    try:
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT session_id, state FROM sessions").fetchall()
            commands = dict(db.execute(
                "SELECT session_id, count(*) FROM commands GROUP BY session_id").fetchall())
    except sqlite3.OperationalError:  # not created yet
        return {}
    return {session_id: (state, commands.get(session_id, 0)) for session_id, state in rows}


def durable_cluster(tmp_path: Path, gateways: int, replicas: int) -> Cluster:
    cluster = Cluster(gateways=gateways, replicas=replicas, grace=1.0)
    for n, replica in enumerate(cluster.replicas):
        replica.args += ["--store-path", str(tmp_path / f"replica-{n}.sqlite3")]
    return cluster


@pytest.fixture
async def two_by_two(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Two gateways and two replicas as processes, each replica with a store file."""
    cluster = durable_cluster(tmp_path, 2, 2)
    try:
        yield await cluster.start()
    finally:
        cluster.stop()


def store_path(replica: Replica) -> str:
    last = max(n for n, arg in enumerate(replica.args) if arg == "--store-path")
    return replica.args[last + 1]


# ------------------------------------------------------------------------ replica kill -9


async def test_replica_killed_mid_task_and_restarted(two_by_two: Cluster) -> None:
    cluster = two_by_two
    g1, g2 = cluster.gateways
    d1 = Recorder(await register_device(g1.ws_url, "d1"), "d1")
    d2 = Recorder(await register_device(g2.ws_url, "d2"), "d2")
    await wait_known(cluster.replicas, "d1")
    await wait_known(cluster.replicas, "d2")
    c1 = Recorder(await register_constellation(g1.ws_url, "c1", "d2"), "c1")
    c2 = Recorder(await register_constellation(g2.ws_url, "c2", "d1"), "c2")
    requesters = {"c1": c1, "c2": c2}
    devices = {"d1": d1, "d2": d2}
    target = {"c1": "d2", "c2": "d1"}
    owner: dict[str, str] = {}  # session_id -> requester
    for n in range(3):
        for name, client in requesters.items():
            session_id = f"{name}@t-{n}"
            await client.send(task_frame(name, plan([cmd("only")]), client_type="constellation",
                                         target_id=target[name], session_id=session_id,
                                         task_name=f"job-{name}-{n}"))
            await client.ack(session_id)
            owner[session_id] = name
    held = {s: await devices[target[r]].command(s) for s, r in owner.items()}

    placement = {r.address: {s.session_id for s in await r.running_sessions()}
                 for r in cluster.replicas}
    assert set().union(*placement.values()) == set(owner), placement
    victim = max(cluster.replicas, key=lambda r: len(placement[r.address]))
    survivor = next(r for r in cluster.replicas if r is not victim)
    lost = placement[victim.address]
    kept = set(owner) - lost
    # The victim's store has committed the lost sessions and their commands.
    path = store_path(victim)
    await until(lambda: all(stored_sessions(path).get(s) == ("running", 1) for s in lost), 5,
                "the lost sessions are committed to the store")

    victim.kill()

    # Each requester: exactly one task_end, failed and naming the replica, per lost session.
    for name, client in requesters.items():
        mine = {s for s in lost if owner[s] == name}
        ends = await ended_once(client, mine, timeout=10)
        for session_id, end in ends.items():
            assert end["status"] == "failed", end
            assert victim.address in (end["error"] or ""), end
            assert end["session_id"] == session_id
    # The devices hear of the end of their lost constellation sessions once too.
    for name, device in devices.items():
        on_it = {s for s in lost if target[owner[s]] == name}
        await ended_once(device, on_it, quiet=0)

    # The survivors complete.
    for session_id in kept:
        device = target[owner[session_id]]
        await devices[device].send(results_for(held[session_id], device))
    for name, client in requesters.items():
        ends = await ended_once(client, {s for s in kept if owner[s] == name})
        assert all(end["status"] == "completed" for end in ends.values()), ends

    # The restarted replica reads the lost sessions back as failed (replica_restarted).
    victim.start()
    for gateway in cluster.gateways:
        await gateway.wait_replicas(2)
    for session_id in lost:
        info = await victim.call("GetSession", pb.GetSessionRequest(session_id=session_id))
        assert info.stored and info.state == pb.SESSION_STATE_FAILED, info
        assert info.cancel_reason == "replica_restarted", info
        assert "replica_restarted" in info.error
        assert info.ended_at >= info.created_at > 0
        assert (info.device_id, info.requester_id) == (target[owner[session_id]],
                                                       owner[session_id])
        assert [c.status for c in info.commands] == ["unanswered"], info.commands
    for session_id in kept:
        info = await survivor.call("GetSession", pb.GetSessionRequest(session_id=session_id))
        assert info.state == pb.SESSION_STATE_COMPLETED, info
        assert [c.status for c in info.commands] == ["answered"]
    if lost:
        some = sorted(lost)[0]
        name, n = owner[some], some.rsplit("-", 1)[1]
        answer = await http_get(f"http://127.0.0.1:{g1.port}/api/task_result/job-{name}-{n}")
        assert answer["status"] == "done" and "replica_restarted" in answer["error"], answer
    assert await victim.running_sessions() == []

    # Still exactly one task_end per session, whatever the restart did.
    for name, client in requesters.items():
        counts = {s: len(client.ends(s)) for s in owner if owner[s] == name}
        assert set(counts.values()) == {1}, (name, counts)
    for recorder in [*requesters.values(), *devices.values()]:
        await recorder.close()
    await cluster.assert_empty()


# ------------------------------------------------------------------------ gateway kill -9


async def find_session(cluster: Cluster, session_id: str) -> pb.SessionInfo:
    for replica in cluster.replicas:
        try:
            return await replica.call("GetSession", pb.GetSessionRequest(session_id=session_id))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
    raise AssertionError(f"no replica knows session {session_id}")


async def test_gateway_killed_mid_task_and_restarted(two_by_two: Cluster) -> None:
    cluster = two_by_two
    g1, g2 = cluster.gateways
    device = Recorder(await register_device(g2.ws_url, "dg"), "dg")
    await wait_known(cluster.replicas, "dg")
    constellation = Recorder(await register_constellation(g1.ws_url, "cg", "dg"), "cg")
    await constellation.send(task_frame("cg", plan([cmd("a")], [cmd("b")]),
                                        client_type="constellation", target_id="dg",
                                        session_id="cg@doomed", task_name="doomed"))
    await constellation.ack("cg@doomed")
    await device.command("cg@doomed")

    g2.kill()
    device.abort()
    ends = await ended_once(constellation, ["cg@doomed"], timeout=10)
    end = ends["cg@doomed"]
    assert end["status"] == "failed" and "device_disconnected" in (end["error"] or ""), end
    info = await find_session(cluster, "cg@doomed")
    assert info.state == pb.SESSION_STATE_CANCELLED, info
    assert info.cancel_reason == "device_disconnected"
    assert [c.status for c in info.commands] == ["sent"] or [
        c.status for c in info.commands] == ["unanswered"], info.commands
    assert info.ended_at >= info.created_at > 0

    # The gateway comes back on the same port; the device registers again; work resumes.
    g2.start()
    await g2.wait_replicas(2)
    again = Recorder(await register_device(g2.ws_url, "dg"), "dg-again")
    await wait_known(cluster.replicas, "dg")
    await constellation.send(task_frame("cg", plan([cmd("again")]),
                                        client_type="constellation", target_id="dg",
                                        session_id="cg@after", task_name="after"))
    await constellation.ack("cg@after")
    command = await again.command("cg@after")
    await again.send(results_for(command, "dg"))
    ends = await ended_once(constellation, ["cg@after"])
    assert ends["cg@after"]["status"] == "completed", ends
    assert len(constellation.ends("cg@doomed")) == 1
    info = await find_session(cluster, "cg@after")
    assert info.state == pb.SESSION_STATE_COMPLETED
    assert [c.status for c in info.commands] == ["answered"]

    for recorder in (constellation, again, device):
        await recorder.close()
    await cluster.assert_empty()


# ------------------------------------------------------------------------ link cut


class Linked:
    """A replica and a gateway in this process, the gateway's link through a proxy."""

    def __init__(self, grace: float) -> None:
        self.replica = SessionReplica(gateway_grace=grace)
        self.proxy: TcpProxy | None = None
        self.gw: GatewayProcess | None = None

    async def start(self) -> Linked:
        await self.replica.start()
        self.proxy = await TcpProxy.to(self.replica.address).start()
        self.gw = GatewayProcess([self.proxy.address])
        await self.gw.start()
        await self.gw.wait_linked()
        return self

    async def stop(self) -> None:
        if self.gw is not None:
            await self.gw.stop()
        if self.proxy is not None:
            await self.proxy.stop()
        await self.replica.stop()

    @property
    def ws_url(self) -> str:
        assert self.gw is not None
        return self.gw.ws_url

    async def health(self) -> dict[str, Any]:
        assert self.gw is not None
        health: dict[str, Any] = await http_get(f"{self.gw.http_url}/api/health")
        return health

    def running(self) -> list[str]:
        return [s.session_id for s in self.replica.service.manager.sessions.values()
                if s.running]

    def released(self) -> bool:
        assert self.gw is not None
        gateway = self.gw.gateway
        return (len(gateway.registry) == 0 and gateway.routes == {} and not gateway.sessions.pending
                and len(self.replica.service.presence) == 0 and not self.running()
                and self.replica.service.manager.active == 0)


@pytest.fixture
async def linked_factory() -> AsyncIterator[Callable[[float], Any]]:
    started: list[Linked] = []

    async def make(grace: float) -> Linked:
        linked = Linked(grace)
        started.append(linked)
        return await linked.start()

    try:
        yield make
    finally:
        for linked in started:
            await linked.stop()


async def dev_and_constellation(linked: Linked) -> tuple[Recorder, Recorder]:
    device = Recorder(await register_device(linked.ws_url, "dev1"), "dev1")
    constellation = Recorder(await register_constellation(linked.ws_url, "c1", "dev1"), "c1")
    presence = linked.replica.service.presence
    await until(lambda: presence.get("dev1") is not None and presence.get("c1") is not None,
                5, "the replica knows dev1 and c1")
    return device, constellation


async def start_task(constellation: Recorder, device: Recorder, session_id: str,
                     steps: str) -> dict[str, Any]:
    await constellation.send(task_frame("c1", steps, client_type="constellation",
                                        target_id="dev1", session_id=session_id,
                                        task_name=session_id))
    await constellation.ack(session_id)
    return await device.command(session_id)


async def test_link_cut_longer_than_the_grace_then_restored(
    linked_factory: Callable[[float], Any],
) -> None:
    linked: Linked = await linked_factory(0.3)
    assert linked.proxy is not None and linked.gw is not None
    device, constellation = await dev_and_constellation(linked)
    await start_task(constellation, device, "s-cut", plan([cmd("a")], [cmd("b")]))
    session = linked.replica.service.manager.sessions["s-cut"]

    linked.proxy.cut()
    ends = await ended_once(constellation, ["s-cut"], timeout=5)
    end = ends["s-cut"]
    assert end["status"] == "failed", end
    assert linked.proxy.address in (end["error"] or ""), end
    await ended_once(device, ["s-cut"], quiet=0)
    assert linked.gw.gateway.routes == {}
    assert (await linked.health())["status"] == "degraded"

    # The replica's side of the stream ended: after the grace, the gateway's clients are
    # gone and the session is cancelled because of it.
    await until(lambda: not session.running, 5, "the replica ends s-cut after the grace")
    assert len(linked.replica.service.presence) == 0
    info = await get_session(linked.replica.address, "s-cut")
    assert info.state == pb.SESSION_STATE_CANCELLED, info
    assert info.cancel_reason in {"device_disconnected", "constellation_disconnected"}, info
    assert info.ended_at >= info.created_at > 0
    assert [c.status for c in info.commands] in (["sent"], ["unanswered"]), info.commands

    # Restored: the link comes back, presence is re-learned from the hello.
    linked.proxy.restore()
    await linked.gw.wait_linked(timeout=10)
    assert (await linked.health())["status"] == "healthy"
    await until(lambda: linked.replica.service.presence.get("dev1") is not None, 5,
                "presence re-learned")
    assert await listed_devices(linked.replica.address) == ["dev1"]

    command = await start_task(constellation, device, "s-after", plan([cmd("x")]))
    await device.send(results_for(command, "dev1"))
    ends = await ended_once(constellation, ["s-after"])
    assert ends["s-after"]["status"] == "completed", ends
    assert len(constellation.ends("s-cut")) == 1
    assert linked.gw.gateway.routes == {}
    assert linked.running() == []

    await device.close()
    await constellation.close()
    await until(linked.released, 5, "everything released")


async def test_link_cut_shorter_than_the_grace(linked_factory: Callable[[float], Any]) -> None:
    grace = 5.0
    linked: Linked = await linked_factory(grace)
    assert linked.proxy is not None and linked.gw is not None
    device, constellation = await dev_and_constellation(linked)
    # The in-flight session's only command times out 3 s after it was sent: after the
    # link is back (gRPC waits ~1 s before reconnecting), well before the grace ends.
    in_flight = json.dumps({"steps": [{"actions": [cmd("slow")], "timeout": 3.0}]})
    await start_task(constellation, device, "s-blip", in_flight)

    loop = asyncio.get_running_loop()
    cut_at = loop.time()
    linked.proxy.cut()
    await until(lambda: bool(constellation.ends("s-blip")), 5, "s-blip reported lost")
    linked.proxy.restore()
    await linked.gw.wait_linked(timeout=5)
    assert loop.time() - cut_at < 2.5, "the blip took too long for this test"
    # The gateway told its requester the session was lost, so once the link is back it
    # has the replica stop it rather than leave it running as an orphan.
    blip = linked.replica.service.manager.sessions["s-blip"]
    await until(lambda: not blip.running, 5, "the replica cancels s-blip")
    assert blip.cancel_reason == "link_lost"
    assert linked.replica.service.presence.get("dev1") is not None

    # A session started after the blip must not be cancelled when the grace runs out.
    first = await start_task(constellation, device, "s-next", plan([cmd("1")], [cmd("2")]))
    await device.send(results_for(first, "dev1"))
    second = await device.command("s-next")
    await asyncio.sleep(max(0.0, cut_at + grace + 0.5 - loop.time()))
    assert linked.replica.service.presence.get("dev1") is not None
    assert await listed_devices(linked.replica.address) == ["dev1"]
    assert linked.replica.service.manager.sessions["s-next"].running
    await device.send(results_for(second, "dev1"))
    ends = await ended_once(constellation, ["s-next"])
    assert ends["s-next"]["status"] == "completed", ends

    # The lost in-flight session was reported failed to its requester exactly once, even
    # after the replica's own end of it arrived over the restored link.
    ends = await ended_once(constellation, ["s-blip"], quiet=0)
    assert ends["s-blip"]["status"] == "failed", ends
    assert linked.proxy.address in (ends["s-blip"]["error"] or "")
    assert len(device.ends("s-blip")) == 1, device.ends("s-blip")
    await until(lambda: "s-blip" not in linked.running(), 5, "the replica ends s-blip")
    assert linked.gw.gateway.routes == {}

    await device.close()
    await constellation.close()
    await until(linked.released, 5, "everything released")


# ------------------------------------------------------------------------ vanished devices


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
    confirmation = json.loads(await asyncio.wait_for(raw.recv(), 5))
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
