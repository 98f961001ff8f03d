"""A link that goes silent without any reset (a partition) is found at both ends well
before TCP or gRPC keepalive (10 s + 5 s) would notice, and recovers afterwards: the
gateway by its pings going unanswered, the replica by the pings no longer arriving."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.stack import (
    GatewayProcess,
    SessionReplica,
    cmd,
    plan,
    register_constellation,
    register_device,
    task_frame,
    wait_for,
)
from tests.tcp_proxy import TcpProxy


class Partitioned:
    def __init__(self) -> None:
        self.replica = SessionReplica(gateway_grace=30.0, link_silence_limit=1.5)
        self.proxy: TcpProxy | None = None
        self.gw: GatewayProcess | None = None

    async def start(self) -> Partitioned:
        await self.replica.start()
        self.proxy = await TcpProxy.to(self.replica.address).start()
        self.gw = GatewayProcess([self.proxy.address], link_ping_interval=0.2,
                                 link_silence_limit=1.5)
        await self.gw.start()
        await self.gw.wait_linked()
        return self

    async def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.thaw()
        if self.gw is not None:
            await self.gw.stop()
        if self.proxy is not None:
            await self.proxy.stop()
        await self.replica.stop()


@pytest.fixture
async def partitioned() -> AsyncIterator[Partitioned]:
    setup = Partitioned()
    try:
        yield await setup.start()
    finally:
        await setup.stop()


async def test_a_silent_link_is_dropped_and_its_sessions_reported_lost(
    partitioned: Partitioned,
) -> None:
    assert partitioned.gw is not None and partitioned.proxy is not None
    gateway = partitioned.gw.gateway
    url = partitioned.gw.ws_url
    device = await register_device(url, "dev1")
    constellation = await register_constellation(url, "c1", "dev1")
    presence = partitioned.replica.service.presence
    await wait_for(lambda: presence.get("dev1") is not None and presence.get("c1") is not None)
    await constellation.send(task_frame("c1", plan([cmd("a")]), client_type="constellation",
                                        target_id="dev1", session_id="s-quiet"))
    ack = await constellation.recv_type("heartbeat")
    assert ack.get("session_id") == "s-quiet"
    assert (await device.recv_type("command"))["session_id"] == "s-quiet"

    partitioned.proxy.freeze()
    # Well inside gRPC's own keepalive (10 s + 5 s): only the link's pings find it.
    end = await constellation.recv_type("task_end", timeout=10)
    assert end["session_id"] == "s-quiet" and end["status"] == "failed", end
    assert partitioned.proxy.address in (end["error"] or ""), end
    assert "nothing from the replica" in gateway.links[0].last_error
    assert not gateway.healthy_links()
    # The replica closed its end too, without waiting for TCP; within the grace the
    # gateway's clients still count as connected.
    hub = partitioned.replica.service.hub
    await wait_for(lambda: not hub.peers, 10)
    assert presence.get("dev1") is not None

    # Once the partition heals the link comes back, and the replica is told to stop the
    # session it may still be running, since its requester was told it was lost.
    partitioned.proxy.thaw()
    await partitioned.gw.wait_linked(timeout=15)
    session = partitioned.replica.service.manager.sessions["s-quiet"]
    await wait_for(lambda: not session.running, 10)
    assert session.cancel_reason == "link_lost"
    # The requester heard of the loss once: the replica's own end of it is not passed on.
    await constellation.expect_silence(1.0)
    await device.close()
    await constellation.close()
