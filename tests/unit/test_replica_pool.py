"""gateway_service.replicas.pool: placement, refresh and link bookkeeping, on fake links."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aip_link import messages as m
from aip_wire.vocab import CancelReason
from gateway_service.replicas.pool import Replica, ReplicaPool
from gateway_service.replicas.transport import LinkSecurity
from gateway_service.settings import GatewaySettings


class FakeLink:
    """A transport that records what is sent and is up when told."""

    def __init__(self, address: str, owner: Any, **_: Any) -> None:
        self.address = address
        self.owner = owner
        self.healthy = False
        self.last_error = ""
        self.metadata: tuple[tuple[str, str], ...] = ()
        self.channel = None
        self.sent: list[m.GatewayMessage] = []
        #: Which of ``sent`` were presence (``announce``), which may wait for others.
        self.announced: list[m.GatewayMessage] = []
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def send(self, message: m.GatewayMessage) -> bool:
        if not self.healthy:
            return False
        self.sent.append(message)
        return True

    def announce(self, message: m.GatewayMessage) -> bool:
        sent = self.send(message)
        if sent:
            self.announced.append(message)
        return sent


class Owner:
    def __init__(self) -> None:
        self.up: list[Replica] = []
        self.lost: list[tuple[Replica, str]] = []
        self.removed: list[Replica] = []
        self.batches: list[tuple[Replica, Sequence[m.SessionMessage]]] = []

    def hello(self) -> m.Hello:
        return m.Hello("gw")

    def on_replica_up(self, replica: Replica) -> None:
        self.up.append(replica)

    def on_replica_messages(self, replica: Replica, batch: Sequence[m.SessionMessage]) -> None:
        self.batches.append((replica, batch))

    def on_replica_lost(self, replica: Replica, cause: str) -> None:
        self.lost.append((replica, cause))

    def on_replica_removed(self, replica: Replica) -> None:
        self.removed.append(replica)


def pool(addresses: str = "127.0.0.1:1,127.0.0.2:1") -> tuple[ReplicaPool, Owner]:
    owner = Owner()
    return ReplicaPool(GatewaySettings(session_service=addresses), owner, LinkSecurity(),
                       make_link=FakeLink), owner


def link(replica: Replica) -> FakeLink:
    transport = replica.transport
    assert isinstance(transport, FakeLink)
    return transport


async def up(replicas: ReplicaPool, *chosen: Replica) -> None:
    for replica in chosen:
        link(replica).healthy = True
        replicas.on_link_up(replica.transport)  # type: ignore[arg-type]


async def test_refresh_opens_one_started_link_per_address() -> None:
    replicas, _ = pool()
    await replicas.refresh()
    assert [r.address for r in replicas.replicas] == ["127.0.0.1:1", "127.0.0.2:1"]
    assert all(link(r).started for r in replicas)
    assert replicas.healthy() == []
    assert replicas.pick() is None


async def test_pick_prefers_the_healthy_non_draining_replica_with_fewest_sessions() -> None:
    replicas, owner = pool("127.0.0.1:1,127.0.0.2:1,127.0.0.3:1")
    await replicas.refresh()
    a, b, c = replicas.replicas
    await up(replicas, a, b, c)
    assert owner.up == [a, b, c]
    a.active_sessions, b.active_sessions, c.active_sessions = 3, 1, 0
    c.draining = True
    assert replicas.pick() is b
    link(b).healthy = False
    assert replicas.pick() is a
    assert replicas.healthy() == [a, c]


async def test_welcome_and_pong_set_the_replica_state_not_the_transport() -> None:
    replicas, _ = pool("127.0.0.1:1")
    await replicas.refresh()
    (replica,) = replicas.replicas
    replicas.welcome(replica, m.Welcome("r-1", 4))
    assert (replica.replica_id, replica.active_sessions) == ("r-1", 4)
    replicas.pong(replica, m.Pong(1, 2))
    assert replica.active_sessions == 2
    assert not hasattr(replica.transport, "active_sessions")


async def test_link_up_clears_draining_and_cancels_sessions_reported_lost() -> None:
    replicas, _ = pool("127.0.0.1:1")
    await replicas.refresh()
    (replica,) = replicas.replicas
    replica.draining = True
    replica.lost_sessions.add("s1")
    await up(replicas, replica)
    assert not replica.draining
    assert link(replica).sent == [m.CancelSession("s1", CancelReason.LINK_LOST)]
    assert replica.lost_sessions == {"s1"}  # remembered a while: its end stays undelivered


async def test_link_lost_tells_the_owner_and_forgets_the_load() -> None:
    replicas, owner = pool("127.0.0.1:1")
    await replicas.refresh()
    (replica,) = replicas.replicas
    await up(replicas, replica)
    replica.active_sessions = 5
    link(replica).healthy = False
    replicas.on_link_lost(replica.transport, "boom")  # type: ignore[arg-type]
    assert owner.lost == [(replica, "boom")]
    assert replica.active_sessions == 0


async def test_messages_reach_the_owner_with_their_replica() -> None:
    replicas, owner = pool("127.0.0.1:1")
    await replicas.refresh()
    (replica,) = replicas.replicas
    batch = [m.Pong(1, 0)]
    replicas.on_link_messages(replica.transport, batch)  # type: ignore[arg-type]
    assert owner.batches == [(replica, batch)]


async def test_broadcast_goes_to_every_replica_whose_link_is_up() -> None:
    replicas, _ = pool()
    await replicas.refresh()
    a, b = replicas.replicas
    await up(replicas, a)
    replicas.broadcast(m.ClientOffline("dev1", "device", "gw"))  # type: ignore[arg-type]
    assert link(a).sent == [m.ClientOffline("dev1", "device", "gw")]  # type: ignore[arg-type]
    assert link(a).announced == link(a).sent  # presence may wait to share a write
    assert link(b).sent == []
    assert replicas.send(b, m.Ping(1)) is False


async def test_a_replica_gone_from_the_list_is_stopped_and_reported_lost() -> None:
    replicas, owner = pool()
    await replicas.refresh()
    a, b = replicas.replicas
    await up(replicas, a, b)
    replicas._resolver.entries = replicas._resolver.entries[:1]
    await replicas.refresh()
    assert replicas.replicas == [a]
    assert link(b).stopped
    assert owner.lost == [(b, "removed from the replica list")]


async def test_the_owner_hears_of_every_replica_removed_healthy_or_not() -> None:
    replicas, owner = pool("127.0.0.1:1,127.0.0.2:1,127.0.0.3:1")
    await replicas.refresh()
    _, b, c = replicas.replicas
    await up(replicas, b)
    replicas._resolver.entries = replicas._resolver.entries[:1]
    await replicas.refresh()
    assert owner.removed == [b, c]
    assert owner.lost == [(b, "removed from the replica list")]
