"""The clients' comings and goings: registering, taking over, evicting, draining.

:class:`Clients` turns a validated registration into a live :class:`Connection` in the
registry and announces it to every replica; it forgets a connection that goes (taken
over, too slow, silent, drained or simply closed) and announces that too. The presence it
announces is what the replicas know of this gateway's clients.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from aip_link import messages as m
from aip_wire.vocab import CloseCode
from gateway_service import metrics
from gateway_service.limits import BucketsByClient
from gateway_service.registry import ClientRegistry, Connection, Outbox
from gateway_service.rules import Refusal, RefusalCode, Registration
from gateway_service.settings import GatewaySettings

log = logging.getLogger("aip.gateway")


class Clients:
    """Registration and unregistration of the registry's connections, with presence."""

    def __init__(self, settings: GatewaySettings, registry: ClientRegistry,
                 broadcast: Callable[[m.GatewayMessage], None]) -> None:
        self.settings = settings
        self.registry = registry
        self._broadcast = broadcast
        #: Task buckets per client_id, so that a reconnect does not reset the rate limit.
        self.task_buckets = BucketsByClient(settings.task_rate, settings.task_burst)
        #: Set on SIGTERM: no new registrations, clients told to reconnect elsewhere.
        self.draining = False

    # ------------------------------------------------------------------ presence

    def presence(self, conn: Connection) -> m.ClientPresence:
        return m.ClientPresence(
            client_id=conn.client_id,
            client_type=conn.client_type,
            platform=conn.platform,
            device_info=conn.device_info,
            gateway_id=self.settings.gateway_id,
        )

    def hello(self) -> m.Hello:
        """Everything a (re)connected replica must know: every client registered here."""
        return m.Hello(self.settings.gateway_id,
                       tuple(self.presence(conn) for conn in self.registry))

    def update_device_info(self, conn: Connection, info: dict[str, Any]) -> None:
        conn.device_info = info
        self._broadcast(m.DeviceInfoUpdate(conn.client_id, info))

    # ------------------------------------------------------------------ coming

    def register(self, registration: Registration, outbox_writer: Any, close: Any) -> Connection:
        """Bind a validated registration to a new connection and announce it.

        A ``client_id`` already registered is taken over by the newcomer, unless
        duplicates are refused: whether the newcomer may take it over at all is decided
        before (:mod:`gateway_service.takeover`).

        :raises Refusal: the ``client_id`` is taken and duplicates are refused.
        """
        previous = self.registry.get(registration.client_id)
        if previous is not None:
            if self.settings.refuse_duplicates:
                raise Refusal(RefusalCode.DUPLICATE,
                              f"Client ID '{registration.client_id}' is already connected")
            log.info("[WS] %s: the newer connection replaces the old one (4000)",
                     registration.client_id)
            self.unregister(previous)
            previous.close(CloseCode.REPLACED, "replaced by a newer connection")

        outbox = Outbox(outbox_writer, limit=self.settings.max_pending_sends,
                        max_bytes=self.settings.max_pending_bytes)
        conn = Connection(
            client_id=registration.client_id,
            client_type=registration.client_type,
            platform=registration.platform,
            target_id=registration.target_id,
            device_info=registration.device_info,
            outbox=outbox,
            close=close,
            task_bucket=self.task_buckets.bucket(registration.client_id, time.monotonic()),
        )
        outbox.on_overflow = partial(self._overflowed, conn)
        self.registry.add(conn)
        metrics.CLIENTS_BY_TYPE[conn.client_type].inc()
        self._broadcast(m.ClientOnline(self.presence(conn)))
        if conn.is_device:
            log.info("[WS] Registered device client: %s (platform %s)", conn.client_id,
                     conn.platform)
        else:
            log.info("[WS] Registered constellation client: %s (target %s)", conn.client_id,
                     conn.target_id)
        return conn

    # ------------------------------------------------------------------ going

    def unregister(self, conn: Connection) -> None:
        """Forget a connection that is gone; its sessions are cancelled by the replicas.

        Safe to call more than once and for a connection that was taken over.
        """
        for task in list(conn.tasks):
            task.cancel()
        conn.outbox.close()
        if not self.registry.remove(conn):
            return
        metrics.CLIENTS_BY_TYPE[conn.client_type].dec()
        if conn.sessions:
            reason = "device_disconnected" if conn.is_device else "constellation_disconnected"
            log.info(
                "[WS] %s %s disconnected, cancelling %d active session(s) (%s)",
                conn.client_type,
                conn.client_id,
                len(conn.sessions),
                reason,
            )
        self._broadcast(m.ClientOffline(conn.client_id, conn.client_type,
                                        self.settings.gateway_id))
        log.info("[WS] %s disconnected", conn.client_id)

    def _overflowed(self, conn: Connection) -> None:
        log.warning(
            "[WS] %s stopped reading (over %s pending): disconnecting it",
            conn.client_id,
            conn.outbox.overflow,
        )
        # Unregister at once: a peer that does not read may never finish the close.
        self.unregister(conn)
        conn.close(CloseCode.TOO_SLOW, "too many frames pending")

    async def evict_silent(self) -> None:
        """Evict clients that sent nothing for longer than the silence limit, forever."""
        limit = self.settings.silence_limit
        while True:
            await asyncio.sleep(min(5.0, limit / 4))
            horizon = time.monotonic() - limit
            for conn in self.registry:
                if conn.last_seen < horizon:
                    log.warning(
                        "[WS] %s sent nothing for %.0fs: evicting it", conn.client_id, limit
                    )
                    # Unregister first: a vanished peer may never finish the close.
                    self.unregister(conn)
                    conn.close(CloseCode.SILENT, f"no frame for {limit:g}s")

    async def drain(self, timeout: float) -> None:
        """Stop taking clients, flush what is queued for them, then close them with 1012
        so that they reconnect (to another gateway, or to this one once restarted)."""
        self.draining = True
        connections = list(self.registry)
        log.info("draining: flushing and closing %d client(s)", len(connections))
        if connections:
            await asyncio.gather(*(conn.outbox.drain(timeout) for conn in connections))
        for conn in connections:
            self.unregister(conn)
            conn.close(CloseCode.SERVICE_RESTART, "gateway restarting; reconnect")
