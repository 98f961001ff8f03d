"""The console's event streams and actions over real HTTP, without a browser: what the
streams send, that they end when the gateway drains (uvicorn waits for every open
response before it exits, so a stream that never ended would hold a restart up
forever), and what a start that cannot run answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.stack import Stack, register_device

pytestmark = pytest.mark.timeout(60)


async def events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """``(event, data)`` pairs as they arrive."""
    name, data = "", []
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif not line and name:
            yield name, "\n".join(data)
            name, data = "", []


async def test_the_overview_stream_sends_a_device_as_it_registers(stack: Stack) -> None:
    async with (
        httpx.AsyncClient(base_url=stack.http_url, timeout=10) as http,
        http.stream("GET", "/console/events") as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = events(response)
        name, data = await anext(stream)
        while name != "devices":
            name, data = await anext(stream)
        assert "No device is connected" in data
        device = await register_device(stack.ws_url, "streamed-device")
        try:
            async with asyncio.timeout(10):
                async for name, data in stream:
                    if name == "devices" and 'data-device="streamed-device"' in data:
                        break
        finally:
            await device.close()


async def test_streams_end_when_the_gateway_drains(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=10) as http:
        async with http.stream("GET", "/console/events") as response:
            stream = events(response)
            await anext(stream)  # it is open and sending
            await stack.gateway.drain(0.1)
            async with asyncio.timeout(5):
                async for _ in stream:
                    pass  # until the gateway ends it


async def test_an_unknown_session_is_a_problem_and_an_end(stack: Stack) -> None:
    async with (
        httpx.AsyncClient(base_url=stack.http_url, timeout=10) as http,
        http.stream("GET", "/console/sessions/no-such-session/events") as response,
    ):
        received = [item async for item in events(response)]
    assert [name for name, _ in received] == ["problem", "end"]
    assert "no-such-session" in received[0][1] or "not found" in received[0][1].lower()


async def test_a_start_that_cannot_run_says_why(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=10) as http:

        async def start(body: object) -> httpx.Response:
            return await http.post("/console/api/sessions", json=body)

        not_json = await http.post(
            "/console/api/sessions", content=b"device_id=x", headers={"content-type": "text/plain"}
        )
        assert not_json.status_code == 415
        assert (await start({"request": "[]"})).status_code == 422  # no device
        bad_plan = await start({"device_id": "gone", "request": "[{"})
        assert bad_plan.status_code == 400 and "not JSON" in bad_plan.json()["detail"]
        # The replica's own refusals, with their own wording.
        plan = '[{"tool_name": "echo", "parameters": {}}]'
        absent = await start({"device_id": "gone", "request": plan})
        assert absent.status_code == 404 and "gone" in absent.json()["detail"], absent.text
        device = await register_device(stack.ws_url, "no-model-here")
        try:
            words = await start({"device_id": "no-model-here", "request": "hi", "kind": "task"})
            assert words.status_code == 400 and words.json()["detail"], words.text
        finally:
            await device.close()
