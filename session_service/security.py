"""Who may call a replica: optional TLS (mutual, with a client CA) and a shared token.

The token is checked by a server interceptor on every call except the standard health
service, which load balancers and orchestrators probe without credentials. Gateways and
backends send it as ``authorization: Bearer <token>`` call metadata.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health

log = logging.getLogger("aip.session.security")

#: Calls allowed without the token.
OPEN_PREFIXES = (f"/{health.SERVICE_NAME}/",)


def server_credentials(
    cert: Path, key: Path, client_ca: Path | None
) -> grpc.ServerCredentials:
    """TLS with this replica's certificate; with ``client_ca``, clients must present a
    certificate it signed (mutual TLS)."""
    return grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())],
        root_certificates=client_ca.read_bytes() if client_ca is not None else None,
        require_client_auth=client_ca is not None,
    )


def _bearer(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return None


async def _deny_unary(request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")


class TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses calls that do not carry the shared token."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def _valid(self, metadata: Any) -> bool:
        presented = _bearer(metadata)
        return presented is not None and hmac.compare_digest(presented.encode(), self._token)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method or ""
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        if self._valid(handler_call_details.invocation_metadata):
            return handler
        log.warning("refused %s: missing or wrong bearer token", method)
        # The refusal must have the same shape (streaming or not) as the method.
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(_deny_unary)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(_deny_unary)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(_deny_unary)
        return grpc.unary_unary_rpc_method_handler(_deny_unary)
