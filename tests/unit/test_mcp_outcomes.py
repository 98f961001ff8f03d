"""Ended sessions as tool results, device tool lists, resources, and progress reports."""

from __future__ import annotations

import json

from mcp_types import TextContent

from gateway_service.console.devices import DeviceView
from gateway_service.mcp import outcomes, resources
from gateway_service.mcp.outcomes import Ended
from gateway_service.mcp.progress import (
    ANSWERED,
    MODEL_TURN,
    QUEUED,
    SENT,
    StepCounter,
    statuses,
    tool_names,
)


def first_text(result: object) -> str:
    block = result.content[0]  # type: ignore[attr-defined]
    assert isinstance(block, TextContent)
    return block.text


def ended(state: str, result: object = None, **fields: str) -> Ended:
    return Ended("s1", state, result, **fields)


def test_a_tool_call_answers_with_its_one_result() -> None:
    done = outcomes.tool_call(ended("completed", [[{"status": "success", "result": 5}]]))
    assert not done.is_error and first_text(done) == "5"
    failed = outcomes.tool_call(ended("failed", [[{"status": "failure", "error": "boom"}]],
                                      error="Step 1 failed (call_id x): boom"))
    assert failed.is_error and first_text(failed) == "boom"
    gone = outcomes.tool_call(ended("cancelled", None, cancel_reason="device_disconnected"))
    assert gone.is_error and "device_disconnected" in first_text(gone)
    broke = outcomes.tool_call(ended("failed", None, error="queue full"))
    assert first_text(broke) == "queue full"


def test_device_tools_merge_both_answers() -> None:
    action = [{"tool_name": "click", "namespace": None, "tool_type": "action",
               "description": "Click.", "input_schema": {"type": "object", "properties": {
                   "x": {"type": "integer"}}, "required": ["x"]}},
              {"no": "name"}]
    data = [{"tool_name": "screen", "input_schema": "bad"},
            {"tool_name": "click", "tool_type": "action"}]
    result = outcomes.device_tools(ended("completed", [[
        {"status": "success", "result": action}, {"status": "success", "result": data}]]),
        ("action", "data_collection"))
    tools = result.structured_content["tools"]  # type: ignore[index]
    assert [(t["name"], t["tool_type"]) for t in tools] == [
        ("click", "action"), ("screen", "data_collection")]
    assert tools[0]["inputSchema"]["required"] == ["x"]
    assert tools[1]["inputSchema"] == {"type": "object", "properties": {}}


def test_device_tools_when_the_device_cannot_list() -> None:
    none = outcomes.device_tools(ended("failed", [[
        {"status": "failure", "error": "unknown tool"}, {"status": "failure"}]]),
        ("action", "data_collection"))
    assert none.is_error and "action: unknown tool" in first_text(none)
    lost = outcomes.device_tools(ended("cancelled", None), ("action",))
    assert lost.is_error and "did not list its tools" in first_text(lost)


def test_a_task_answers_with_its_result_or_why_not() -> None:
    done = outcomes.task(ended("completed", [[{"status": "success"}]]))
    assert not done.is_error
    assert done.structured_content == {"session_id": "s1", "result": [[{"status": "success"}]]}
    failed = outcomes.task(ended("failed", [[{"status": "failure"}]], error="Step 1 failed"))
    assert failed.is_error and first_text(failed) == "Step 1 failed"
    assert json.loads(failed.content[1].text)["state"] == "failed"  # type: ignore[union-attr]


def test_progress_only_grows() -> None:
    counter = StepCounter()
    queued = counter.update(QUEUED, 2, "position 1")
    assert queued is not None and queued.progress == 0 and "position 1" in queued.message
    reports = [counter.update(kind, 2, detail) for kind, detail in (
        (SENT, "click"), (MODEL_TURN, ""), (ANSWERED, "success"), (SENT, "type"),
        (ANSWERED, "failure"))]
    assert [(r.progress, r.total, r.message) for r in reports if r is not None] == [
        (0.5, 2.0, "step 1: sent click"), (1.0, 2.0, "step 1: success"),
        (1.5, 2.0, "step 2: sent type"), (2.0, 2.0, "step 2: failure")]
    assert counter.update(QUEUED, 2) is None  # never back to 0
    unknown_total = StepCounter().update(SENT, 0, "x")
    assert unknown_total is not None and unknown_total.total is None


def test_update_details() -> None:
    assert tool_names([{"tool_name": "a"}, {"tool_name": "b"}, "x", {}]) == "a, b"
    assert tool_names({"tool_name": "a"}) == ""
    assert statuses([{"status": "success"}, {"status": "failure"}]) == "success, failure"
    assert statuses(None) == ""


def test_device_resources() -> None:
    uri = resources.device_uri("lab/1 a")
    assert uri.startswith("aip://devices/") and "/" not in uri.removeprefix("aip://devices/")
    assert resources.device_of(uri) == "lab/1 a"
    assert resources.device_of("aip://devices/") is None
    assert resources.device_of("file:///etc/passwd") is None
    resource = resources.resource_of(DeviceView("d1", "linux", "gw-1", None, None, 0, 0))
    assert resource.name == "d1" and resource.mime_type == "application/json"
    assert "linux" in (resource.description or "") and "gw-1" in (resource.description or "")
