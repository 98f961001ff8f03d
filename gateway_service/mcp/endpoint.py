"""``/mcp``: the SDK's Streamable HTTP transport behind the gateway's own credential check.

Before the SDK sees a request, the caller must present ``Authorization: Bearer`` with
the API key or an ``mcp`` token (:mod:`gateway_service.mcp.access`) whenever either is
configured; without one the answer is 401 with ``WWW-Authenticate: Bearer`` and a JSON
error, and nothing of the request is read. The caller's grant then travels in the ASGI
scope to the handlers, and as the scope's ``user``, by which the SDK binds each MCP
session to the credential that opened it (another credential gets 404 for it). The SDK
checks Host and Origin against DNS rebinding: loopback ones, plus those of
``--mcp-allowed-hosts`` and ``--mcp-allowed-origins``.

The session manager runs in the gateway's lifespan (:meth:`McpEndpoint.running`), on its
event loop; the MCP sessions' tasks live in the manager's task group.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import Receive, Scope, Send

from gateway_service.auth import Authenticator
from gateway_service.gateway import Gateway
from gateway_service.mcp.access import bearer_token, credentials_required, grant_for
from gateway_service.mcp.changes import DeviceChanges
from gateway_service.mcp.fleet import Fleet
from gateway_service.mcp.server import GRANT_KEY, build_server
from gateway_service.settings import GatewaySettings

PATH = "/mcp"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def security_settings(extra_hosts: str, extra_origins: str) -> TransportSecuritySettings:
    """Host and Origin values ``/mcp`` accepts: loopback ones on any port, and the
    configured ones. A request without Origin (not from a browser) passes the check."""
    hosts = [pattern for host in LOOPBACK_HOSTS for pattern in (host, f"{host}:*")]
    origins = [f"{scheme}://{host}:*" for scheme in ("http", "https")
               for host in LOOPBACK_HOSTS]
    origins += [f"{scheme}://{host}" for scheme in ("http", "https")
                for host in LOOPBACK_HOSTS]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts + split_list(extra_hosts),
        allowed_origins=origins + [origin.rstrip("/") for origin in split_list(extra_origins)],
    )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _unauthorized(send: Send, detail: str) -> None:
    body = json.dumps({"error": "unauthorized", "detail": detail}).encode()
    await send({
        "type": "http.response.start",
        "status": 401,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b'Bearer realm="aip-mcp"'),
        ],
    })
    await send({"type": "http.response.body", "body": body})


def _package_version() -> str:
    try:
        return version("aip-control-plane")
    except PackageNotFoundError:
        return ""


class McpEndpoint:
    """The ASGI application of ``/mcp``, and the lifespan it needs."""

    def __init__(self, gateway: Gateway, settings: GatewaySettings,
                 authenticator: Authenticator) -> None:
        self.api_key = settings.api_key
        self.authenticator = authenticator
        self.fleet = Fleet(gateway)
        self.changes = DeviceChanges(self.fleet.device_ids, settings.mcp_watch_interval)
        self.server = build_server(self.fleet, self.changes, _package_version())
        self.manager = StreamableHTTPSessionManager(
            app=self.server,
            security_settings=security_settings(settings.mcp_allowed_hosts,
                                                settings.mcp_allowed_origins),
            max_request_body_size=settings.max_body_bytes,
            max_sessions=settings.mcp_max_sessions,
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The session manager's run, for the gateway's lifespan."""
        async with self.manager.run():
            try:
                yield
            finally:
                await self.changes.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = bearer_token(_header(scope, b"authorization"))
        grant = grant_for(token, self.api_key, self.authenticator)
        if grant is None:
            await _unauthorized(send, "Authorization: Bearer <API key or mcp token> required"
                                if token is None else "Invalid credentials")
            return
        scope = {**scope, GRANT_KEY: grant}
        if credentials_required(self.api_key, self.authenticator):
            scope["user"] = AuthenticatedUser(
                AccessToken(token="", client_id=grant.client_id, scopes=[]))
        await self.manager.handle_request(scope, receive, send)
