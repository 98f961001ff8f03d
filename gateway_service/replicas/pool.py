"""The replicas the gateway links to: what it knows of each, and where a session goes.

:class:`ReplicaPool` keeps one :class:`Replica` per address the resolver finds, each with
its own :class:`~gateway_service.replicas.transport.ReplicaLink`. A :class:`Replica` is
the gateway's view of one replica (its id, how many sessions it runs, whether it drains,
which of its sessions were already reported lost); the transport only moves messages.
The pool places new sessions (:meth:`ReplicaPool.pick`) and does the bookkeeping of a
link coming up or going away; what the link brings is handed to the owner it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Protocol

from aip_link import messages as m
from aip_wire.vocab import CancelReason
from gateway_service import metrics
from gateway_service.replicas.resolver import ReplicaResolver
from gateway_service.replicas.transport import LinkSecurity, ReplicaLink
from gateway_service.settings import GatewaySettings

log = logging.getLogger("aip.gateway.replicas")

#: Seconds a replica remembers the sessions it reported lost, after its link is back up.
LOST_SESSION_MEMORY = 60.0


class Replica:
    """One session-service replica as the gateway sees it.

    Not slotted, so that a test may stand in for :attr:`send` on one instance.
    """

    def __init__(self, address: str, transport: ReplicaLink) -> None:
        self.address = address
        self.transport = transport
        #: Queue one message for the replica; ``False`` when its link is down. The
        #: transport's own bound method: results and submits pay no extra call for it.
        self.send: Callable[[m.GatewayMessage], bool] = transport.send
        #: Queue a presence message, which may wait a moment for others to join it.
        self.announce: Callable[[m.GatewayMessage], bool] = transport.announce
        self.replica_id = ""
        #: The replica's own count, from its last answer; raised by one per submit sent.
        self.active_sessions = 0
        #: The replica refused a task because it is shutting down: place none there.
        self.draining = False
        #: Sessions of this replica already ended for their requesters as lost with the
        #: link; if the replica was only cut off, their own end must not be delivered.
        self.lost_sessions: set[str] = set()

    def __repr__(self) -> str:
        return f"<Replica {self.address} healthy={self.healthy}>"

    @property
    def healthy(self) -> bool:
        return self.transport.healthy

    @property
    def last_error(self) -> str:
        return self.transport.last_error

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return self.transport.metadata


class PoolOwner(Protocol):
    """Who the pool hands the link's traffic to (the gateway)."""

    def hello(self) -> m.Hello: ...
    def on_replica_up(self, replica: Replica) -> None: ...
    def on_replica_messages(self, replica: Replica,
                            batch: Sequence[m.SessionMessage]) -> None: ...
    def on_replica_lost(self, replica: Replica, cause: str) -> None: ...
    def on_replica_removed(self, replica: Replica) -> None: ...


