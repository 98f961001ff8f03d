"""AIP frames on the client side, without I/O (see ``docs/aip-wire.md``).

Input: :func:`parse_server_frame` reads one server message leniently (any case for
enumerated values, unknown fields ignored, bytes holding UTF-8 JSON accepted) but
validates strictly: a frame whose ``type`` or ``status`` is outside the sets of the wire
spec is dropped (``None``), as the reference clients do.

Output: the ``*_frame`` builders return dicts that carry every client field, most of them
``null``, exactly as the reference clients send them; :func:`encode` makes the text of
one WebSocket message.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aip_wire.vocab import (
    SERVER_MESSAGE_TYPES,
    ClientType,
    MessageType,
    ResultStatus,
    Status,
    ToolType,
)

#: Every field a client frame carries (the reference clients send them all, mostly null).
CLIENT_FIELDS = (
    "type",
    "status",
    "client_type",
    "client_id",
    "session_id",
    "task_name",
    "target_id",
    "request",
    "action_results",
    "timestamp",
    "request_id",
    "prev_response_id",
    "error",
    "metadata",
)


def now_iso() -> str:
    """The current time as ISO 8601 with a UTC offset."""
    return datetime.now(UTC).isoformat()


def new_id() -> str:
    return str(uuid.uuid4())


def encode(frame: dict[str, Any]) -> str:
    """The text of one WebSocket message; values JSON cannot hold become strings."""
    return json.dumps(frame, separators=(",", ":"), default=str)


def with_token(url: str, token: str | None) -> str:
    """``url`` with ``?token=`` set, as reference servers authenticate clients."""
    if not token:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
    query.append(("token", token))
    return urlunsplit(parts._replace(query=urlencode(query)))


# ---------------------------------------------------------------------------- input


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def parse_server_frame(data: str | bytes) -> dict[str, Any] | None:
    """One server message as a dict, or ``None`` when a strict client must drop it.

    ``type`` and ``status`` are lowercased and must be server message types and statuses
    (:mod:`aip_wire.vocab`). A ``command`` must carry a list of ``actions``; each action is
    normalised (``parameters`` defaults to ``{}``, ``tool_type`` to ``action``,
    ``call_id`` to ``None``) and one without a string ``tool_name`` drops the frame.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        frame = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(frame, dict):
        return None
    frame["type"] = _lower(frame.get("type"))
    frame["status"] = _lower(frame.get("status"))
    if frame["type"] not in SERVER_MESSAGE_TYPES or frame["status"] not in frozenset(Status):
        return None
    error = frame.get("error")
    if error is not None and not isinstance(error, str):
        frame["error"] = encode(error)
    for name in ("session_id", "task_name", "response_id", "agent_name"):
        value = frame.get(name)
        if value is not None and not isinstance(value, str):
            return None
    if frame["type"] == MessageType.COMMAND:
        actions = frame.get("actions")
        if actions is None:
            actions = []
        if not isinstance(actions, list):
            return None
        parsed = [_action(item) for item in actions]
        if any(item is None for item in parsed):
            return None
        frame["actions"] = parsed
    return frame


def _action(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    tool_name = value.get("tool_name")
    if not isinstance(tool_name, str) or not tool_name:
        return None
    parameters = value.get("parameters")
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        return None
    tool_type = _lower(value.get("tool_type")) or ToolType.ACTION
    if tool_type not in frozenset(ToolType):
        return None
    call_id = value.get("call_id")
    return {
        **value,
        "tool_name": tool_name,
        "parameters": parameters,
        "tool_type": tool_type,
        "call_id": None if call_id is None else str(call_id),
    }


# ---------------------------------------------------------------------------- output


def client_frame(frame_type: str, **fields: Any) -> dict[str, Any]:
    """A client frame carrying every field; ``status`` defaults to ``ok``."""
    frame: dict[str, Any] = dict.fromkeys(CLIENT_FIELDS)
    frame.update(type=frame_type, status=Status.OK, client_type=ClientType.DEVICE,
                 timestamp=now_iso())
    frame.update(fields)
    return frame


def register_frame(client_id: str, client_type: str, metadata: dict[str, Any],
                   target_id: str | None = None) -> dict[str, Any]:
    return client_frame(MessageType.REGISTER, client_type=client_type, client_id=client_id,
                        target_id=target_id, metadata=metadata)


def heartbeat_frame(client_id: str, client_type: str = ClientType.DEVICE) -> dict[str, Any]:
    return client_frame(MessageType.HEARTBEAT, client_type=client_type, client_id=client_id)


def task_frame(client_id: str, request: str, *, task_name: str, session_id: str,
               client_type: str = ClientType.DEVICE,
               target_id: str | None = None) -> dict[str, Any]:
    return client_frame(MessageType.TASK, status=Status.CONTINUE, client_type=client_type,
                        client_id=client_id, target_id=target_id, request=request,
                        task_name=task_name, session_id=session_id)


def action_result(call_id: str | None, status: str, *, result: Any = None,
                  error: str | None = None) -> dict[str, Any]:
    """One entry of ``action_results``."""
    assert status in frozenset(ResultStatus), status
    return {"status": status, "error": error, "result": result, "namespace": None,
            "call_id": call_id}


def command_results_frame(client_id: str, command: dict[str, Any],
                          results: list[dict[str, Any]]) -> dict[str, Any]:
    """The answer to ``command``: its ``response_id`` as ``prev_response_id``, its status."""
    return client_frame(
        MessageType.COMMAND_RESULTS,
        status=command.get("status") or Status.CONTINUE,
        client_id=client_id,
        session_id=command.get("session_id"),
        task_name=command.get("task_name"),
        prev_response_id=command.get("response_id"),
        action_results=results,
    )


def device_info_request_frame(client_id: str, target_id: str,
                              request_id: str) -> dict[str, Any]:
    return client_frame(MessageType.DEVICE_INFO_REQUEST, client_type=ClientType.CONSTELLATION,
                        client_id=client_id,
                        target_id=target_id, request_id=request_id)


def device_info_push_frame(client_id: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """A device pushing fresh info: a ``device_info_response`` carrying ``metadata``."""
    return client_frame(MessageType.DEVICE_INFO_RESPONSE, client_id=client_id, metadata=metadata)


def error_report_frame(client_id: str, error: str, client_type: str = ClientType.DEVICE,
                       session_id: str | None = None) -> dict[str, Any]:
    return client_frame(MessageType.ERROR, status=Status.ERROR, client_type=client_type,
                        client_id=client_id, error=error, session_id=session_id)
