"""What the exchange tests share: checks of the server frames a strict client accepts
(acks, errors, commands, task_end), the client frames they send, and the check that
nothing started a session."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from tests.stack import Client, Stack
from tests.wire import assert_wire_frame

RESULT_STATUSES = {"success", "failure", "skipped", "none"}
TOOL_TYPES = {"action", "data_collection"}
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
SYSTEM_INFO = {"os": "Linux", "cpu_count": 2}


def assert_ack(frame: dict[str, Any], session_id: str | None = None) -> None:
    assert_wire_frame(frame)
    assert frame["type"] == "heartbeat" and frame["status"] == "ok", frame
    assert isinstance(frame["response_id"], str) and frame["response_id"], frame
    if session_id is not None:
        assert frame["session_id"] == session_id, frame


def assert_error(frame: dict[str, Any]) -> None:
    assert_wire_frame(frame)
    assert frame["type"] == "error" and frame["status"] == "error", frame
    assert isinstance(frame["error"], str) and frame["error"], frame


def assert_command(frame: dict[str, Any], session_id: str) -> None:
    assert_wire_frame(frame)
    assert frame["type"] == "command" and frame["status"] == "continue", frame
    assert frame["session_id"] == session_id, frame
    assert isinstance(frame["task_name"], str) and SAFE_NAME.fullmatch(frame["task_name"])
    assert isinstance(frame["response_id"], str) and frame["response_id"], frame
    assert isinstance(frame["actions"], list) and frame["actions"], frame
    for action in frame["actions"]:
        assert set(action) >= {"tool_name", "parameters", "tool_type", "call_id"}, action
        assert isinstance(action["tool_name"], str) and action["tool_name"]
        assert action["parameters"] is None or isinstance(action["parameters"], dict)
        assert action["tool_type"] in TOOL_TYPES, action
        assert isinstance(action["call_id"], str) and action["call_id"], action


def assert_task_end(frame: dict[str, Any], session_id: str, status: str = "completed") -> None:
    assert_wire_frame(frame)
    assert frame["type"] == "task_end", frame
    assert frame["status"] == status, frame
    assert frame["session_id"] == session_id, frame
    assert isinstance(frame["response_id"], str) and frame["response_id"], frame
    if status == "completed":
        assert frame.get("error") is None, frame
    else:
        assert isinstance(frame["error"], str) and frame["error"], frame


def heartbeat(client_id: str, client_type: str = "device") -> dict[str, Any]:
    return {"type": "heartbeat", "status": "ok", "client_type": client_type,
            "client_id": client_id, "timestamp": "2026-01-01T00:00:00+00:00"}


async def heartbeat_acked(client: Client, client_id: str, client_type: str = "device") -> None:
    """The connection is open and answers: the next frame is the heartbeat ack."""
    await client.send(heartbeat(client_id, client_type))
    ack = await client.recv(3)
    assert_ack(ack)
    assert ack.get("session_id") is None, ack


def info_request(client_id: str, target_id: str | None, request_id: str = "q1",
                 client_type: str = "constellation") -> dict[str, Any]:
    return {"type": "device_info_request", "status": "ok", "client_type": client_type,
            "client_id": client_id, "target_id": target_id, "request_id": request_id}


async def no_sessions(stack: Stack) -> None:
    await asyncio.sleep(0.1)  # anything wrongly submitted would be on the link by now
    assert not stack.service.manager.sessions, stack.service.manager.sessions
    assert not stack.gateway.routes, stack.gateway.routes
