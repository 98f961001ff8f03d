"""Assembling one replica: the gRPC server with the link, the public API, health and
reflection, around one presence table and one session manager."""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from aip_grpc import link_pb2, link_pb2_grpc, session_api_pb2, session_api_pb2_grpc
from session_service.api_servicer import SessionApiServicer
from session_service.link_servicer import GatewayLinkServicer, LinkHub
from session_service.presence import Presence
from session_service.sessions import SessionManager
from session_service.settings import SessionSettings

log = logging.getLogger("aip.session.server")

SERVER_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
]
SERVICE_NAMES = (
    link_pb2.DESCRIPTOR.services_by_name["GatewayLink"].full_name,
    session_api_pb2.DESCRIPTOR.services_by_name["SessionApi"].full_name,
)


class SessionService:
    """One replica; :meth:`start` binds and serves, :meth:`stop` ends every session."""

    def __init__(self, settings: SessionSettings) -> None:
        self.settings = settings
        self.presence = Presence()
        self.hub = LinkHub()
        self.manager = SessionManager(settings, self.presence, self.hub.send)
        self.server = grpc.aio.server(options=SERVER_OPTIONS)
        self.health = health.aio.HealthServicer()
        self.port = 0
        link_pb2_grpc.add_GatewayLinkServicer_to_server(
            GatewayLinkServicer(settings.replica_id, self.hub, self.presence, self.manager,
                                settings.gateway_grace),
            self.server,
        )
        session_api_pb2_grpc.add_SessionApiServicer_to_server(
            SessionApiServicer(settings.replica_id, self.manager, self.presence), self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )

    async def start(self) -> int:
        self.port = self.server.add_insecure_port(f"{self.settings.host}:{self.settings.port}")
        if not self.port:
            raise OSError(f"cannot listen on {self.settings.host}:{self.settings.port}")
        await self.server.start()
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("session service %s listening on %s:%d", self.settings.replica_id,
                 self.settings.host, self.port)
        return self.port

    async def stop(self, grace: float = 2.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.manager.shutdown()
        for peer in self.hub.peers.values():
            peer.close()
        await self.server.stop(grace)

    async def wait(self) -> None:
        await self.server.wait_for_termination()
