"""A tool call's arguments, checked and turned into what the session API is asked.

The SDK hands the handler whatever JSON the client sent; these functions check it
against the tool's schema (:mod:`gateway_service.mcp.catalog`) and build the session
request: a device tool call is a one-step plan of the plan agent (``{"steps":
[{"actions": [command], ...}]}``), the same form ``StartSession`` takes from any
backend, so it is queued, recorded and timed out like any session. Anything wrong is an
:class:`ArgumentError`, answered as a tool error naming the argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway_service.mcp import catalog

TOOL_TYPES = ("action", "data_collection")
AGENTS = ("plan", "llm")


class ArgumentError(ValueError):
    """The arguments do not fit the tool's schema; the message says which and why."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    device_id: str
    tool_name: str
    arguments: dict[str, Any]
    tool_type: str = "action"
    agent_name: str | None = None


@dataclass(frozen=True, slots=True)
class Task:
    device_id: str
    #: The request as ``StartSession`` takes it: text (a plan's JSON, or words).
    request: str
    agent: str = ""


_ALLOWED = {
    catalog.LIST_DEVICES: frozenset(),
    catalog.DEVICE_INFO: frozenset({"device_id"}),
    catalog.LIST_DEVICE_TOOLS: frozenset({"device_id"}),
    catalog.CALL_DEVICE_TOOL: frozenset(
        {"device_id", "tool_name", "arguments", "tool_type", "agent_name"}),
    catalog.RUN_TASK: frozenset({"device_id", "request", "agent"}),
}


def check_names(tool: str, arguments: dict[str, Any] | None) -> dict[str, Any]:
    """The arguments, refused when one is not the tool's. :raises ArgumentError:"""
    given = dict(arguments or {})
    allowed = _ALLOWED.get(tool)
    if allowed is None:
        raise ArgumentError(f"Unknown tool '{tool}'")
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ArgumentError(f"Unknown argument(s) for {tool}: {', '.join(unknown)}")
    return given


def _text(arguments: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = arguments.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ArgumentError(f"'{name}' must be a non-empty string")
    return value


def device_id(tool: str, arguments: dict[str, Any] | None) -> str:
    """The ``device_id`` of a tool that takes only that."""
    given = check_names(tool, arguments)
    value = _text(given, "device_id")
    assert value is not None
    return value


def tool_call(arguments: dict[str, Any] | None) -> ToolCall:
    given = check_names(catalog.CALL_DEVICE_TOOL, arguments)
    device = _text(given, "device_id")
    name = _text(given, "tool_name")
    assert device is not None and name is not None
    tool_arguments = given.get("arguments")
    if tool_arguments is None:
        tool_arguments = {}
    if not isinstance(tool_arguments, dict):
        raise ArgumentError("'arguments' must be an object")
    tool_type = given.get("tool_type") or "action"
    if tool_type not in TOOL_TYPES:
        raise ArgumentError("'tool_type' must be 'action' or 'data_collection'")
    return ToolCall(device, name, tool_arguments, tool_type,
                    _text(given, "agent_name", required=False))


def task(arguments: dict[str, Any] | None) -> Task:
    given = check_names(catalog.RUN_TASK, arguments)
    device = _text(given, "device_id")
    assert device is not None
    request = given.get("request")
    if isinstance(request, dict | list):
        text = orjson.dumps(request).decode()
    elif isinstance(request, str) and request.strip():
        text = request
    else:
        raise ArgumentError("'request' must be a plan (object or list) or non-empty text")
    agent = given.get("agent") or ""
    if agent and agent not in AGENTS:
        raise ArgumentError("'agent' must be 'plan' or 'llm'")
    return Task(device, text, agent)


def one_step_plan(call: ToolCall) -> str:
    """The plan that runs ``call`` as one command, as ``StartSession`` request text."""
    step: dict[str, Any] = {"actions": [{
        "tool_name": call.tool_name,
        "parameters": call.arguments,
        "tool_type": call.tool_type,
    }]}
    if call.agent_name is not None:
        step["agent_name"] = call.agent_name
    return orjson.dumps({"steps": [step]}).decode()


def list_tools_plan() -> str:
    """One step asking the device for its tools of both types, as the llm agent does."""
    actions = [{"tool_name": "list_tools", "parameters": {"tool_type": kind},
                "tool_type": "action"} for kind in TOOL_TYPES]
    return orjson.dumps({"steps": [{"actions": actions}]}).decode()
