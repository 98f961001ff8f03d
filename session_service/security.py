"""Who may call a replica: optional TLS (mutual, with a client CA) and two credentials.

* The **link token** (``--link-token`` / ``--link-token-file``) guards the gateway link,
  ``aip.v1.GatewayLink``: whoever opens it may announce devices and receives their
  commands, so only gateways hold it.
* The **API token** (``--auth-token``) guards everything else a replica serves (the
  public ``aip.v1.SessionApi`` and reflection): backends, and gateways for their
  device lookups, hold it.

Neither opens the other's service, and a replica refuses to start with the two set to
the same value. The standard health service stays open: load balancers and
orchestrators probe it without credentials. Both tokens travel as
``authorization: Bearer <token>`` call metadata and are compared in constant time.

A replica that listens beyond loopback without a link token refuses to start unless
``--insecure-link`` says it is meant (it then warns at start).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health

from aip_grpc import link_pb2

log = logging.getLogger("aip.session.security")

#: Calls allowed without any token.
OPEN_PREFIXES = (f"/{health.SERVICE_NAME}/",)
#: Calls that need the link token (and never accept the API token).
LINK_PREFIX = f"/{link_pb2.DESCRIPTOR.services_by_name['GatewayLink'].full_name}/"


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


def peer_credentials(cert: Path, key: Path, peer_ca: Path | None) -> grpc.ChannelCredentials:
    """TLS to the other replicas, for calls forwarded to a session's owner: presenting
    this replica's own certificate (for mutual TLS) and trusting ``peer_ca`` (default:
    the system's roots)."""
    return grpc.ssl_channel_credentials(
        root_certificates=peer_ca.read_bytes() if peer_ca is not None else None,
        private_key=key.read_bytes(), certificate_chain=cert.read_bytes())


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` keeps the port on this machine."""
    host = host.strip().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name, or "" (every interface): assume reachable


def link_exposure(host: str, link_token: str | None, insecure_link: bool) -> str | None:
    """Why a replica must not start this way (one line), ``None`` if it may."""
    if link_token is None and not insecure_link and not is_loopback(host):
        return (f"refusing to listen on {host!r} with the gateway link open to anyone: "
                "set --link-token (or --link-token-file, AIP_SESSION_LINK_TOKEN), or "
                "pass --insecure-link to accept that")
    return None


def _bearer(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return None


def _matches(presented: str | None, expected: bytes) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), expected)


async def _deny(request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")


def _refusal(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    # The refusal must have the same shape (streaming or not) as the method.
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(_deny)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(_deny)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(_deny)
    return grpc.unary_unary_rpc_method_handler(_deny)


class TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses link calls without the link token and other calls without the API token;
    a service whose token is not configured is open."""

    def __init__(self, token: str | None, link_token: str | None = None) -> None:
        self._token = token.encode() if token else None
        self._link_token = link_token.encode() if link_token else None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method or ""
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        expected = self._link_token if method.startswith(LINK_PREFIX) else self._token
        if expected is None or _matches(_bearer(handler_call_details.invocation_metadata),
                                        expected):
            return handler
        log.warning("refused %s: missing or wrong %s token", method,
                    "link" if expected is self._link_token else "API")
        return _refusal(handler)
