"""The gateway's shared state and its side of the link.

:class:`Gateway` holds the client registry, the links to the replicas (found by
:mod:`gateway_service.replicas`) and the session router (:mod:`gateway_service.routing`).
It announces presence to the replicas, registers and unregisters clients, and dispatches
what the link brings. Frame handling per client lives in :mod:`gateway_service.handlers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import grpc

from aip_grpc import session_api_pb2
from aip_link import messages as m
from aip_link.dispatch import Inbound
from gateway_service import metrics
from gateway_service.limits import TokenBucket
from gateway_service.link import LinkSecurity, ReplicaLink
from gateway_service.registry import ClientRegistry, Connection, Outbox
from gateway_service.replicas import ReplicaResolver
from gateway_service.routing import Route, SessionRouter
from gateway_service.rules import (
    CLOSE_DUPLICATE,
    CLOSE_REPLACED,
    CLOSE_SERVICE_RESTART,
    CLOSE_SILENT,
    CLOSE_TOO_SLOW,
    Refusal,
    Registration,
)
from gateway_service.settings import GatewaySettings

log = logging.getLogger("aip.gateway")

def link_security(settings: GatewaySettings) -> LinkSecurity:
    def read(path: Path | None) -> bytes | None:
        return path.read_bytes() if path is not None else None

    return LinkSecurity(
        ca=read(settings.session_tls_ca),
        cert=read(settings.session_tls_cert),
        key=read(settings.session_tls_key),
        server_name=settings.session_tls_server_name,
        token=settings.session_token,
    )


class Gateway:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.gateway_id = settings.gateway_id
        self.registry = ClientRegistry()
        self.router = SessionRouter(settings, self.registry, self.pick_link,
                                    self.healthy_links)
        self._links: dict[str, ReplicaLink] = {}
        self._resolver = ReplicaResolver(settings.session_addresses())
        self._security = link_security(settings)
        self._resolve_task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        self._inbound: dict[ReplicaLink, Inbound] = {}
        #: Set on SIGTERM: no new registrations, clients told to reconnect elsewhere.
        self.draining = False

    @property
    def routes(self) -> dict[str, Route]:
        return self.router.routes

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.refresh_replicas()
        loop = asyncio.get_running_loop()
        self._resolve_task = loop.create_task(self._keep_resolving())
        self._sweep_task = loop.create_task(self._evict_silent())

    async def stop(self) -> None:
        for task in (self._resolve_task, self._sweep_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await asyncio.gather(*(link.stop() for link in self._links.values()))

    async def _evict_silent(self) -> None:
        """Evict clients that sent nothing for longer than the silence limit."""
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
                    conn.close(CLOSE_SILENT, f"no frame for {limit:g}s")

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
            conn.close(CLOSE_SERVICE_RESTART, "gateway restarting; reconnect")

    @property
    def links(self) -> list[ReplicaLink]:
        return list(self._links.values())

    async def _keep_resolving(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resolve_interval)
            try:
                await self.refresh_replicas()
            except Exception:
                log.exception("refreshing the replica list failed")

    async def refresh_replicas(self) -> None:
        """Open a link to each replica address found, close those no longer found."""
        addresses = await self._resolver.resolve()
        for address in addresses:
            if address not in self._links:
                log.info("session-service replica found at %s", address)
                link = ReplicaLink(
                    address,
                    self,
                    backoff_min=self.settings.link_backoff_min,
                    backoff_max=self.settings.link_backoff_max,
                    ping_interval=self.settings.link_ping_interval,
                    silence_limit=self.settings.link_silence_limit,
                    security=self._security,
                )
                self._links[address] = link
                link.start()
        for address in [a for a in self._links if a not in addresses]:
            link = self._links.pop(address)
            was_healthy = link.healthy
            log.info("session-service replica %s is gone from the replica list", address)
            await link.stop()
            if was_healthy:
                self.on_link_lost(link, "removed from the replica list")

    def healthy_links(self) -> list[ReplicaLink]:
        return [link for link in self._links.values() if link.healthy]

    def pick_link(self) -> ReplicaLink | None:
        """The healthy, non-draining replica with the fewest active sessions."""
        healthy = [link for link in self.healthy_links() if not link.draining]
        if not healthy:
            return None
        return min(healthy, key=lambda link: link.active_sessions)

    def broadcast(self, message: m.GatewayMessage) -> None:
        for link in self._links.values():
            link.send(message)

    # ------------------------------------------------------------------ presence

    def _presence(self, conn: Connection) -> m.ClientPresence:
        return m.ClientPresence(
            client_id=conn.client_id,
            client_type=conn.client_type,
            platform=conn.platform,
            device_info=conn.device_info,
            gateway_id=self.gateway_id,
        )

    def hello(self) -> m.Hello:
        return m.Hello(self.gateway_id, tuple(self._presence(conn) for conn in self.registry))

    def register(
        self,
        registration: Registration,
        outbox_writer: Any,
        close: Any,
    ) -> Connection:
        """Bind a validated registration to a new connection and announce it.

        :raises Refusal: the ``client_id`` is taken and duplicates are refused.
        """
        previous = self.registry.get(registration.client_id)
        if previous is not None:
            if self.settings.refuse_duplicates:
                raise Refusal(
                    f"Client ID '{registration.client_id}' is already connected",
                    CLOSE_DUPLICATE,
                )
            log.warning(
                "[WS] %s reconnected: the newer connection takes over the old one",
                registration.client_id,
            )
            self.unregister(previous)
            previous.close(CLOSE_REPLACED, "replaced by a newer connection")

        outbox = Outbox(outbox_writer, limit=self.settings.max_pending_sends)
        conn = Connection(
            client_id=registration.client_id,
            client_type=registration.client_type,
            platform=registration.platform,
            target_id=registration.target_id,
            device_info=registration.device_info,
            outbox=outbox,
            close=close,
            task_bucket=TokenBucket(self.settings.task_rate, self.settings.task_burst),
        )
        outbox.on_overflow = partial(self._overflowed, conn)
        self.registry.add(conn)
        metrics.CLIENTS_BY_KIND[conn.client_type].inc()
        self.broadcast(m.ClientOnline(self._presence(conn)))
        if conn.is_device:
            log.info("[WS] Registered device client: %s (platform %s)", conn.client_id,
                     conn.platform)
        else:
            log.info("[WS] Registered constellation client: %s (target %s)", conn.client_id,
                     conn.target_id)
        return conn

    def _overflowed(self, conn: Connection) -> None:
        log.warning(
            "[WS] %s stopped reading (%d frames pending): disconnecting it",
            conn.client_id,
            self.settings.max_pending_sends,
        )
        # Unregister at once: a peer that does not read may never finish the close.
        self.unregister(conn)
        conn.close(CLOSE_TOO_SLOW, "too many frames pending")

    def unregister(self, conn: Connection) -> None:
        """Forget a connection that is gone; its sessions are cancelled by the replicas.

        Safe to call more than once and for a connection that was taken over.
        """
        for task in list(conn.tasks):
            task.cancel()
        conn.outbox.close()
        if not self.registry.remove(conn):
            return
        metrics.CLIENTS_BY_KIND[conn.client_type].dec()
        if conn.sessions:
            reason = "device_disconnected" if conn.is_device else "constellation_disconnected"
            log.info(
                "[WS] %s %s disconnected, cancelling %d active session(s) (%s)",
                conn.client_type,
                conn.client_id,
                len(conn.sessions),
                reason,
            )
        self.broadcast(m.ClientOffline(conn.client_id, conn.client_type, self.gateway_id))
        log.info("[WS] %s disconnected", conn.client_id)

    def update_device_info(self, conn: Connection, info: dict[str, Any]) -> None:
        conn.device_info = info
        self.broadcast(m.DeviceInfoUpdate(conn.client_id, info))

    # ------------------------------------------------------------------ other gateways

    async def remote_device(self, device_id: str) -> session_api_pb2.Device | None:
        """A device connected through another gateway, as the replicas know it.

        Every replica hears every gateway's presence, so the first one that answers is
        enough. ``None`` when no replica knows the device or none answers.
        """
        for link in self.healthy_links():
            assert link.api is not None
            try:
                device = await link.api.GetDevice(
                    session_api_pb2.GetDeviceRequest(device_id=device_id),
                    timeout=self.settings.lookup_timeout,
                    metadata=link.metadata,
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    return None
                log.warning("device lookup on %s failed: %s", link.address, exc.details())
                continue
            # A stale record of one of our own clients (it just left) is no device.
            return None if device.gateway_id == self.gateway_id else device
        return None

    async def device_connected(self, device_id: str) -> bool:
        """Whether ``device_id`` is a device connected here or through another gateway."""
        if self.registry.is_device_connected(device_id):
            return True
        return await self.remote_device(device_id) is not None

    # ------------------------------------------------------------------ link inbound

    def on_link_up(self, link: ReplicaLink) -> None:
        metrics.REPLICAS_UP.set(len(self.healthy_links()))
        self.router.link_up(link)

    def on_link_messages(self, link: ReplicaLink, batch: Sequence[m.SessionMessage]) -> None:
        inbound = self._inbound.get(link)
        if inbound is None:
            inbound = self._inbound[link] = self._inbound_for(link)
        inbound.dispatch(batch)

    def _inbound_for(self, link: ReplicaLink) -> Inbound:
        router = self.router

        def device_frame(body: m.DeviceFrame) -> None:
            device = self.registry.device(body.device_id)
            if device is not None:
                device.send_text(body.frame_json.decode())
            else:
                log.debug("command for %s dropped: not connected here", body.device_id)

        def welcome(body: m.Welcome) -> None:
            link.replica_id = body.replica_id
            link.active_sessions = body.active_sessions

        def pong(body: m.Pong) -> None:
            link.active_sessions = body.active_sessions

        return Inbound({
            m.DeviceFrame: device_frame,
            m.TaskEnded: partial(router.task_ended, link),
            m.SessionOpened: partial(router.session_opened, link),
            m.TaskAccepted: partial(router.task_accepted, link),
            m.TaskRejected: partial(router.task_rejected, link),
            m.Welcome: welcome,
            m.Pong: pong,
        }, name=f"link {link.address}")

    def on_link_lost(self, link: ReplicaLink, cause: str) -> None:
        metrics.REPLICAS_UP.set(len(self.healthy_links()))
        self.router.link_lost(link, cause)
