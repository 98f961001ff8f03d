"""``/mcp`` reaching past its own gateway: a natural-language ``run_task`` run by the
replica's language-model agent against a scripted OpenAI-compatible server, and the
devices of another gateway listed and driven through this one's MCP endpoint. The SDK's
MCP client over real HTTP, real AIP devices (the project's device client)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from mcp.client.session import ClientSession

from aip_grpc import session_api_pb2 as pb
from tests.conftest import StackFactory
from tests.integration.llm_support import FAKE_KEY, ScriptedModel, answer, llm_settings, tool_call
from tests.integration.mcp_support import (
    SERVED_TOOLS,
    device,
    mcp_client,
    structured,
    text_of,
    tools_by_name,
)
from tests.stack import GatewayProcess, SessionReplica, api_call, get_session

pytestmark = pytest.mark.timeout(90)

Progress = list[tuple[float, float | None, str | None]]


def progress_recorder() -> tuple[Progress, Any]:
    reports: Progress = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reports.append((progress, total, message))

    return reports, on_progress


async def test_run_task_in_words_goes_through_the_language_model(
        make_stack: StackFactory) -> None:
    script = [
        tool_call("add", {"a": 19, "b": 23}),
        tool_call("get_system_info", {}, call_id="call_2"),
        answer("The sum is 42 and the machine answered."),
    ]
    reports, on_progress = progress_recorder()
    async with ScriptedModel(script) as model:
        stack = await make_stack(session=llm_settings(model))
        async with asyncio.timeout(45), device(stack.ws_url, "llm-dev"), \
                mcp_client(stack.http_url) as client:
            result = await client.call_tool(
                "run_task", {"device_id": "llm-dev", "request": "Add 19 and 23, then look "
                             "at the machine"},
                progress_callback=on_progress)
            answer_of = structured(result)
            info = await get_session(stack.replica.address, answer_of["session_id"])

    # What the scripted model concluded is the task's result.
    assert answer_of["result"] == {"answer": "The sum is 42 and the machine answered.",
                                   "steps": 2}, answer_of
    assert "The sum is 42 and the machine answered." in text_of(result)
    assert info.agent == "llm"
    assert info.requester_id == "mcp:anonymous"

    # Progress came while it ran, each report above the last, with no total (unknown).
    # The agent's own list_tools command first, then one step per tool the model called.
    assert reports, "no progress notification arrived"
    assert [p for p, _, _ in reports] == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0], reports
    assert {total for _, total, _ in reports} == {None}, reports
    assert [message for _, _, message in reports] == [
        "step 1: sent list_tools, list_tools", "step 1: success, success",
        "step 2: sent add", "step 2: success",
        "step 3: sent get_system_info", "step 3: success"], reports

    # The model was asked three times, with the device's own tools, and saw their results.
    assert len(model.requests) == 3, model.requests
    first, second, third = model.requests
    offered = {tool["function"]["name"] for tool in first["tools"]}
    assert {"add", "get_system_info", "nap", "jam", "screenshot"} <= offered, offered
    add_fn = next(t for t in first["tools"] if t["function"]["name"] == "add")
    assert add_fn["function"]["parameters"]["required"] == ["a", "b"]
    assert first["model"] == "scripted-model"
    assert first["messages"][-1] == {"role": "user",
                                     "content": "Add 19 and 23, then look at the machine"}
    added = second["messages"][-1]
    assert added["role"] == "tool" and added["tool_call_id"] == "call_1"
    assert "42" in added["content"], added
    system = next(message for message in third["messages"]
                  if message.get("role") == "tool" and message.get("tool_call_id") == "call_2")
    assert socket.gethostname() in system["content"], system
    assert model.authorizations == [f"Bearer {FAKE_KEY}"] * 3
    assert FAKE_KEY not in json.dumps(answer_of)


@asynccontextmanager
async def two_gateways() -> AsyncIterator[tuple[SessionReplica, GatewayProcess,
                                                GatewayProcess]]:
    """One replica, gateways ``gw-a`` and ``gw-b`` both linked to it."""
    replica = SessionReplica()
    await replica.start()
    started: list[GatewayProcess] = []
    try:
        for gateway_id in ("gw-a", "gw-b"):
            gateway = GatewayProcess([replica.address], gateway_id=gateway_id)
            await gateway.start()
            started.append(gateway)
            await gateway.wait_linked(1)
        yield replica, started[0], started[1]
    finally:
        for gateway in reversed(started):
            await gateway.stop()
        await replica.stop()


async def devices_of(client: ClientSession) -> list[dict[str, Any]]:
    devices: list[dict[str, Any]] = structured(
        await client.call_tool("list_devices", {}))["devices"]
    return devices


async def listed_with(client: ClientSession, device_id: str) -> list[dict[str, Any]]:
    """``list_devices`` once it lists ``device_id`` (its presence takes a moment to reach
    the replica)."""
    while True:
        devices = await devices_of(client)
        if any(d["device_id"] == device_id for d in devices):
            return devices
        await asyncio.sleep(0.05)


async def test_mcp_on_one_gateway_reaches_a_device_on_another() -> None:
    async with asyncio.timeout(60), two_gateways() as (replica, gw_a, gw_b), \
            device(gw_b.ws_url, "far-dev"), mcp_client(gw_a.http_url) as client:
        assert gw_a.gateway.registry.device("far-dev") is None
        assert gw_b.gateway.registry.device("far-dev") is not None

        async with asyncio.timeout(10):
            devices = await listed_with(client, "far-dev")
        assert [d["device_id"] for d in devices] == ["far-dev"], devices
        assert devices[0]["gateway_id"] == "gw-b"
        assert devices[0]["connected_since"] is None  # only its own gateway knows that

        info = structured(await client.call_tool("device_info", {"device_id": "far-dev"}))
        assert info["hostname"] == socket.gethostname()

        by_name = await tools_by_name(client, "far-dev")
        assert SERVED_TOOLS <= set(by_name)
        assert by_name["add"]["inputSchema"]["required"] == ["a", "b"]

        system = await client.call_tool("call_device_tool", {
            "device_id": "far-dev", "tool_name": "get_system_info",
            "tool_type": "data_collection"})
        assert structured(system)["hostname"] == socket.gethostname()
        assert json.loads(text_of(system))["hostname"] == socket.gethostname()

        summed = await client.call_tool("call_device_tool", {
            "device_id": "far-dev", "tool_name": "add", "arguments": {"a": 40, "b": 2}})
        assert not summed.is_error and text_of(summed) == "42", text_of(summed)

        jammed = await client.call_tool("call_device_tool", {
            "device_id": "far-dev", "tool_name": "jam"})
        assert jammed.is_error and "the printer is jammed" in text_of(jammed)

        reports, on_progress = progress_recorder()
        plan = {"steps": [[{"tool_name": "add", "parameters": {"a": 1, "b": 2}}],
                          [{"tool_name": "nap", "parameters": {"seconds": 0.05}}]]}
        ran = await client.call_tool("run_task", {"device_id": "far-dev", "request": plan},
                                     progress_callback=on_progress)
        steps = structured(ran)["result"]
        assert [step[0]["status"] for step in steps] == ["success", "success"]
        assert steps[0][0]["result"] == 3
        assert [p for p, _, _ in reports] == [0.5, 1.0, 1.5, 2.0], reports

        # Each call that reached the device was an ordinary, recorded session (tool list,
        # three tool calls, the plan), run on the device's gateway.
        recorded = await api_call(replica.address, "ListSessions",
                                  pb.ListSessionsRequest(requester_id="mcp:anonymous"))
        assert len(recorded.sessions) == 5, recorded
        assert {s.device_id for s in recorded.sessions} == {"far-dev"}
        assert {s.state for s in recorded.sessions} == {pb.SESSION_STATE_COMPLETED,
                                                         pb.SESSION_STATE_FAILED}
        sessions = list(replica.service.manager.sessions.values())
        assert {s.device_gateway for s in sessions} == {"gw-b"}

        unknown = await client.call_tool("device_info", {"device_id": "nobody"})
        assert unknown.is_error and "not connected" in text_of(unknown)
