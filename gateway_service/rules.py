"""The gateway's AIP rules as pure functions: frames and facts in, decisions out.

Nothing here touches a socket, the link or any I/O, so every rule is unit-tested and
fuzzed directly. A rule that needs a fact only I/O can give (is that device connected?)
is split in two: the first part says whether the fact is needed, the adapter looks it up
and hands it to the second. Rules refuse with one type, :class:`Refusal`, whose code is
the project's vocabulary; no rule chooses a close code or an HTTP status.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aip_wire.frames import ClientFrame
from aip_wire.names import new_task_name, sanitize_task_name, task_name_problem
from aip_wire.vocab import ClientType, MessageType, RejectionCode, RequesterKind


class RefusalCode(StrEnum):
    """Why a socket's registration is refused. Task refusals use
    :class:`~aip_wire.vocab.RejectionCode`; the values of the two never overlap."""

    BAD_REGISTRATION = "bad_registration"
    UNAUTHORIZED = "unauthorized"
    TARGET_NOT_CONNECTED = "target_not_connected"
    REGISTRATION_TIMEOUT = "registration_timeout"
    DUPLICATE = "duplicate"
    RESTARTING = "restarting"  # the gateway drains: reconnect


class Refusal(ValueError):
    """Something a client asked for that the gateway refuses; ``reason`` is told to it.

    The one error type of the rules and of the session table. ``code`` says why, in the
    project's vocabulary; each adapter maps it to its own protocol (a close code in
    :mod:`gateway_service.ws_handler`, an HTTP status in :mod:`gateway_service.http_api`).
    It is a :class:`ValueError` because it is one: the request's values are refused.
    """

    def __init__(self, code: RefusalCode | RejectionCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


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


def check_registration(frame: ClientFrame) -> Registration:
    """Validate a socket's first frame.

    A constellation's ``target_id`` is kept unchecked: whether it is connected is an I/O
    question the adapter asks next, then answers with :func:`check_target`.

    :raises Refusal: with the reason the client is told.
    """
    if frame.type != MessageType.REGISTER:
        raise Refusal(RefusalCode.BAD_REGISTRATION,
                      "First message must be a registration message")
    client_id = frame.client_id
    if client_id is None or not client_id.strip():
        raise Refusal(RefusalCode.BAD_REGISTRATION,
                      "Client ID is required for WebSocket registration")
    named = frame.client_type or ClientType.DEVICE
    if named not in frozenset(ClientType):
        raise Refusal(
            RefusalCode.BAD_REGISTRATION,
            f"Unknown client_type '{frame.client_type}': expected 'device' or 'constellation'",
        )
    client_type = ClientType(named)
    metadata = frame.metadata or {}
    platform = metadata.get("platform")
    target_id = frame.target_id or None
    return Registration(
        client_id=client_id,
        client_type=client_type,
        platform=platform if isinstance(platform, str) and platform else "windows",
        target_id=target_id if client_type == ClientType.CONSTELLATION else None,
        device_info=device_info_of(metadata) if client_type == ClientType.DEVICE else {},
    )


def check_target(registration: Registration, connected: bool) -> Registration:
    """Refuse a constellation whose target device is not ``connected``.

    :raises Refusal: the target is not connected.
    """
    if registration.target_id is not None and not connected:
        raise Refusal(RefusalCode.TARGET_NOT_CONNECTED,
                      f"Target device '{registration.target_id}' is not connected")
    return registration


def pin_identity(frame: ClientFrame, client_id: str, client_type: str) -> str | None:
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
        if frame.client_type is not None and frame.client_type != client_type:
            return (
                f"client_type '{frame.client_type}' does not match this connection's "
                f"registered type '{client_type}'"
            )
    # Assigning a pydantic field runs its setattr machinery: skip it when already equal.
    if frame.client_id != client_id:
        frame.client_id = client_id
    if frame.client_type != client_type:
        frame.client_type = client_type
    return None


@dataclass(frozen=True, slots=True)
class TaskPlan:
    """A validated task: what to submit to the session service.

    ``check_device`` is set when the device is someone else than the requester, whose
    being connected the adapter must look up and hand to :func:`check_device`.
    """

    session_id: str
    task_name: str
    request: str
    device_id: str
    check_device: bool = False
    #: Asked by the HTTP API only: the agent ("" lets the replica choose) and model.
    agent: str = ""
    model: str = ""


class TaskAsk:
    """What a ``task`` is asked with, whatever path it came by (a ``ClientFrame`` has
    these attributes too)."""

    __slots__ = ("request", "session_id", "target_id", "task_name")

    def __init__(self, request: str | None, task_name: str | None, session_id: str | None,
                 target_id: str | None) -> None:
        self.request = request
        self.task_name = task_name
        self.session_id = session_id
        self.target_id = target_id


@dataclass(frozen=True, slots=True)
class TaskDialect:
    """How one path words and treats what the other repairs or words differently.

    The WebSocket path repairs bad task names (real clients send ``galaxy/x/t-1``) and
    makes up a session id for an empty one; the HTTP API refuses both.
    """

    strict: bool
    empty_request: str
    not_connected: str  # formatted with the device id


WS_TASKS = TaskDialect(False, "Task request cannot be empty", "Target device '{}' not connected")
HTTP_TASKS = TaskDialect(True, "request must not be empty", "Client '{}' is not online")


def plan_task(
    ask: ClientFrame | TaskAsk,
    requester_id: str,
    requester_kind: str,
    dialect: TaskDialect = WS_TASKS,
) -> TaskPlan:
    """Validate a task from ``requester_id`` and pick the device it runs on.

    The one validation of a task, for the WebSocket and the HTTP paths alike.

    :raises Refusal: with the reason sent back to the requester.
    """
    if dialect.strict and ask.task_name is not None:
        problem = task_name_problem(ask.task_name)
        if problem is not None:
            raise Refusal(RejectionCode.INVALID, f"Invalid task_name: {problem}")
    if ask.request is None or not ask.request.strip():
        raise Refusal(RejectionCode.INVALID, dialect.empty_request)
    if dialect.strict and ask.session_id is not None and not ask.session_id:
        raise Refusal(RejectionCode.INVALID, "session_id must not be empty")
    if requester_kind == RequesterKind.DEVICE:
        if ask.target_id and ask.target_id != requester_id:
            raise Refusal(
                RejectionCode.INVALID,
                f"A device may only run tasks on itself; target_id '{ask.target_id}' "
                "names another client",
            )
        device_id, check = requester_id, False
    else:
        if not ask.target_id:
            raise Refusal(RejectionCode.INVALID, "Constellation must specify target_id")
        device_id, check = ask.target_id, True
    if dialect.strict:
        task_name = ask.task_name or new_task_name()
    else:
        task_name = sanitize_task_name(ask.task_name)
    return TaskPlan(
        session_id=ask.session_id if ask.session_id else str(uuid.uuid4()),
        task_name=task_name,
        request=ask.request,
        device_id=device_id,
        check_device=check,
    )


def check_device(plan: TaskPlan, connected: bool,
                 dialect: TaskDialect = WS_TASKS) -> TaskPlan:
    """Refuse a plan whose device, someone else than the requester, is not ``connected``.

    :raises Refusal: the device is not connected.
    """
    if plan.check_device and not connected:
        raise Refusal(RejectionCode.NOT_FOUND, dialect.not_connected.format(plan.device_id))
    return plan


def device_info_scope(
    frame: ClientFrame, client_type: str, registered_target: str | None
) -> tuple[str | None, str | None]:
    """Which device a ``device_info_request`` may read.

    Returns ``(device_id, None)`` when allowed, or ``(None, reason)`` when refused: the
    refusal is an answer frame, not an error, so it is a value here.
    """
    if client_type != ClientType.CONSTELLATION:
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
