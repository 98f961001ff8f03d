"""What a device answers to ``list_tools``: descriptors with schemas from signatures."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aip_client.tool_schemas import description, input_schema
from aip_client.tools import ToolRegistry, builtin_registry


def test_schemas_follow_the_signature() -> None:
    def click(x: int, y: int, button: str = "left", double: bool = False) -> None:
        """Tool: click at a point of the screen.

        More words for people.
        """

    schema = input_schema(click)
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["required"] == ["x", "y"]
    assert schema["properties"]["x"] == {"type": "integer"}
    assert schema["properties"]["button"] == {"default": "left", "type": "string"}
    assert schema["properties"]["double"]["type"] == "boolean"
    assert description(click) == "Click at a point of the screen."


def test_unannotated_and_open_ended_parameters() -> None:
    def anything(value, *args: Any, **extra: Any) -> None:  # type: ignore[no-untyped-def]
        pass

    schema = input_schema(anything)
    assert schema["required"] == ["value"] and list(schema["properties"]) == ["value"]
    assert schema["additionalProperties"] is True
    assert description(anything) == ""


def test_list_tools_answers_by_tool_type(tmp_path: Path) -> None:
    registry = builtin_registry(workdir=tmp_path)

    @registry.tool(tool_type="action")
    async def press(key: str) -> str:
        """Tool: press a key."""
        return key

    def listed(tool_type: str | None) -> list[str]:
        outcome = asyncio.run(registry.call(
            "list_tools", {} if tool_type is None else {"tool_type": tool_type}))
        assert outcome.status == "success", outcome
        return [d["tool_name"] for d in outcome.result]

    assert listed("data_collection") == ["get_system_info", "list_directory", "read_file"]
    assert listed("action") == ["press", "write_file"]  # the disabled shell is not offered
    assert "run_shell" not in listed(None)
    shell = builtin_registry(workdir=tmp_path, allow_shell=True)
    assert "run_shell" in [d["tool_name"] for d in shell.describe("action")]
    bad = asyncio.run(registry.call("list_tools", {"tool_type": "everything"}))
    assert bad.status == "failure" and "tool_type" in (bad.error or "")


def test_a_registered_list_tools_wins() -> None:
    registry = ToolRegistry()
    registry.add("list_tools", lambda **_: ["mine"])
    assert asyncio.run(registry.call("list_tools", {})).result == ["mine"]
