"""The tools ``/mcp`` offers, as MCP clients see them: names, descriptions, input schemas.

The list is fixed (the devices are arguments, not tools), so a client lists it once and a
device coming or going never changes it; what changes is the device list, announced as
resources (see :mod:`gateway_service.mcp.changes`).
"""

from __future__ import annotations

from typing import Any

from mcp_types import Tool, ToolAnnotations

LIST_DEVICES = "list_devices"
DEVICE_INFO = "device_info"
LIST_DEVICE_TOOLS = "list_device_tools"
CALL_DEVICE_TOOL = "call_device_tool"
RUN_TASK = "run_task"

_DEVICE_ID: dict[str, Any] = {
    "type": "string", "minLength": 1,
    "description": "The device's client_id, as list_devices gives it.",
}


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required,
            "additionalProperties": False}


TOOLS: list[Tool] = [
    Tool(
        name=LIST_DEVICES,
        description="The devices connected to the fleet: id, platform, the gateway it is "
        "connected through, and its running and queued sessions.",
        input_schema=_object({}, []),
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False),
    ),
    Tool(
        name=DEVICE_INFO,
        description="What a device reported about itself (its system info: OS, host "
        "name, screen, ...).",
        input_schema=_object({"device_id": _DEVICE_ID}, ["device_id"]),
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False),
    ),
    Tool(
        name=LIST_DEVICE_TOOLS,
        description="The tools a device offers (asked with the AIP list_tools command), "
        "each with its tool_type and JSON Schema of its arguments. Call them with "
        "call_device_tool.",
        input_schema=_object({"device_id": _DEVICE_ID}, ["device_id"]),
        annotations=ToolAnnotations(read_only_hint=True),
    ),
    Tool(
        name=CALL_DEVICE_TOOL,
        description="Runs one of a device's tools once, as a one-step session: it waits "
        "for the device's running session, is recorded, and times out. Images in the "
        "result (screenshots) come back as images; a failing tool is a tool error.",
        input_schema=_object({
            "device_id": _DEVICE_ID,
            "tool_name": {"type": "string", "minLength": 1,
                          "description": "The tool, as list_device_tools names it."},
            "arguments": {"type": "object", "description": "The tool's arguments."},
            "tool_type": {"type": "string", "enum": ["action", "data_collection"],
                          "description": "As list_device_tools gives it (default action)."},
            "agent_name": {"type": "string", "minLength": 1,
                           "description": "The agent the device routes the command to "
                           "(default: the platform's, LinuxAgent on Linux)."},
        }, ["device_id", "tool_name"]),
        annotations=ToolAnnotations(destructive_hint=True),
    ),
    Tool(
        name=RUN_TASK,
        description="Runs a whole task on a device and returns its result: a JSON plan "
        '({"steps": [[command, ...], ...]} or a list of commands), or a task in plain '
        "words when the session service has a language-model agent. Reports progress "
        "per step.",
        input_schema=_object({
            "device_id": _DEVICE_ID,
            "request": {"description": "The plan (an object or list, or its JSON text), "
                        "or the task in words.",
                        "anyOf": [{"type": "string", "minLength": 1}, {"type": "object"},
                                  {"type": "array"}]},
            "agent": {"type": "string", "enum": ["plan", "llm"],
                      "description": "Which agent runs it (default: chosen by the "
                      "request: a plan runs the plan agent, words the llm agent)."},
        }, ["device_id", "request"]),
        annotations=ToolAnnotations(destructive_hint=True),
    ),
]