class ReplicaPool:
    """``address`` -> :class:`Replica`, kept in step with the resolver."""

    def __init__(self, settings: GatewaySettings, owner: PoolOwner,
                 security: LinkSecurity,
                 make_link: Callable[..., ReplicaLink] = ReplicaLink) -> None:
        self.settings = settings
        self._owner = owner
        self._security = security
        self._make_link = make_link
        self._resolver = ReplicaResolver(settings.session_addresses())
        self._replicas: dict[str, Replica] = {}
        self._of_link: dict[ReplicaLink, Replica] = {}

    def __iter__(self) -> Iterator[Replica]:
        return iter(list(self._replicas.values()))

    @property
    def replicas(self) -> list[Replica]:
        return list(self._replicas.values())

    def healthy(self) -> list[Replica]:
        return [replica for replica in self._replicas.values() if replica.healthy]

    def pick(self, skip: Collection[Replica] = ()) -> Replica | None:
        """The healthy, non-draining replica with the fewest active sessions, other than
        those in ``skip``."""
        usable = [replica for replica in self.healthy()
                  if not replica.draining and replica not in skip]
        if not usable:
            return None
        return min(usable, key=lambda replica: replica.active_sessions)

    def send(self, replica: Replica, message: m.GatewayMessage) -> bool:
        """Queue ``message`` for ``replica``; ``False`` when its link is down."""
        return replica.send(message)

    def broadcast(self, message: m.GatewayMessage) -> None:
        for replica in self._replicas.values():
            replica.announce(message)

    async def refresh(self) -> None:
        """Open a link to each replica address found, close those no longer found."""
        addresses = await self._resolver.resolve()
        for address in addresses:
            if address not in self._replicas:
                log.info("session-service replica found at %s", address)
                self._add(address)
        for address in [a for a in self._replicas if a not in addresses]:
            replica = self._replicas.pop(address)
            was_healthy = replica.healthy
            log.info("session-service replica %s is gone from the replica list", address)
            await replica.transport.stop()
            self._of_link.pop(replica.transport, None)
            if was_healthy:
                self.on_link_lost(replica.transport, "removed from the replica list",
                                  replica)
            # A replica that left the list for good keeps no series of its own.
            with contextlib.suppress(KeyError):
                metrics.REPLICA_LINK_UP.remove(address)
            self._owner.on_replica_removed(replica)

    def _add(self, address: str) -> None:
        settings = self.settings
        link = self._make_link(
            address,
            self,
            backoff_min=settings.link_backoff_min,
            backoff_max=settings.link_backoff_max,
            ping_interval=settings.link_ping_interval,
            silence_limit=settings.link_silence_limit,
            presence_linger=settings.presence_linger,
            security=self._security,
        )
        replica = Replica(address, link)
        self._replicas[address] = replica
        metrics.REPLICA_LINK_UP.labels(address).set(0)
        self._of_link[link] = replica
        link.start()

    async def stop(self) -> None:
        await asyncio.gather(*(replica.transport.stop() for replica in self._replicas.values()))

    # ------------------------------------------------------------ the links' owner

    def hello(self) -> m.Hello:
        return self._owner.hello()

    def on_link_up(self, link: ReplicaLink) -> None:
        replica = self._of_link[link]
        replica.draining = False
        metrics.REPLICAS_UP.set(len(self.healthy()))
        metrics.REPLICA_LINK_UP.labels(replica.address).set(1)
        self._cancel_lost(replica)
        self._owner.on_replica_up(replica)

    def on_link_messages(self, link: ReplicaLink, batch: Sequence[m.SessionMessage]) -> None:
        self._owner.on_replica_messages(self._of_link[link], batch)

    def on_link_lost(self, link: ReplicaLink, cause: str,
                     replica: Replica | None = None) -> None:
        replica = replica or self._of_link.get(link)
        if replica is None:
            return
        metrics.REPLICAS_UP.set(len(self.healthy()))
        metrics.REPLICA_LINK_UP.labels(replica.address).set(0)
        self._owner.on_replica_lost(replica, cause)
        replica.active_sessions = 0

    def welcome(self, replica: Replica, body: m.Welcome) -> None:
        replica.replica_id = body.replica_id
        replica.active_sessions = body.active_sessions

    def pong(self, replica: Replica, body: m.Pong) -> None:
        replica.active_sessions = body.active_sessions

    @staticmethod
    def _cancel_lost(replica: Replica) -> None:
        """Stop the sessions already reported lost, which may still run on a replica that
        was only cut off, not dead; their own ends stay undelivered for a while."""
        if not replica.lost_sessions:
            return
        log.info("asking replica %s to cancel %d session(s) reported lost",
                 replica.address, len(replica.lost_sessions))
        for session_id in replica.lost_sessions:
            replica.send(m.CancelSession(session_id, CancelReason.LINK_LOST))
        # A replica that restarted does not know them and answers nothing.
        lost = set(replica.lost_sessions)
        asyncio.get_running_loop().call_later(
            LOST_SESSION_MEMORY, replica.lost_sessions.difference_update, lost
        )
