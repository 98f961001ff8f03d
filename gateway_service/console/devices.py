"""The devices table: the replicas' device list joined with this gateway's registry.

The replicas know every device on every gateway (``ListDevices``, with running session
counts over all replicas); only the gateway that holds a device's socket knows when it
connected and when it was last heard from, so those two columns are filled for this
gateway's own devices alone. A device registered here that the replicas have not heard
of yet (its presence is on its way) is listed from the registry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aip_grpc import session_api_pb2 as pb
from gateway_service.registry import Connection


def _wall(monotonic_stamp: float) -> float:
    return time.time() - (time.monotonic() - monotonic_stamp)


@dataclass(frozen=True, slots=True)
class DeviceView:
    device_id: str
    platform: str
    gateway_id: str
    #: Wall-clock seconds; ``None`` for a device on another gateway.
    connected_since: float | None
    last_heartbeat: float | None
    running: int
    queued: int


def queued_of(device: pb.Device) -> int:
    return int(getattr(device, "queued_sessions", 0) or 0)


def running_of(device: pb.Device) -> int:
    """Sessions running on the device. Replicas that queue count queued ones in
    ``active_sessions`` too and report ``running_sessions`` apart; older replicas (and
    an older build of the proto) have ``active_sessions`` only, all of them running."""
    running = int(getattr(device, "running_sessions", 0) or 0)
    return max(running, device.active_sessions - queued_of(device))


def device_views(
    remote: list[pb.Device] | None,
    connections: list[Connection],
    gateway_id: str,
) -> list[DeviceView]:
    """Every device, sorted by id. ``remote`` is ``None`` when no replica answered:
    then only this gateway's devices are known."""
    own = {conn.client_id: conn for conn in connections if conn.is_device}
    rows: dict[str, DeviceView] = {}
    for device in remote or []:
        conn = own.get(device.device_id)
        here = conn is not None and device.gateway_id in ("", gateway_id)
        rows[device.device_id] = DeviceView(
            device_id=device.device_id,
            platform=device.platform or (conn.platform if conn is not None else ""),
            gateway_id=device.gateway_id,
            connected_since=conn.connected_at if here and conn is not None else None,
            last_heartbeat=_wall(conn.last_seen) if here and conn is not None else None,
            running=running_of(device),
            queued=queued_of(device),
        )
    for device_id, conn in own.items():
        if device_id not in rows:
            rows[device_id] = DeviceView(
                device_id=device_id,
                platform=conn.platform,
                gateway_id=gateway_id,
                connected_since=conn.connected_at,
                last_heartbeat=_wall(conn.last_seen),
                running=len(conn.sessions),
                queued=0,
            )
    return [rows[key] for key in sorted(rows)]
