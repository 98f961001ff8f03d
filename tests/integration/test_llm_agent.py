"""The language-model agent end to end: a constellation's natural-language task run by a
replica whose --llm-base-url points at a scripted OpenAI-compatible server on loopback,
with a raw WebSocket device that lists its tools and answers the commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest

from aip_client import DeviceClient, builtin_registry
from aip_grpc import session_api_pb2 as pb
from tests.conftest import StackFactory
from tests.integration.cli_support import aip_device, aip_task
from tests.integration.llm_support import (
    FAKE_KEY,
    PNG,
    Hang,
    ScriptedModel,
    Status,
    ToolDevice,
    answer,
    completion,
    llm_settings,
    tool_call,
)
from tests.stack import (
    Stack,
    api_call,
    get_session,
    register_constellation,
    register_device,
    task_frame,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def device_serving(stack: Stack, results: dict[str, Any]) -> AsyncIterator[ToolDevice]:
    device = ToolDevice(await register_device(stack.ws_url, "dev1"), "dev1", results)
    serving = asyncio.get_running_loop().create_task(device.serve())
    try:
        yield device
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await serving
        await device.client.close()


async def run_task(stack: Stack, request: str, sid: str = "c1@t-llm") -> dict[str, Any]:
    """A constellation's task on dev1; returns its task_end."""
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    try:
        await constellation.send(
            task_frame("c1", request, client_type="constellation", target_id="dev1", session_id=sid)
        )
        return await constellation.recv_type("task_end", timeout=30)
    finally:
        await constellation.close()


