"""Assembling one replica: the gRPC server with the link, the public API, health and
reflection, around one presence table, one session manager and one session store.

Stopping drains: new sessions are refused and health turns NOT_SERVING at once, running
sessions get ``--drain-timeout`` to finish while the links stay open (so their results
still arrive and, if cancelled, their requesters still hear ``task_end``), then the rest
are cancelled with ``replica_shutdown``, the store is flushed, and the server stops.

Health follows the store too: NOT_SERVING while its writes fail (new sessions are then
refused, running ones go on), SERVING again once they work. ``--metrics-port`` serves
the Prometheus metrics, the store's write errors and health among them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import Any

import grpc
from prometheus_client import start_http_server

from aip_link.channel import SERVER_OPTIONS
from aip_runtime.cli import bind_error_text
from aip_wire.vocab import CancelReason
from session_service import api_servicer, leases, link_servicer
from session_service.api_forward import Owners
from session_service.api_health import Health
from session_service.api_servicer import SessionApiServicer
from session_service.core.manager import SessionManager
from session_service.grpc_metrics import MetricsInterceptor
from session_service.link_servicer import GatewayLinkServicer, LinkHub
from session_service.presence import Presence
from session_service.security import (
    TokenInterceptor,
    peer_credentials,
    server_credentials,
)
from session_service.settings import SessionSettings
from session_service.store import SessionStore
from session_service.store_db import shown

log = logging.getLogger("aip.session.server")

SERVICE_NAMES = (link_servicer.SERVICE_NAME, api_servicer.SERVICE_NAME)


def advertised(host: str, port: int) -> str:
    """Where other replicas reach a replica listening on ``host:port`` when it does not
    say (``--advertise-address``): on every interface (``0.0.0.0``, ``::``, ``""``),
    the address its host name resolves to, as in a container; else ``host`` itself."""
    if host in ("", "0.0.0.0", "::", "[::]"):
        try:
            host = socket.gethostbyname(socket.gethostname())
        except OSError:
            host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class SessionService:
    """One replica; :meth:`start` binds and serves, :meth:`stop` ends every session."""

    def __init__(self, settings: SessionSettings) -> None:
        self.settings = settings
        self.presence = Presence()
        self.hub = LinkHub()
        self.store = SessionStore(
            settings.store_location, settings.replica_id, settings.store_commit_interval,
            address=settings.advertise_address or advertised(settings.host, settings.port),
            lease_ttl=settings.lease_ttl, backlog_bytes=settings.store_backlog_bytes,
            limits=settings.queue_limits,
        ) if settings.store_location else None
        self.manager = SessionManager(settings, self.presence, self.hub, self.store,
                                      reader=self.store)
        # Metrics first, so that the calls the tokens refuse are counted too.
        interceptors: list[grpc.aio.ServerInterceptor] = [MetricsInterceptor()]
        if settings.auth_token or settings.link_token:
            interceptors.append(TokenInterceptor(settings.auth_token, settings.link_token))
        self.server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors)
        self.port = 0
        self._pruner: asyncio.Task[None] | None = None
        self._leaser: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._skip_drain = asyncio.Event()
        self._health_changes: set[asyncio.Task[None]] = set()
        self._metrics: Any = None
        link_servicer.add_to_server(
            GatewayLinkServicer(settings.replica_id, self.hub, self.presence, self.manager,
                                settings.gateway_grace, settings.link_silence_limit),
            self.server,
        )
        self.owners = Owners(
            self.store, settings.replica_id, settings.lease_ttl, settings.auth_token,
            peer_credentials(settings.tls_cert, settings.tls_key, settings.tls_peer_ca)
            if settings.tls_cert is not None and settings.tls_key is not None else None,
        ) if self.store is not None else None
        api_servicer.add_to_server(
            SessionApiServicer(settings.replica_id, self.manager, self.presence, self.store,
                               self.owners),
            self.server,
        )
        self.health = Health(self.server, SERVICE_NAMES)

    async def start(self) -> int:
        if self.store is not None:
            self.store.watch_health(self._store_health)
            try:
                recovered = await asyncio.to_thread(self.store.open)
            except Exception as exc:
                raise RuntimeError(f"cannot open the session store "
                                   f"{shown(self.settings.store_location)!r}: {exc}") from exc
            if recovered:
                log.warning("%d session(s) of a dead replica marked failed in %s",
                            recovered, shown(self.settings.store_location))
            loop = asyncio.get_running_loop()
            self._pruner = loop.create_task(self._prune_forever())
            self._leaser = loop.create_task(self._renew_forever())
        address = f"{self.settings.host}:{self.settings.port}"
        try:
            if self.settings.tls_cert is not None and self.settings.tls_key is not None:
                self.port = self.server.add_secure_port(address, server_credentials(
                    self.settings.tls_cert, self.settings.tls_key, self.settings.tls_client_ca
                ))
            else:
                self.port = self.server.add_insecure_port(address)
        except RuntimeError:
            # Recent grpcio raises where older releases returned port 0.
            self.port = 0
        if not self.port:
            raise OSError(f"cannot listen on {self.settings.host}:{self.settings.port}")
        if self.store is not None and not self.settings.advertise_address \
                and self.port != self.settings.port:
            # Bound to a port the system chose: the lease must say which.
            self.store.address = advertised(self.settings.host, self.port)
            await asyncio.to_thread(self.store.renew_lease)
        await self.server.start()
        await self.health.serving(self.store is None or self.store.writable)
        if self.settings.metrics_port is not None:
            try:
                self._metrics, _ = start_http_server(self.settings.metrics_port,
                                                     self.settings.host)
            except OSError as exc:
                raise RuntimeError(
                    f"cannot serve metrics on {self.settings.host}:"
                    f"{self.settings.metrics_port}: {bind_error_text(exc)} (--metrics-port, "
                    "AIP_SESSION_METRICS_PORT)") from exc
        log.info("session service %s listening on %s:%d", self.settings.replica_id,
                 self.settings.host, self.port)
        return self.port

    def _store_health(self, ok: bool) -> None:
        task = asyncio.get_running_loop().create_task(self.health.serving(ok))
        self._health_changes.add(task)
        task.add_done_callback(self._health_changes.discard)

    async def _prune_forever(self) -> None:
        """Forget records older than the retention, in memory and in the store."""
        retention = self.settings.record_retention
        interval = min(max(retention / 4, 0.05), 300.0)
        while True:
            assert self.store is not None
            self.store.prune(time.time() - retention)
            self.manager.prune_memory()
            await asyncio.sleep(interval)

    async def _renew_forever(self) -> None:
        """Renew this replica's lease in the store; each renewal also fails the running
        sessions of replicas whose lease lapsed (see :mod:`session_service.leases`)."""
        interval = leases.renew_interval(self.settings.lease_ttl)
        while True:
            await asyncio.sleep(interval)
            assert self.store is not None
            self.store.renew_lease()

    def skip_drain(self) -> None:
        """Cut a drain short: running sessions are cancelled at once."""
        self._skip_drain.set()

    async def stop(self, grace: float = 2.0, drain_timeout: float | None = None) -> None:
        """Drain (``drain_timeout``, default ``--drain-timeout``), then stop; a second
        call waits for the first."""
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(
                self._stop(grace, self.settings.drain_timeout if drain_timeout is None
                           else drain_timeout)
            )
        await asyncio.shield(self._stopping)

    async def _stop(self, grace: float, drain_timeout: float) -> None:
        self.manager.draining = True
        await self.health.enter_graceful_shutdown()
        left = await self.manager.drain(
            drain_timeout, lambda: bool(self.hub.peers) and not self._skip_drain.is_set()
        )
        if left:
            log.warning("cancelling %d session(s) still running: %s", left,
                        CancelReason.REPLICA_SHUTDOWN)
        await self.manager.shutdown(CancelReason.REPLICA_SHUTDOWN)
        for peer in self.hub.peers.values():
            peer.close()
        for task in (self._pruner, self._leaser):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.store is not None:
            try:
                await asyncio.to_thread(self.store.close)
            except Exception:
                log.exception("closing the session store failed")
        await self.server.stop(grace)
        if self.owners is not None:
            await self.owners.close()
        if self._metrics is not None:
            self._metrics.shutdown()
            self._metrics.server_close()

    async def wait(self) -> None:
        await self.server.wait_for_termination()
