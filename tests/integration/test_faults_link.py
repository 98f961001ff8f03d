"""Fault injection: the link between a gateway and its session replica cut and restored,
for longer and for shorter than the replica's grace period.

After each cut every task ends exactly once for its requester (``task_end`` frames are
collected for a quiet period after the expected ones arrived, so a duplicate is caught),
the session records are complete, and nothing is left in any registry.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from aip_grpc import session_api_pb2
from tests.integration.faults_support import (
    Recorder,
    ended_once,
    http_get,
    listed_devices,
    until,
)
from tests.stack import (
    GatewayProcess,
    SessionReplica,
    cmd,
    get_session,
    plan,
    register_constellation,
    register_device,
    results_for,
    task_frame,
)
from tests.tcp_proxy import TcpProxy

pb = session_api_pb2

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
    assert info.ended_time.ToNanoseconds() >= info.created_time.ToNanoseconds() > 0
    assert [c.status for c in info.commands] in (
        [pb.COMMAND_STATUS_SENT], [pb.COMMAND_STATUS_UNANSWERED]), info.commands

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
