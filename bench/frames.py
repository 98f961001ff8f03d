"""The AIP frames the load generators send, shaped as the reference clients send them.

Every field is present (most null) so that the gateway parses frames of the same size
and shape as real traffic.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import orjson

from bench.common import PLAN_COMMAND


def register_frame(client_id: str, client_type: str = "device",
                   target_id: str | None = None) -> bytes:
    """A register frame as the reference clients send it: every field, most null."""
    return orjson.dumps({
        "type": "register", "status": "ok", "client_type": client_type,
        "client_id": client_id, "session_id": None, "task_name": None,
        "target_id": target_id, "request": None, "action_results": None,
        "timestamp": "2026-01-01T00:00:00+00:00", "request_id": None,
        "prev_response_id": None, "error": None,
        "metadata": {"platform": "linux",
                     "system_info": {"os": "Linux", "cpu_count": 2, "memory_gb": 8}},
    })


def heartbeat_frame(client_id: str) -> bytes:
    return orjson.dumps({
        "type": "heartbeat", "status": "ok", "client_type": "device",
        "client_id": client_id, "session_id": None, "task_name": None,
        "target_id": None, "request": None, "action_results": None,
        "timestamp": "2026-01-01T00:00:00+00:00", "request_id": None,
        "prev_response_id": None, "error": None, "metadata": None,
    })


def results_frame(command: dict[str, Any], client_id: str, result: Any = "ok",
                  listed: Any = None) -> bytes:
    """The ``command_results`` a device answers ``command`` with (all successes, each
    action's result ``result``: a screenshot is a base64 string of megabytes; a
    ``list_tools`` action is answered with ``listed`` when given)."""
    return orjson.dumps({
        "type": "command_results",
        "status": command.get("status") or "continue",
        "client_type": "device",
        "client_id": client_id,
        "session_id": command.get("session_id"),
        "task_name": command.get("task_name"),
        "prev_response_id": command.get("response_id"),
        "timestamp": "2026-01-01T00:00:00+00:00",
        "action_results": [
            {"status": "success", "error": None,
             "result": listed if listed is not None and action.get("tool_name") == "list_tools"
             else result,
             "namespace": None, "call_id": action.get("call_id")}
            for action in command.get("actions") or ()
        ],
    })


#: What the echo baselines send: a device's answer to a one-action command, as big as
#: the frames of figure 1.
ECHO_PAYLOAD = results_frame({
    "status": "continue", "session_id": str(uuid.uuid4()), "task_name": "bench-task",
    "response_id": str(uuid.uuid4()), "actions": [{"call_id": uuid.uuid4().hex[:12]}],
}, "bench-dev-0")


def plan_request(steps: int, timeout: float | None = None) -> str:
    plan: dict[str, Any] = {"steps": [[PLAN_COMMAND]] * steps}
    if timeout is not None:
        plan["timeout"] = timeout
    return orjson.dumps(plan).decode()


def screenshot(size: int) -> str:
    """``size`` characters of base64 text, the shape of an inline screenshot."""
    chunk = base64.b64encode(bytes(range(256)) * 3).decode()  # 1,024 characters
    return (chunk * (size // len(chunk) + 1))[:size]


def big_echo_payload(size: int) -> bytes:
    """:data:`ECHO_PAYLOAD` with a ``size``-character result: what figure 7's baseline
    echoes."""
    return results_frame({
        "status": "continue", "session_id": str(uuid.uuid4()), "task_name": "bench-task",
        "response_id": str(uuid.uuid4()), "actions": [{"call_id": uuid.uuid4().hex[:12]}],
    }, "bench-dev-0", screenshot(size))


#: What a reference device lists for ``list_tools``: MCP tool descriptors.
REFERENCE_TOOLS = [
    {"tool_name": name, "namespace": "desktop", "tool_type": "action",
     "description": f"{name} on the desktop",
     "input_schema": {"type": "object", "properties": {
         "x": {"type": "integer"}, "y": {"type": "integer"}}, "required": []}}
    for name in ("screenshot", "click", "type_text", "scroll", "open_app", "hotkey")
]


def reference_request(commands: int) -> str:
    """A session shaped as the reference server's agent runs one: ``list_tools`` for
    ``action`` and ``data_collection`` tools, then ``commands`` steps of one command each
    (every one answered with a screenshot)."""
    listing = [{"tool_name": "list_tools", "parameters": {"tool_type": kind},
                "tool_type": "action"} for kind in ("action", "data_collection")]
    step = {"tool_name": "click", "parameters": {"x": 10, "y": 20}, "tool_type": "action"}
    return orjson.dumps({"steps": [listing] + [[step]] * commands}).decode()
