"""The gateway's ASGI application: ``/ws``, the HTTP API and ``/metrics``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, WebSocket
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from gateway_service.auth import Authenticator
from gateway_service.gateway import Gateway
from gateway_service.handlers import FrameRouter
from gateway_service.http_api import router as api_router
from gateway_service.settings import GatewaySettings
from gateway_service.ws_handler import serve_socket


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    gateway = Gateway(settings)
    frame_router = FrameRouter(gateway)
    auth = Authenticator.from_settings(settings.tokens_file, settings.tokens)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(title="AIP gateway", lifespan=lifespan)
    app.state.gateway = gateway
    app.include_router(api_router)

    @app.websocket("/ws")
    async def websocket_endpoint(websocket: WebSocket) -> None:
        await serve_socket(websocket, gateway, frame_router, auth)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
