"""``aip-gateway``: run the gateway under uvicorn."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from types import FrameType
from typing import cast

import uvicorn

from aip_runtime import tracing
from aip_runtime.cli import bind_error_text, bind_failure, listening_socket, load_settings
from aip_runtime.fd_limit import raise_fd_limit
from aip_runtime.gc_tuning import tune_gc
from aip_runtime.log_setup import configure_logging as setup_logging
from aip_runtime.malloc_tuning import tune_malloc
from gateway_service.app import GatewayApp, create_app
from gateway_service.gateway import Gateway
from gateway_service.http_protocol import GatewayHttpProtocol
from gateway_service.settings import GatewaySettings
from gateway_service.socket_guard import GatewayConfig, SocketLimits, cap_for_fd_limit
from gateway_service.ws_protocol import GatewayWebSocketProtocol


def uvicorn_config(settings: GatewaySettings) -> GatewayConfig:
    return GatewayConfig(
        create_app(settings),
        socket_limits=SocketLimits.from_settings(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        loop="auto",
        http=GatewayHttpProtocol,
        ws=GatewayWebSocketProtocol,
        # What a protocol class other than ours would apply to every message; ours starts
        # unregistered sockets at --ws-max-size-unregistered.
        ws_max_size=settings.ws_max_size,
        ws_ping_interval=settings.ws_ping_interval or None,
        ws_ping_timeout=settings.ws_ping_timeout or None,
        ws_per_message_deflate=False,
        lifespan="on",
    )


def configure_logging(settings: GatewaySettings) -> None:
    level = settings.log_level
    setup_logging(level, settings.log_format, service="gateway",
                  fields={"gateway_id": settings.gateway_id}, adopt=("uvicorn", "uvicorn.access"))
    if level.lower() != "debug":
        # uvicorn logs every socket open and close; the gateway logs registrations instead.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)


def log_socket_limits(settings: GatewaySettings) -> None:
    limits = SocketLimits.from_settings(settings)
    logging.getLogger("aip.gateway").info(
        "socket limits: request headers within %gs; at most %d sockets waiting to "
        "register; messages up to %d bytes (%d before registration); %d bytes of partial "
        "frames in all; %d frames or %d bytes queued per client",
        limits.handshake_timeout, limits.max_unregistered, limits.max_size,
        limits.max_size_unregistered, limits.partial_frames_budget,
        settings.max_pending_sends, settings.max_pending_bytes,
    )


class GatewayServer(uvicorn.Server):
    """uvicorn, with a drain before it stops: on the first SIGTERM or SIGINT the gateway
    flushes what it queued for clients and closes them with 1012; a second signal stops
    at once."""

    def __init__(self, config: uvicorn.Config, settings: GatewaySettings) -> None:
        super().__init__(config)
        self._settings = settings
        self._draining = False
        self._drain_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or not self.started:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(self._start_drain, loop)

    def _start_drain(self, loop: asyncio.AbstractEventLoop) -> None:
        self._drain_task = loop.create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        app = cast(GatewayApp, self.config.app)
        gateway: Gateway = app.state.gateway
        try:
            await gateway.drain(self._settings.drain_timeout)
            # Give the close handshakes a moment before uvicorn tears sockets down.
            await asyncio.sleep(0.2)
        finally:
            self.should_exit = True


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(GatewaySettings, sys.argv[1:] if argv is None else argv)
    # Bound before anything starts, so a busy port is one clear line and exit status 1
    # (uvicorn would first start the app, then log the failure among its own lines).
    try:
        listener = listening_socket(settings.host, settings.port)
    except socket.gaierror as exc:
        bind_failure("aip-gateway", settings.host, settings.port, "AIP_GATEWAY_",
                     f"cannot resolve {settings.host}: {exc.strerror}")
    except OSError as exc:
        bind_failure("aip-gateway", settings.host, settings.port, "AIP_GATEWAY_",
                     bind_error_text(exc))
    configure_logging(settings)
    fd_limit = raise_fd_limit()
    cap = cap_for_fd_limit(settings.max_unregistered, fd_limit)
    if cap != settings.max_unregistered:
        logging.getLogger("aip.gateway").warning(
            "--max-unregistered %d lowered to %d: half of the open-file limit (%s)",
            settings.max_unregistered, cap, fd_limit)
        settings = settings.model_copy(update={"max_unregistered": cap})
    config = uvicorn_config(settings)
    configure_logging(settings)  # uvicorn.Config reset uvicorn's levels
    log_socket_limits(settings)
    server = GatewayServer(config, settings)
    tune_gc()
    tune_malloc()
    tracing.configure(settings.otlp_endpoint, "aip-gateway", settings.gateway_id)
    try:
        server.run(sockets=[listener])
    finally:
        tracing.shutdown()


if __name__ == "__main__":
    main()
