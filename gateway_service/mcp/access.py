"""Who may use ``/mcp``, and which devices each caller may see and drive.

Pure rules, no I/O: the endpoint reads the ``Authorization`` header, these functions say
whether it opens ``/mcp`` and with what :class:`Grant`; every tool then asks
:func:`device_allowed` before it names, describes or drives a device. ``/mcp`` takes
either the gateway's API key or a token of an ``mcp`` entry of the tokens file (see
:mod:`gateway_service.auth`); a device's or a constellation's token opens nothing here.
With no credential configured at all the endpoint is open, as the HTTP API is.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from gateway_service.auth import Authenticator

#: The caller's name when the API key opened the endpoint, or nothing needed opening.
API_KEY_CLIENT = "api-key"
OPEN_CLIENT = "anonymous"


@dataclass(frozen=True, slots=True)
class Grant:
    """What one caller may do: its name (for the records) and its devices."""

    client_id: str
    #: The only devices it may reach; ``None``: every device.
    devices: frozenset[str] | None = None


def bearer_token(header: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer <credential>`` header, else ``None``."""
    if header is None:
        return None
    scheme, _, credential = header.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        return None
    return credential


def credentials_required(api_key: str | None, authenticator: Authenticator) -> bool:
    """Whether ``/mcp`` needs a credential: an API key or any token is configured."""
    return bool(api_key) or authenticator.enabled


def grant_for(token: str | None, api_key: str | None,
              authenticator: Authenticator) -> Grant | None:
    """The grant ``token`` opens, or ``None`` when it opens nothing."""
    if not credentials_required(api_key, authenticator):
        return Grant(OPEN_CLIENT)
    if not token:
        return None
    if api_key and hmac.compare_digest(token.encode(), api_key.encode()):
        return Grant(API_KEY_CLIENT)
    entry = authenticator.mcp_entry(token)
    if entry is None:
        return None
    return Grant(entry.client_id, entry.devices)


def device_allowed(grant: Grant, device_id: str) -> bool:
    return grant.devices is None or device_id in grant.devices


def visible(grant: Grant, device_ids: Iterable[str]) -> list[str]:
    """The ids among ``device_ids`` the grant may see, in their order."""
    return [device_id for device_id in device_ids if device_allowed(grant, device_id)]


def requester_id(grant: Grant) -> str:
    """Who the caller's sessions are recorded as having been asked by."""
    return f"mcp:{grant.client_id}"
