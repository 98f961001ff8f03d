"""The pure parts of the language-model agent: the device's tools as model functions,
and the device's results as what the model reads.

Devices describe their tools as MCP tool descriptors (``tool_name``, ``namespace``,
``tool_type``, ``description``, ``input_schema``). Chat Completions wants function names
matching ``^[a-zA-Z0-9_-]{1,64}$`` and unique, so each tool gets such a name here and the
model's calls are mapped back to the descriptor exactly. Results may hold screenshots as
``data:image/...;base64,...`` strings: those are taken out of the text and shown to the
model as images; the remaining text is cut to a budget with a note saying so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from aip_wire.frames import dumps

MAX_NAME = 64
_INVALID = re.compile(r"[^a-zA-Z0-9_-]")
_IMAGE = re.compile(r"^data:image/[a-zA-Z0-9.+-]+;base64,", re.ASCII)
#: Most images of one tool result shown to the model; others are only mentioned.
MAX_IMAGES = 4
#: Tool types a device distinguishes; anything else is sent as an action.
TOOL_TYPES = ("action", "data_collection")
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One tool of the device, and the function name the model knows it by."""

    function_name: str
    tool_name: str
    tool_type: str
    namespace: str | None = None
    description: str = ""
    input_schema: dict[str, Any] = field(default_factory=lambda: dict(_EMPTY_SCHEMA))
    #: The agent the device routes the tool's commands by (``None``: none named).
    agent_name: str | None = None


def function_name(text: str) -> str:
    """``text`` as a valid function name: invalid characters become ``_``, cut to 64."""
    name = _INVALID.sub("_", text)[:MAX_NAME]
    return name or "tool"


def _unique(candidates: list[str], taken: set[str]) -> str:
    for candidate in candidates:
        if candidate not in taken:
            return candidate
    base = candidates[0]
    number = 2
    while True:
        suffix = f"_{number}"
        name = base[: MAX_NAME - len(suffix)] + suffix
        if name not in taken:
            return name
        number += 1


def tool_specs(descriptors: list[tuple[str, Any]], agent_name: str | None) -> list[ToolSpec]:
    """The tools of ``list_tools`` answers, each ``(asked tool_type, descriptor)``.

    Descriptors without a ``tool_name`` are skipped, and so are repeats of the same
    tool (name, namespace and type). Names clash when two namespaces offer the same
    tool: the later one is named ``namespace__tool`` (or gets a number).
    """
    specs: list[ToolSpec] = []
    seen: set[tuple[str, str | None, str]] = set()
    taken: set[str] = set()
    for asked_type, descriptor in descriptors:
        if not isinstance(descriptor, dict):
            continue
        tool_name = descriptor.get("tool_name")
        if not isinstance(tool_name, str) or not tool_name:
            continue
        namespace = descriptor.get("namespace")
        namespace = namespace if isinstance(namespace, str) and namespace else None
        tool_type = descriptor.get("tool_type")
        tool_type = tool_type.lower() if isinstance(tool_type, str) else asked_type
        if tool_type not in TOOL_TYPES:
            tool_type = "action"
        key = (tool_name, namespace, tool_type)
        if key in seen:
            continue
        seen.add(key)
        candidates = [function_name(tool_name)]
        if namespace is not None:
            candidates.append(function_name(f"{namespace}__{tool_name}"))
        name = _unique(candidates, taken)
        taken.add(name)
        schema = descriptor.get("input_schema")
        description = descriptor.get("description")
        specs.append(
            ToolSpec(
                function_name=name,
                tool_name=tool_name,
                tool_type=tool_type,
                namespace=namespace,
                description=description if isinstance(description, str) else "",
                input_schema=schema
                if isinstance(schema, dict) and schema.get("type") == "object"
                else dict(_EMPTY_SCHEMA),
                agent_name=agent_name,
            )
        )
    return specs


def functions(specs: list[ToolSpec]) -> list[dict[str, Any]]:
    """The ``tools`` parameter of a Chat Completions request."""
    return [
        {
            "type": "function",
            "function": {
                "name": spec.function_name,
                "description": spec.description or f"The device's tool {spec.tool_name}.",
                "parameters": spec.input_schema,
            },
        }
        for spec in specs
    ]


def is_image(value: Any) -> bool:
    return isinstance(value, str) and _IMAGE.match(value) is not None


def split_images(value: Any, images: list[str] | None = None) -> tuple[Any, list[str]]:
    """``value`` with every ``data:image/...;base64,...`` string replaced by a short
    placeholder, and those images in order (at most :data:`MAX_IMAGES`; the others are
    replaced by a note that they were left out)."""
    found: list[str] = [] if images is None else images

    def walk(item: Any) -> Any:
        if is_image(item):
            if len(found) >= MAX_IMAGES:
                return "[image left out: too many images in one result]"
            found.append(item)
            return f"[image {len(found)}, attached below]"
        if isinstance(item, dict):
            return {key: walk(inner) for key, inner in item.items()}
        if isinstance(item, list):
            return [walk(inner) for inner in item]
        return item

    return walk(value), found


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with a note of how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[truncated: {len(text) - limit} of {len(text)} characters not shown]"


def result_for_model(results: list[dict[str, Any]], limit: int) -> tuple[str, list[str]]:
    """What the model reads of one command's results: text within ``limit`` characters,
    and the images taken out of it."""
    shown: list[dict[str, Any]] = []
    for result in results:
        if not isinstance(result, dict):
            shown.append({"result": result})
            continue
        shown.append(
            {
                key: result.get(key)
                for key in ("status", "error", "result")
                if result.get(key) is not None
            }
        )
    if not shown:
        shown = [{"status": "failure", "error": "the device sent no result"}]
    body, images = split_images(shown[0] if len(shown) == 1 else shown)
    return truncate(dumps(body).decode(), limit), images
