"""Devices as MCP resources: one per device, ``aip://devices/<id>``, its device info.

Resources are what MCP clients list and are told about when the list changes, so the
device list rides on them (:mod:`gateway_service.mcp.changes`); reading one gives what
the device reported about itself, as ``device_info`` does.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from mcp_types import Resource

from gateway_service.console.devices import DeviceView

PREFIX = "aip://devices/"
MIME = "application/json"


def device_uri(device_id: str) -> str:
    return PREFIX + quote(device_id, safe="")


def device_of(uri: str) -> str | None:
    """The device a resource URI names, or ``None`` for any other URI."""
    if not uri.startswith(PREFIX):
        return None
    device_id = unquote(uri.removeprefix(PREFIX))
    return device_id or None


def resource_of(view: DeviceView) -> Resource:
    where = f" via {view.gateway_id}" if view.gateway_id else ""
    return Resource(
        uri=device_uri(view.device_id),
        name=view.device_id,
        title=f"Device {view.device_id}",
        description=f"{view.platform or 'unknown platform'} device{where}: its device info",
        mime_type=MIME,
    )
