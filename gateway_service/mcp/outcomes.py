"""How an ended session answers the MCP tool that started it.

:class:`Ended` is a session's end in plain values (the session API's final
``SessionInfo``, its result decoded); the functions here read it for each tool: the one
result of a device tool call, the tool list of a ``list_tools`` step, or a whole task's
result. A session that did not complete is a tool error with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mcp_types import CallToolResult

from gateway_service.mcp import content

COMPLETED = "completed"


@dataclass(frozen=True, slots=True)
class Ended:
    session_id: str
    #: ``completed``, ``failed``, ``cancelled`` (or ``unknown``).
    state: str
    #: The session's result, decoded (the plan agent's: a list of step results).
    result: Any
    error: str = ""
    cancel_reason: str = ""


def why_not(ended: Ended) -> str:
    """Why the session did not complete, in one sentence."""
    if ended.error:
        return ended.error
    if ended.state == "cancelled":
        return f"The session was cancelled ({ended.cancel_reason or 'requested'})."
    return f"The session ended {ended.state}."


def first_step(result: Any) -> list[Any] | None:
    """The first step's results of a plan agent's result (a list of lists), if any."""
    if isinstance(result, list) and result and isinstance(result[0], list):
        return result[0]
    return None


def tool_call(ended: Ended) -> CallToolResult:
    """A one-step, one-command session as the command's result."""
    step = first_step(ended.result)
    if step:
        return content.action_result(step[0])
    return content.failure(why_not(ended))


def tool_descriptor(asked_type: str, item: Any) -> dict[str, Any] | None:
    """One ``list_tools`` entry as the MCP-form descriptor ``list_device_tools`` gives."""
    if not isinstance(item, dict):
        return None
    name = item.get("tool_name") or item.get("name")
    if not isinstance(name, str) or not name:
        return None
    schema = item.get("input_schema") or item.get("inputSchema")
    if not isinstance(schema, dict) or schema.get("type") != "object":
        schema = {"type": "object", "properties": {}}
    tool_type = item.get("tool_type")
    if tool_type not in ("action", "data_collection"):
        tool_type = asked_type
    description = item.get("description")
    namespace = item.get("namespace")
    return {
        "name": name,
        "description": description if isinstance(description, str) else "",
        "inputSchema": schema,
        "tool_type": tool_type,
        "namespace": namespace if isinstance(namespace, str) and namespace else None,
    }


def device_tools(ended: Ended, asked: tuple[str, ...]) -> CallToolResult:
    """The answers to the ``list_tools`` commands (one per type in ``asked``)."""
    step = first_step(ended.result)
    if not step:
        return content.failure(f"The device did not list its tools: {why_not(ended)}")
    tools: list[dict[str, Any]] = []
    seen: set[tuple[str, str | None, str]] = set()
    errors: list[str] = []
    for kind, answer in zip(asked, step, strict=False):
        listed = answer.get("result") if isinstance(answer, dict) else None
        if not isinstance(answer, dict) or answer.get("status") != "success" \
                or not isinstance(listed, list):
            error = answer.get("error") if isinstance(answer, dict) else None
            errors.append(f"{kind}: {error or 'no tool list'}")
            continue
        for item in listed:
            tool = tool_descriptor(kind, item)
            if tool is None:
                continue
            key = (tool["name"], tool["namespace"], tool["tool_type"])
            if key not in seen:
                seen.add(key)
                tools.append(tool)
    if not tools and errors:
        return content.failure(f"The device did not list its tools ({'; '.join(errors)}).")
    return content.success({"tools": tools})


def task(ended: Ended) -> CallToolResult:
    """A whole session: its result, or a tool error with why and what it got so far."""
    if ended.state == COMPLETED:
        return content.success({"session_id": ended.session_id, "result": ended.result})
    return content.failure(why_not(ended),
                           {"session_id": ended.session_id, "state": ended.state,
                            "result": ended.result})
