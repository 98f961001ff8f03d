"""The gateway's AIP rules as pure functions: frames and facts in, decisions out.

Nothing here touches a socket or the link, so every rule is unit-tested and fuzzed
directly. The adapters in :mod:`gateway_service.ws_handler` and
:mod:`gateway_service.gateway` apply the decisions.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aip_wire.frames import ClientFrame
from aip_wire.names import sanitize_task_name
from aip_wire.vocab import ClientType, MessageType

# Close codes for refused registrations (application range 4000-4999).
CLOSE_BAD_REGISTRATION = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_TARGET_NOT_CONNECTED = 4404
CLOSE_REGISTRATION_TIMEOUT = 4408
CLOSE_DUPLICATE = 4409
CLOSE_REPLACED = 4000  # the old socket of a client_id that reconnected
CLOSE_TOO_SLOW = 4429  # the client stopped reading and its outbox overflowed
CLOSE_SILENT = 4408  # no frame at all for longer than the silence limit
CLOSE_SERVICE_RESTART = 1012  # draining on shutdown: reconnect


class Refusal(Exception):
    """A registration that must be refused: error frame, then close with ``code``."""

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True, slots=True)
class Registration:
    client_id: str
    client_type: ClientType
    platform: str
    target_id: str | None
    device_info: dict[str, Any]


#: Metadata keys that are credentials, never part of the device info others may read.
SECRET_METADATA = frozenset({"auth_token"})


def device_info_of(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """What a device's info is: ``metadata.system_info``, else the whole metadata
    (without credentials)."""
    if not metadata:
        return {}
    system_info = metadata.get("system_info")
    if isinstance(system_info, dict):
        return system_info
    return {key: value for key, value in metadata.items() if key not in SECRET_METADATA}


def check_registration(
    frame: ClientFrame, is_device_connected: Callable[[str], bool]
) -> Registration:
    """Validate a socket's first frame.

    :raises Refusal: with the reason the client is told and the close code.
    """
    if frame.type != MessageType.REGISTER:
        raise Refusal("First message must be a registration message", CLOSE_BAD_REGISTRATION)
    client_id = frame.client_id
    if client_id is None or not client_id.strip():
        raise Refusal("Client ID is required for WebSocket registration", CLOSE_BAD_REGISTRATION)
    named = frame.client_type or ClientType.DEVICE
    if named not in frozenset(ClientType):
        raise Refusal(
            f"Unknown client_type '{frame.client_type}': expected 'device' or 'constellation'",
            CLOSE_BAD_REGISTRATION,
        )
    kind = ClientType(named)
    metadata = frame.metadata or {}
    platform = metadata.get("platform")
    target_id = frame.target_id or None
    if kind == ClientType.CONSTELLATION and target_id is not None:
        if not is_device_connected(target_id):
            raise Refusal(
                f"Target device '{target_id}' is not connected", CLOSE_TARGET_NOT_CONNECTED
            )
    return Registration(
        client_id=client_id,
        client_type=kind,
        platform=platform if isinstance(platform, str) and platform else "windows",
        target_id=target_id if kind == ClientType.CONSTELLATION else None,
        device_info=device_info_of(metadata) if kind == ClientType.DEVICE else {},
    )


def pin_identity(frame: ClientFrame, client_id: str, kind: str) -> str | None:
    """Bind a post-registration frame to its socket's identity.

    Overwrites ``client_id``/``client_type`` with the bound ones and returns ``None``, or
    returns why the frame is refused because it tries to act as someone else. Heartbeats
    are never refused: the reference constellation client labels its heartbeats
    ``client_type: device``.
    """
    if frame.type != MessageType.HEARTBEAT:
        if frame.client_id is not None and frame.client_id != client_id:
            return (
                f"client_id '{frame.client_id}' does not match this connection's "
                f"registered identity '{client_id}'"
            )
        if frame.client_type is not None and frame.client_type != kind:
            return (
                f"client_type '{frame.client_type}' does not match this connection's "
                f"registered type '{kind}'"
            )
    # Assigning a pydantic field runs its setattr machinery: skip it when already equal.
    if frame.client_id != client_id:
        frame.client_id = client_id
    if frame.client_type != kind:
        frame.client_type = kind
    return None


@dataclass(frozen=True, slots=True)
class TaskPlan:
    """A validated task: what to submit to the session service."""

    session_id: str
    task_name: str
    request: str
    device_id: str


def plan_task(
    frame: ClientFrame,
    client_id: str,
    kind: str,
    is_device_connected: Callable[[str], bool],
) -> TaskPlan:
    """Validate a ``task`` frame from ``client_id``.

    :raises ValueError: with the reason sent back in an error frame.
    """
    if frame.request is None or not frame.request.strip():
        raise ValueError("Task request cannot be empty")
    if kind == ClientType.CONSTELLATION:
        if not frame.target_id:
            raise ValueError("Constellation must specify target_id")
        if not is_device_connected(frame.target_id):
            raise ValueError(f"Target device '{frame.target_id}' not connected")
        device_id = frame.target_id
    else:
        if frame.target_id and frame.target_id != client_id:
            raise ValueError(
                f"A device may only run tasks on itself; target_id '{frame.target_id}' "
                "names another client"
            )
        device_id = client_id
    session_id = frame.session_id if frame.session_id else str(uuid.uuid4())
    return TaskPlan(
        session_id=session_id,
        task_name=sanitize_task_name(frame.task_name),
        request=frame.request,
        device_id=device_id,
    )


def device_info_scope(
    frame: ClientFrame, kind: str, registered_target: str | None
) -> tuple[str | None, str | None]:
    """Which device a ``device_info_request`` may read.

    Returns ``(device_id, None)`` when allowed, or ``(None, reason)`` when refused.
    """
    if kind != ClientType.CONSTELLATION:
        return None, "Only constellation clients may request device info"
    wanted = frame.target_id or registered_target
    if not wanted:
        return None, "device_info_request needs a target_id"
    if registered_target is not None and wanted != registered_target:
        return None, (
            f"This constellation registered for device '{registered_target}' and may not "
            f"read device '{wanted}'"
        )
    return wanted, None
