"""The gateway, composed: clients, replicas, the session table and the link's inbound.

:class:`Gateway` builds the parts and wires them together; it holds no rule and no
bookkeeping of its own. :mod:`gateway_service.clients` registers and forgets clients,
:mod:`gateway_service.replicas.pool` keeps the replicas, :mod:`gateway_service.sessions`
the routes; what each replica's link brings is dispatched here, by one table per replica,
to the part it concerns. Frame handling per client lives in
:mod:`gateway_service.handlers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from aip_link import messages as m
from aip_link.dispatch import Inbound
from aip_runtime import log_context
from gateway_service import metrics
from gateway_service.clients import Clients
from gateway_service.registry import ClientRegistry, Connection
from gateway_service.replicas import api
from gateway_service.replicas.api import RemoteDevice
from gateway_service.replicas.pool import Replica, ReplicaPool
from gateway_service.replicas.transport import LinkSecurity
from gateway_service.rules import Registration
from gateway_service.sessions import Route, SessionTable
from gateway_service.settings import GatewaySettings
from gateway_service.takeover import RecentTakeovers

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
        link_token=settings.link_token,
    )


class Gateway:
    """One gateway: its parts, and the wires between them."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.gateway_id = settings.gateway_id
        self.registry = ClientRegistry()
        self.pool = ReplicaPool(settings, self, link_security(settings))
        self.clients = Clients(settings, self.registry, self.pool.broadcast)
        #: Which client ids changed hands lately: a token takes one over unprobed only
        #: once per window (:mod:`gateway_service.takeover`).
        self.takeovers = RecentTakeovers()
        self.sessions = SessionTable(settings.gateway_id, settings.submit_timeout,
                                     self.registry, self.pool)
        self._inbound: dict[Replica, Inbound] = {}
        self._resolve_task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None

    # What the tests and the HTTP API read.

    @property
    def routes(self) -> dict[str, Route]:
        return self.sessions.routes

    @property
    def draining(self) -> bool:
        return self.clients.draining

    @property
    def links(self) -> list[Replica]:
        return self.pool.replicas

    def healthy_links(self) -> list[Replica]:
        return self.pool.healthy()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.refresh_replicas()
        loop = asyncio.get_running_loop()
        self._resolve_task = loop.create_task(self._keep_resolving())
        self._sweep_task = loop.create_task(self.clients.evict_silent())

    async def stop(self) -> None:
        for task in (self._resolve_task, self._sweep_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.pool.stop()

    async def drain(self, timeout: float) -> None:
        await self.clients.drain(timeout)

    async def refresh_replicas(self) -> None:
        await self.pool.refresh()

    async def _keep_resolving(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resolve_interval)
            try:
                await self.refresh_replicas()
            except Exception:
                log.exception("refreshing the replica list failed")

    # ------------------------------------------------------------------ clients

    def register(self, registration: Registration, outbox_writer: Any, close: Any) -> Connection:
        return self.clients.register(registration, outbox_writer, close)

    def unregister(self, conn: Connection) -> None:
        self.clients.unregister(conn)

    async def remote_device(self, device_id: str) -> RemoteDevice | None:
        """A device connected through another gateway, as the replicas know it."""
        return await api.find_device(self.pool.healthy(), device_id,
                                     own_gateway_id=self.gateway_id,
                                     timeout=self.settings.lookup_timeout)

    async def device_connected(self, device_id: str) -> bool:
        """Whether ``device_id`` is a device connected here or through another gateway;
        the replicas are asked only when it is not connected here."""
        if self.registry.is_device_connected(device_id):
            return True
        return await self.remote_device(device_id) is not None

    # ------------------------------------------------------------------ the pool's owner

    def hello(self) -> m.Hello:
        return self.clients.hello()

    def on_replica_up(self, replica: Replica) -> None:
        pass  # the pool did the bookkeeping; the replica announces itself with Welcome

    def on_replica_removed(self, replica: Replica) -> None:
        # Replica addresses come and go with DNS (pods rescheduled): forget its table.
        self._inbound.pop(replica, None)

    def on_replica_messages(self, replica: Replica, batch: Sequence[m.SessionMessage]) -> None:
        began = time.monotonic()
        inbound = self._inbound.get(replica)
        if inbound is None:
            inbound = self._inbound[replica] = self._inbound_for(replica)
        inbound.dispatch(batch)
        metrics.FORWARD_TO_DEVICE.observe(time.monotonic() - began)

    def on_replica_lost(self, replica: Replica, cause: str) -> None:
        self.sessions.replica_lost(replica, cause)

    def _inbound_for(self, replica: Replica) -> Inbound:
        sessions, pool, registry = self.sessions, self.pool, self.registry

        def device_frame(body: m.DeviceFrame) -> None:
            # Hot path: the command goes straight to the device's outbox.
            device = registry.device(body.device_id)
            if device is not None:
                device.send_text(body.frame_json.decode())
            else:
                log.debug("command for %s dropped: not connected here", body.device_id)

        return Inbound({
            m.DeviceFrame: device_frame,
            m.TaskEnded: _about_session(partial(sessions.task_ended, replica)),
            m.SessionOpened: _about_session(partial(sessions.session_opened, replica)),
            m.TaskAccepted: _about_session(partial(sessions.task_accepted, replica)),
            m.TaskRejected: _about_session(partial(sessions.task_rejected, replica)),
            m.Welcome: partial(pool.welcome, replica),
            m.Pong: partial(pool.pong, replica),
        }, name=f"link {replica.address}")


def _about_session(handle: Callable[[Any], None]) -> Callable[[Any], None]:
    """``handle`` of a link message about one session, its log lines naming it (the
    link reader's task is no socket's, so nothing else is bound there)."""
    def handled(body: Any) -> None:
        with log_context.bound(session_id=body.session_id):
            handle(body)

    return handled
