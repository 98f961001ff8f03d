"""How a device describes its tools when asked (``list_tools``): one MCP-style descriptor
per tool, its ``input_schema`` a JSON Schema derived from the function's signature and
its ``description`` from the docstring.

A model driving the device (the session service's language-model agent) sees exactly
these, so the schema says what a call may pass: each parameter with its type from the
annotation (anything when there is none), required unless it has a default.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pydantic import ConfigDict, create_model

#: Longest description sent; docstrings are for people first.
MAX_DESCRIPTION = 1000
_DOC_PREFIX = "Tool: "


def description(func: Callable[..., Any]) -> str:
    """The docstring's first paragraph, without the ``Tool:`` marker."""
    doc = inspect.getdoc(func) or ""
    first = doc.split("\n\n", 1)[0].replace("\n", " ").strip().removeprefix(_DOC_PREFIX)
    return (first[:1].upper() + first[1:])[:MAX_DESCRIPTION]


def input_schema(func: Callable[..., Any]) -> dict[str, Any]:
    """A JSON Schema object for the keyword arguments ``func`` takes."""
    try:
        signature = inspect.signature(func)
        hints = inspect.get_annotations(func, eval_str=True)
    except (TypeError, ValueError, NameError):
        return {"type": "object", "properties": {}}
    fields: dict[str, Any] = {}
    open_ended = False
    for name, parameter in signature.parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            open_ended = True
            continue
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL,
                              inspect.Parameter.POSITIONAL_ONLY) or name.startswith("_"):
            continue
        annotation = hints.get(name, Any)
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[name] = (annotation, default)
    try:
        model = create_model(  # type: ignore[call-overload]
            f"{getattr(func, '__name__', 'tool')}_arguments",
            __config__=ConfigDict(arbitrary_types_allowed=True),
            **fields,
        )
        schema: dict[str, Any] = model.model_json_schema()
    except Exception:  # an annotation pydantic cannot describe: say what is known
        schema = {"type": "object",
                  "properties": {name: {} for name in fields},
                  "required": [n for n, (_, d) in fields.items() if d is ...]}
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        if isinstance(prop, dict):
            prop.pop("title", None)
    schema["type"] = "object"
    schema.setdefault("properties", {})
    schema["additionalProperties"] = open_ended
    return schema


def descriptor(name: str, func: Callable[..., Any], tool_type: str) -> dict[str, Any]:
    """The ``list_tools`` entry of one tool, in the shape reference devices answer."""
    return {
        "tool_name": name,
        "namespace": None,
        "tool_type": tool_type,
        "description": description(func),
        "input_schema": input_schema(func),
    }
