"""Tool arguments checked, and turned into session requests the plan agent accepts."""

from __future__ import annotations

import json

import pytest

from gateway_service.mcp import arguments, catalog
from gateway_service.mcp.arguments import ArgumentError, Task, ToolCall
from session_service.agents.plan import parse_plan


def test_every_tool_of_the_catalog_has_its_argument_rules() -> None:
    for tool in catalog.TOOLS:
        schema = tool.input_schema
        assert schema["type"] == "object" and schema["additionalProperties"] is False
        assert set(schema["properties"]) == set(arguments._ALLOWED[tool.name])
        assert set(schema["required"]) <= set(schema["properties"])


def test_unknown_arguments_and_tools_are_refused() -> None:
    with pytest.raises(ArgumentError, match=r"Unknown argument.*: extra"):
        arguments.check_names("list_devices", {"extra": 1})
    with pytest.raises(ArgumentError, match="Unknown tool"):
        arguments.check_names("nope", {})
    assert arguments.check_names("list_devices", None) == {}


@pytest.mark.parametrize("given", [None, {}, {"device_id": ""}, {"device_id": 3}])
def test_device_id_is_a_non_empty_string(given: dict | None) -> None:
    with pytest.raises(ArgumentError, match="device_id"):
        arguments.device_id("device_info", given)


def test_tool_call() -> None:
    call = arguments.tool_call({"device_id": "d", "tool_name": "click",
                                "arguments": {"x": 1}, "tool_type": "data_collection",
                                "agent_name": "WinAgent"})
    assert call == ToolCall("d", "click", {"x": 1}, "data_collection", "WinAgent")
    assert arguments.tool_call({"device_id": "d", "tool_name": "t"}) == ToolCall("d", "t", {})
    for bad, problem in (({"arguments": [1]}, "arguments"), ({"tool_type": "x"}, "tool_type"),
                         ({"agent_name": ""}, "agent_name"), ({"tool_name": None}, "tool_name")):
        with pytest.raises(ArgumentError, match=problem):
            arguments.tool_call({"device_id": "d", "tool_name": "t", **bad})


def test_a_tool_call_is_a_one_step_plan_the_plan_agent_accepts() -> None:
    call = ToolCall("d", "click", {"x": 1}, "action", "WinAgent")
    plan = parse_plan(arguments.one_step_plan(call))
    assert len(plan.steps) == 1 and not plan.continue_on_failure
    (step,) = plan.steps
    assert step.agent_name == "WinAgent"
    assert [(a["tool_name"], a["parameters"], a["tool_type"]) for a in step.actions] == [
        ("click", {"x": 1}, "action")]
    bare = parse_plan(arguments.one_step_plan(ToolCall("d", "t", {})))
    assert bare.steps[0].agent_name is None  # the plan agent picks the platform's


def test_list_tools_plan_asks_both_types_in_one_step() -> None:
    plan = parse_plan(arguments.list_tools_plan())
    (step,) = plan.steps
    assert [(a["tool_name"], a["parameters"]) for a in step.actions] == [
        ("list_tools", {"tool_type": "action"}), ("list_tools", {"tool_type": "data_collection"})]


def test_task() -> None:
    plan = {"steps": [[{"tool_name": "a"}]]}
    assert arguments.task({"device_id": "d", "request": plan}) == Task(
        "d", json.dumps(plan, separators=(",", ":")))
    assert arguments.task({"device_id": "d", "request": [{"tool_name": "a"}]}).request \
        == '[{"tool_name":"a"}]'
    assert arguments.task({"device_id": "d", "request": "open the mail", "agent": "llm"}) \
        == Task("d", "open the mail", "llm")
    for bad, problem in (({"request": "  "}, "request"), ({"request": 3}, "request"),
                         ({"request": "x", "agent": "gpt"}, "agent")):
        with pytest.raises(ArgumentError, match=problem):
            arguments.task({"device_id": "d", **bad})