async def test_a_natural_language_task_runs_with_the_devices_tools(
    make_stack: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    script = [
        tool_call("click", {"x": 10, "y": 20}),
        tool_call("screen_capture", {}),
        answer("The editor is open."),
    ]
    async with ScriptedModel(script) as model:
        stack = await make_stack(session=llm_settings(model))
        async with device_serving(
            stack, {"click": "clicked at 10,20", "screen.capture": {"screenshot": PNG}}
        ) as device:
            end = await run_task(stack, "Open the text editor")
            info = await get_session(stack.replica.address, "c1@t-llm")
    assert end["status"] == "completed", end
    assert end["result"] == {"answer": "The editor is open.", "steps": 2}
    # The device was asked for both kinds of tools, routed as the plan agent routes.
    listing = device.commands[0]
    assert [(a["tool_name"], a["parameters"]) for a in listing["actions"]] == [
        ("list_tools", {"tool_type": "action"}),
        ("list_tools", {"tool_type": "data_collection"}),
    ]
    assert listing["agent_name"] == "LinuxAgent"
    click, capture = device.commands[1]["actions"][0], device.commands[2]["actions"][0]
    assert (click["tool_name"], click["parameters"], click["tool_type"]) == (
        "click",
        {"x": 10, "y": 20},
        "action",
    )
    assert (capture["tool_name"], capture["tool_type"]) == ("screen.capture", "data_collection")
    assert device.commands[1]["agent_name"] == "LinuxAgent"
    # What the model was sent, request by request.
    first, second, third = model.requests
    assert first["model"] == "scripted-model"
    assert {tool["function"]["name"] for tool in first["tools"]} == {"click", "screen_capture"}
    click_fn = next(t for t in first["tools"] if t["function"]["name"] == "click")
    assert click_fn["function"]["parameters"]["required"] == ["x", "y"]
    assert first["messages"][-1] == {"role": "user", "content": "Open the text editor"}
    tool_message = second["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "call_1"
    assert "clicked at 10,20" in tool_message["content"]
    # The screenshot reaches the model as an image, not as text.
    screenshot_tool, images = third["messages"][-2], third["messages"][-1]
    assert screenshot_tool["role"] == "tool" and "base64" not in screenshot_tool["content"]
    assert images["role"] == "user"
    assert [
        part["image_url"]["url"] for part in images["content"] if part["type"] == "image_url"
    ] == [PNG]
    assert model.authorizations == [f"Bearer {FAKE_KEY}"] * 3
    # The transcript: one turn per model answer, with usage, from GetSession.
    assert info.agent == "llm"
    assert [turn.seq for turn in info.turns] == [0, 1, 2]
    assert json.loads(info.turns[0].tool_calls_json)[0]["name"] == "click"
    assert info.turns[2].text == "The editor is open."
    assert info.turns[0].total_tokens == 18 and info.turns[0].model == "scripted-model"
    # The key is in no record and no log line.
    assert FAKE_KEY not in str(info)
    assert caplog.records and FAKE_KEY not in caplog.text


async def test_the_transcript_is_in_the_store_and_in_watch_updates(
    make_stack: StackFactory,
) -> None:
    async with ScriptedModel([tool_call("click", {"x": 1, "y": 2}), answer("done")]) as model:
        stack = await make_stack(session=llm_settings(model))
        async with device_serving(stack, {}):
            started = await api_call(
                stack.replica.address,
                "StartSession",
                pb.StartSessionRequest(
                    device_id="dev1", request="Click the button", model="other-model"
                ),
            )
            kinds, turns = [], []
            async with grpc.aio.insecure_channel(stack.replica.address) as channel:
                from aip_grpc import session_api_pb2_grpc

                stub = session_api_pb2_grpc.SessionApiStub(channel)
                call = stub.WatchSession(
                    pb.WatchSessionRequest(session_id=started.session_id), timeout=20
                )
                async for update in call:
                    kinds.append(update.kind)
                    if update.kind == pb.UPDATE_KIND_MODEL_TURN:
                        turns.append(json.loads(update.detail_json))
    assert [model_request["model"] for model_request in model.requests] == ["other-model"] * 2
    assert kinds[-1] == pb.UPDATE_KIND_ENDED
    assert [turn["text"] for turn in turns][-1] == "done"
    assert turns[-1]["usage"]["total_tokens"] == 18
    # Forgotten by memory, the record in the store still has the transcript.
    stored = stack.service.store
    assert stored is not None
    await asyncio.to_thread(stored.flush)
    record = await asyncio.to_thread(stored.get, started.session_id, True)
    assert record is not None and len(record.turns) == 2
    assert json.loads(record.turns[0])["tool_calls"][0]["name"] == "click"
    assert FAKE_KEY not in repr(record)


async def test_more_steps_than_allowed_fail_the_session(make_stack: StackFactory) -> None:
    script = [tool_call("click", {"x": 1, "y": 1})]  # repeats: the model never finishes
    async with ScriptedModel(script) as model:
        stack = await make_stack(session=llm_settings(model, llm_max_steps=2))
        async with device_serving(stack, {}) as device:
            end = await run_task(stack, "Click forever")
    assert end["status"] == "failed"
    assert "2 steps" in end["error"] and "--llm-max-steps" in end["error"]
    assert len(device.commands) == 3  # list_tools and two clicks
    assert len(model.requests) == 3


async def test_a_server_error_is_retried(make_stack: StackFactory) -> None:
    async with ScriptedModel([Status(500), answer("fine")]) as model:
        stack = await make_stack(session=llm_settings(model, llm_max_retries=2))
        async with device_serving(stack, {}):
            end = await run_task(stack, "Say fine")
    assert end["status"] == "completed", end
    assert end["result"] == {"answer": "fine", "steps": 0}
    assert len(model.requests) == 2


async def test_errors_after_the_retries_fail_with_the_cause(make_stack: StackFactory) -> None:
    async with ScriptedModel([Status(503)]) as model:
        stack = await make_stack(session=llm_settings(model, llm_max_retries=1))
        async with device_serving(stack, {}):
            end = await run_task(stack, "Say fine")
    assert end["status"] == "failed"
    assert "HTTP 503" in end["error"] and "after 1 retries" in end["error"]
    assert len(model.requests) == 2


async def test_a_model_that_never_answers_fails_the_session(make_stack: StackFactory) -> None:
    async with ScriptedModel([Hang()]) as model:
        stack = await make_stack(session=llm_settings(model, llm_timeout=0.5, llm_max_retries=0))
        async with device_serving(stack, {}):
            end = await run_task(stack, "Wait")
    assert end["status"] == "failed"
    assert "did not answer within 0.5s" in end["error"]


async def test_malformed_arguments_are_answered_to_the_model(make_stack: StackFactory) -> None:
    script = [tool_call("click", "{not json"), tool_call("nope", {}), answer("gave up")]
    async with ScriptedModel(script) as model:
        stack = await make_stack(session=llm_settings(model))
        async with device_serving(stack, {}) as device:
            end = await run_task(stack, "Click")
    assert end["status"] == "completed" and end["result"]["answer"] == "gave up"
    assert "not valid JSON" in model.requests[1]["messages"][-1]["content"]
    assert "no tool named 'nope'" in model.requests[2]["messages"][-1]["content"]
    assert len(device.commands) == 1  # only list_tools reached the device


async def test_cancel_during_a_model_call_ends_the_session_at_once(
    make_stack: StackFactory,
) -> None:
    async with ScriptedModel([Hang()]) as model:
        stack = await make_stack(session=llm_settings(model, llm_timeout=30))
        async with device_serving(stack, {}):
            started = await api_call(
                stack.replica.address,
                "StartSession",
                pb.StartSessionRequest(device_id="dev1", request="Wait for ever"),
            )
            await wait_for(lambda: model.hanging == 1, 10, what="the model call in flight")
            loop = asyncio.get_running_loop()
            asked = loop.time()
            await api_call(
                stack.replica.address,
                "CancelSession",
                pb.CancelSessionRequest(session_id=started.session_id),
            )
            session = stack.service.manager.sessions[started.session_id]
            async with asyncio.timeout(5):
                await session.ended.wait()
            assert loop.time() - asked < 5
            info = await get_session(stack.replica.address, started.session_id)
    assert info.state == pb.SESSION_STATE_CANCELLED
    assert info.cancel_reason == "requested"


async def test_an_llm_session_needs_a_configured_model(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await api_call(
                stack.replica.address,
                "StartSession",
                pb.StartSessionRequest(device_id="dev1", request="Open the editor", agent="llm"),
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "--llm-base-url" in (refused.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await api_call(
                stack.replica.address,
                "StartSession",
                pb.StartSessionRequest(device_id="dev1", request="Open the editor"),
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not JSON" in (refused.value.details() or "")
    finally:
        await device.close()


async def test_only_the_latest_screenshots_stay_in_the_conversation(
    make_stack: StackFactory,
) -> None:
    script = [
        tool_call("screen_capture", {}, "call_1"),
        tool_call("screen_capture", {}, "call_2"),
        answer("seen twice"),
    ]
    async with ScriptedModel(script) as model:
        stack = await make_stack(session=llm_settings(model))
        async with device_serving(stack, {"screen.capture": [PNG]}):
            end = await run_task(stack, "Look twice")
    assert end["status"] == "completed", end
    last = model.requests[2]["messages"]
    urls = [
        part["image_url"]["url"]
        for message in last
        if isinstance(message["content"], list)
        for part in message["content"]
        if part["type"] == "image_url"
    ]
    assert urls == [PNG]  # the second step's; the first's became a note
    assert any("earlier step were removed" in str(message["content"]) for message in last)
    assert [m["role"] for m in last[-4:]] == ["user", "assistant", "tool", "user"]


async def test_a_refusal_fails_the_session(make_stack: StackFactory) -> None:
    refusal = completion(
        {"role": "assistant", "content": None, "refusal": "I cannot help with that."}, "stop"
    )
    async with ScriptedModel([refusal]) as model:
        stack = await make_stack(session=llm_settings(model))
        async with device_serving(stack, {}):
            end = await run_task(stack, "Do something bad")
            info = await get_session(stack.replica.address, "c1@t-llm")
    assert end["status"] == "failed"
    assert end["error"] == "The model refused the task: I cannot help with that."
    assert [turn.refusal for turn in info.turns] == ["I cannot help with that."]


async def test_an_sdk_device_offers_its_own_tools_to_the_model(
    make_stack: StackFactory, tmp_path: Any
) -> None:
    """A DeviceClient answers list_tools from its registry: the model is offered its
    tools with schemas from their signatures, and its call runs the real tool."""
    (tmp_path / "notes.txt").write_text("buy milk")
    script = [tool_call("read_file", {"path": "notes.txt"}), answer("It says: buy milk.")]
    async with ScriptedModel(script) as model:
        stack = await make_stack(session=llm_settings(model))
        device = DeviceClient(stack.ws_url, "dev1", builtin_registry(workdir=tmp_path))
        await device.start(timeout=10)
        try:
            end = await run_task(stack, "What do my notes say?")
        finally:
            await device.stop()
    assert end["status"] == "completed", end
    assert end["result"] == {"answer": "It says: buy milk.", "steps": 1}
    offered = {tool["function"]["name"]: tool["function"] for tool in model.requests[0]["tools"]}
    assert set(offered) == {"get_system_info", "list_directory", "read_file", "write_file"}
    assert offered["read_file"]["parameters"]["required"] == ["path"]
    assert offered["write_file"]["parameters"]["properties"]["append"]["type"] == "boolean"
    assert "buy milk" in model.requests[1]["messages"][-1]["content"]


async def test_aip_task_runs_a_request_in_words_and_shows_the_models_turns(
    make_stack: StackFactory, tmp_path: Any
) -> None:
    (tmp_path / "notes.txt").write_text("buy milk")
    script = [tool_call("read_file", {"path": "notes.txt"}), answer("It says: buy milk.")]
    async with ScriptedModel(script) as model:
        stack = await make_stack(session=llm_settings(model))
        async with aip_device(stack, "cli-llm", "--workdir", str(tmp_path)):
            code, out, err = await aip_task(stack, "--device", "cli-llm",
                                            "What do my notes say?")
    assert code == 0, (out, err)
    assert "status: completed" in out and "It says: buy milk." in out
    assert "model chose: read_file (18 tokens)" in err
    assert "model answered: It says: buy milk." in err
    assert model.requests[0]["messages"][-1]["content"] == "What do my notes say?"


async def test_the_http_api_may_name_the_agent_and_model(make_stack: StackFactory) -> None:
    script = [answer("Done by the model.")]
    async with ScriptedModel(script) as model:
        stack = await make_stack(session=llm_settings(model))
        async with device_serving(stack, {}), httpx.AsyncClient(timeout=10) as http:
            url = f"{stack.http_url}/api/dispatch"
            accepted = await http.post(url, json={
                "client_id": "dev1", "request": "tidy the desktop", "task_name": "by-http",
                "agent": "llm", "model": "other-model"})
            assert accepted.status_code == 200, accepted.text
            info = await wait_ended(stack, accepted.json()["session_id"])
            assert info.agent == "llm" and info.state == pb.SESSION_STATE_COMPLETED, info
            assert model.requests[0]["model"] == "other-model"
            # Words forced onto the plan agent fail as a plan would.
            forced = await http.post(url, json={"client_id": "dev1", "request": "tidy up",
                                                "agent": "plan"})
            info = await wait_ended(stack, forced.json()["session_id"])
            assert info.agent == "plan" and info.state == pb.SESSION_STATE_FAILED
            assert "not a valid plan" in info.error
            bogus = await http.post(url, json={"client_id": "dev1", "request": "x",
                                               "agent": "wizard"})
            assert bogus.status_code == 422


async def wait_ended(stack: Stack, session_id: str) -> pb.SessionInfo:
    info = await get_session(stack.replica.address, session_id)
    for _ in range(100):
        if info.state != pb.SESSION_STATE_RUNNING:
            return info
        await asyncio.sleep(0.1)
        info = await get_session(stack.replica.address, session_id)
    raise AssertionError(f"{session_id} still runs: {info}")
