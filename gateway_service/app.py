"""The gateway's ASGI application: ``/ws``, the HTTP API, ``/metrics`` and the console.

``/ws`` is served straight from the ASGI entry point, past FastAPI's routing and
middleware: those layers stay suspended under every open socket (memory) and are walked
through again each time a frame wakes it up (CPU), while a WebSocket needs none of them.
Everything else (HTTP, lifespan) goes through FastAPI as usual.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway_service import console, log_safety
from gateway_service.auth import Authenticator
from gateway_service.gateway import Gateway
from gateway_service.handlers import FrameRouter
from gateway_service.http_api import api_routes
from gateway_service.http_guard import HttpGuard
from gateway_service.mcp import PATH as MCP_PATH
from gateway_service.mcp import McpEndpoint
from gateway_service.settings import GatewaySettings
from gateway_service.ws_handler import serve_socket


class GatewayApp:
    """The ASGI application: ``/ws`` directly, ``/mcp`` to the MCP endpoint (which
    checks its own bearer credential; the body limit still applies), everything else
    through FastAPI."""

    def __init__(self, api: FastAPI,
                 serve_ws: Callable[[Scope, Receive, Send], Awaitable[None]],
                 settings: GatewaySettings, mcp: McpEndpoint | None = None) -> None:
        self.api = api
        self.state = api.state
        self._http = HttpGuard(api, api_key=settings.api_key,
                               max_body_bytes=settings.max_body_bytes)
        self._mcp = HttpGuard(mcp, api_key=None, max_body_bytes=settings.max_body_bytes) \
            if mcp is not None else None
        self._serve_ws = serve_ws

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == WS_PATH:
            await self._serve_ws(scope, receive, send)
        elif self._mcp is not None and scope["type"] == "http" and scope["path"] == MCP_PATH:
            await self._mcp(scope, receive, send)
        else:
            await self._http(scope, receive, send)


WS_PATH = "/ws"


def create_app(settings: GatewaySettings | None = None) -> GatewayApp:
    settings = settings or GatewaySettings()
    gateway = Gateway(settings)
    frame_router = FrameRouter(gateway)
    auth = Authenticator.from_settings(settings.tokens_file, settings.tokens)
    operator_console = console.Console(gateway)
    mcp = McpEndpoint(gateway, settings, auth) if settings.mcp else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Here, once uvicorn has set up its loggers' handlers: they get the filter too.
        log_safety.install()
        await gateway.start()
        try:
            async with AsyncExitStack() as stack:
                if mcp is not None:
                    # MCP sessions end before the links they call through.
                    await stack.enter_async_context(mcp.running())
                yield
        finally:
            await gateway.stop()

    # /docs comes from the console, with Swagger UI's assets served locally.
    app = FastAPI(title="AIP gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.gateway = gateway
    app.include_router(api_routes)
    console.mount(app, operator_console)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def websocket_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        await serve_socket(scope, receive, send, gateway=gateway, router=frame_router,
                           auth=auth)

    return GatewayApp(app, websocket_endpoint, settings, mcp)
