"""``/mcp`` against the real stack: the SDK's MCP client over real HTTP, real AIP devices
(the project's device client) serving tools, the session service running every call."""

from __future__ import annotations

import asyncio
import base64
import json
import socket

import httpx2
import mcp_types as types
import pytest
from mcp.client.client import Client
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ResourcesListChanged

from aip_client.refusals import PermanentRefusal
from aip_grpc import session_api_pb2 as pb
from gateway_service.auth import hash_token
from tests.conftest import StackFactory
from tests.integration.mcp_support import (
    PNG_BASE64,
    SERVED_TOOLS,
    Notifications,
    bearer,
    device,
    mcp_client,
    mcp_url,
    structured,
    text_of,
    tools_by_name,
)
from tests.stack import Stack, api_call, get_session, wait_for

pytestmark = pytest.mark.timeout(90)

API_KEY = "mcp-test-key"
MCP_SECRET = "ide-secret"
LIMITED_SECRET = "lab-only-secret"
DEVICE_SECRET = "dev-secret"
TOKENS = (f"ide mcp {hash_token(MCP_SECRET)}; "
          f"lab-client mcp {hash_token(LIMITED_SECRET)} devices=lab-1; "
          f"lab-1 device {hash_token(DEVICE_SECRET)}; "
          f"lab-2 device {hash_token(DEVICE_SECRET + '2')}")


async def sessions_of(stack: Stack, requester_id: str) -> list[pb.SessionInfo]:
    answer = await api_call(stack.replica.address, "ListSessions",
                            pb.ListSessionsRequest(requester_id=requester_id))
    return list(answer.sessions)


async def test_tools_are_listed_with_their_schemas(stack: Stack) -> None:
    async with asyncio.timeout(20), mcp_client(stack.http_url) as client:
        listed = await client.list_tools()
    names = {tool.name: tool for tool in listed.tools}
    assert set(names) == {"list_devices", "device_info", "list_device_tools",
                          "call_device_tool", "run_task"}
    assert names["call_device_tool"].input_schema["required"] == ["device_id", "tool_name"]


async def test_list_devices_info_and_device_tools(stack: Stack) -> None:
    async with asyncio.timeout(30), device(stack.ws_url, "mcp-dev"), \
            mcp_client(stack.http_url) as client:
        devices = structured(await client.call_tool("list_devices", {}))["devices"]
        assert [d["device_id"] for d in devices] == ["mcp-dev"]
        assert devices[0]["gateway_id"] == stack.gateway.gateway_id
        assert devices[0]["running_sessions"] == 0

        info = structured(await client.call_tool("device_info", {"device_id": "mcp-dev"}))
        assert info["hostname"] == socket.gethostname()

        by_name = await tools_by_name(client, "mcp-dev")
        assert SERVED_TOOLS <= set(by_name)
        assert by_name["add"]["inputSchema"]["required"] == ["a", "b"]
        assert by_name["add"]["inputSchema"]["properties"]["a"]["type"] == "integer"
        assert by_name["screenshot"]["tool_type"] == "data_collection"
        assert "run_shell" not in by_name  # not offered by the device

        unknown = await client.call_tool("device_info", {"device_id": "nobody"})
        assert unknown.is_error and "not connected" in text_of(unknown)


async def test_call_device_tool_text_image_and_failure(stack: Stack) -> None:
    async with asyncio.timeout(30), device(stack.ws_url, "mcp-dev"), \
            mcp_client(stack.http_url) as client:
        info = await client.call_tool("call_device_tool", {
            "device_id": "mcp-dev", "tool_name": "get_system_info",
            "tool_type": "data_collection"})
        assert structured(info)["hostname"] == socket.gethostname()
        assert json.loads(text_of(info))["hostname"] == socket.gethostname()

        summed = await client.call_tool("call_device_tool", {
            "device_id": "mcp-dev", "tool_name": "add", "arguments": {"a": 2, "b": 40}})
        assert not summed.is_error and text_of(summed) == "42"

        shot = await client.call_tool("call_device_tool", {
            "device_id": "mcp-dev", "tool_name": "screenshot",
            "tool_type": "data_collection"})
        assert not shot.is_error, text_of(shot)
        images = [block for block in shot.content if isinstance(block, types.ImageContent)]
        assert len(images) == 1 and images[0].mime_type == "image/png"
        assert base64.b64decode(images[0].data).startswith(b"\x89PNG")
        assert images[0].data == PNG_BASE64

        jammed = await client.call_tool("call_device_tool", {
            "device_id": "mcp-dev", "tool_name": "jam"})
        assert jammed.is_error
        assert "the printer is jammed" in text_of(jammed)

        bad = await client.call_tool("call_device_tool", {
            "device_id": "mcp-dev", "tool_name": "add", "arguments": "a=1"})
        assert bad.is_error and "'arguments' must be an object" in text_of(bad)

    # Every call was an ordinary, recorded session asked by the MCP client.
    recorded = await sessions_of(stack, "mcp:anonymous")
    assert len(recorded) == 4
    assert {s.agent for s in recorded} == {"plan"}


async def test_run_task_reports_progress_per_step(stack: Stack) -> None:
    plan = {"steps": [[{"tool_name": "add", "parameters": {"a": 1, "b": 2}}],
                      [{"tool_name": "nap", "parameters": {"seconds": 0.05}}],
                      [{"tool_name": "get_system_info", "tool_type": "data_collection"}]]}
    reports: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reports.append((progress, total, message))

    async with asyncio.timeout(30), device(stack.ws_url, "mcp-dev"), \
            mcp_client(stack.http_url) as client:
        result = await client.call_tool("run_task", {"device_id": "mcp-dev", "request": plan},
                                        progress_callback=on_progress)
        failed = await client.call_tool("run_task", {
            "device_id": "mcp-dev", "request": [{"tool_name": "jam"}]})
        words = await client.call_tool("run_task", {
            "device_id": "mcp-dev", "request": "tidy up the desktop"})
    answer = structured(result)
    steps = answer["result"]
    assert [step[0]["status"] for step in steps] == ["success"] * 3
    assert steps[0][0]["result"] == 3
    progress = [p for p, _, _ in reports]
    assert progress == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0], reports
    assert {total for _, total, _ in reports} == {3.0}
    assert reports[0][2] == "step 1: sent add"
    assert reports[-1][2] == "step 3: success"
    assert failed.is_error and "the printer is jammed" in text_of(failed)
    # Words need a language-model agent, which this replica has not: refused, said why.
    assert words.is_error and "not a valid plan" in text_of(words), text_of(words)


async def test_a_cancelled_call_cancels_its_session(stack: Stack) -> None:
    async with asyncio.timeout(30), device(stack.ws_url, "mcp-dev"), \
            mcp_client(stack.http_url) as client:
        call = asyncio.ensure_future(client.call_tool("call_device_tool", {
            "device_id": "mcp-dev", "tool_name": "nap", "arguments": {"seconds": 30}}))

        running: list[pb.SessionInfo] = []

        async def started() -> bool:
            running[:] = [s for s in await sessions_of(stack, "mcp:anonymous")
                          if s.state == pb.SESSION_STATE_RUNNING and s.steps_total == 1]
            return bool(running)

        for _ in range(400):
            if await started():
                break
            await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        session_id = running[0].session_id

        for _ in range(400):
            info = await get_session(stack.replica.address, session_id)
            if info.state != pb.SESSION_STATE_RUNNING:
                break
            await asyncio.sleep(0.05)
        assert info.state == pb.SESSION_STATE_CANCELLED
        assert info.cancel_reason == "mcp_request_cancelled"
        # The MCP session is still usable after the cancelled request.
        summed = await client.call_tool("call_device_tool", {
            "device_id": "mcp-dev", "tool_name": "add", "arguments": {"a": 1, "b": 1}})
        assert text_of(summed) == "2"


async def test_devices_coming_and_going_notify_resource_listeners(
        make_stack: StackFactory) -> None:
    stack = await make_stack(gateway={"mcp_watch_interval": 0.1})
    notifications = Notifications()
    async with asyncio.timeout(30), device(stack.ws_url, "first"), \
            mcp_client(stack.http_url, notifications=notifications) as client:
        listed = await client.list_resources()
        assert [r.name for r in listed.resources] == ["first"]
        read = await client.read_resource(listed.resources[0].uri)
        assert json.loads(read.contents[0].text)["hostname"] == socket.gethostname()
        assert not notifications.changed.is_set()
        assert stack.gateway is not None
        async with device(stack.ws_url, "second"):
            await notifications.changed.wait()
            notifications.changed.clear()
            listed = await client.list_resources()
            assert sorted(r.name for r in listed.resources) == ["first", "second"]
        await notifications.changed.wait()
        listed = await client.list_resources()
        assert [r.name for r in listed.resources] == ["first"]


#: A raw ``initialize`` request, for probing the endpoint's refusals without a client.
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {},
    "clientInfo": {"name": "probe", "version": "0"}}}
ACCEPT = {"Accept": "application/json, text/event-stream"}


async def test_credentials_origin_and_allow_lists(make_stack: StackFactory) -> None:
    stack = await make_stack(gateway={"api_key": API_KEY, "tokens": TOKENS})
    url = mcp_url(stack.http_url)
    async with asyncio.timeout(40), httpx2.AsyncClient(timeout=10) as http:
        # No credential, a wrong one, a device's token, the X-API-Key form: 401.
        for headers in ({}, bearer("wrong"), bearer(DEVICE_SECRET), {"X-API-Key": API_KEY}):
            answer = await http.post(url, json=INITIALIZE, headers={**ACCEPT, **headers})
            assert answer.status_code == 401, (headers, answer.text)
            assert answer.headers["www-authenticate"].startswith("Bearer")
            assert answer.json()["error"] == "unauthorized"
        # The right credential from a foreign page: refused (DNS rebinding).
        answer = await http.post(url, json=INITIALIZE, headers={
            **ACCEPT, **bearer(API_KEY), "Origin": "http://evil.example"})
        assert answer.status_code == 403, answer.text
        answer = await http.post(url, json=INITIALIZE, headers={
            **ACCEPT, **bearer(API_KEY), "Origin": "http://localhost:3000"})
        assert answer.status_code == 200, answer.text

    async with asyncio.timeout(40), \
            device(stack.ws_url, "lab-1", token=DEVICE_SECRET), \
            device(stack.ws_url, "lab-2", token=DEVICE_SECRET + "2"):
        # The API key and an unbound mcp token see the whole fleet.
        for secret in (API_KEY, MCP_SECRET):
            async with mcp_client(stack.http_url, bearer(secret)) as client:
                devices = structured(await client.call_tool("list_devices", {}))["devices"]
                assert sorted(d["device_id"] for d in devices) == ["lab-1", "lab-2"]
        # A token bound to lab-1 sees and drives lab-1 only.
        async with mcp_client(stack.http_url, bearer(LIMITED_SECRET)) as client:
            devices = structured(await client.call_tool("list_devices", {}))["devices"]
            assert [d["device_id"] for d in devices] == ["lab-1"]
            resources = await client.list_resources()
            assert [r.name for r in resources.resources] == ["lab-1"]
            summed = await client.call_tool("call_device_tool", {
                "device_id": "lab-1", "tool_name": "add", "arguments": {"a": 1, "b": 2}})
            assert text_of(summed) == "3"
            for tool, arguments in (
                    ("call_device_tool", {"device_id": "lab-2", "tool_name": "add",
                                          "arguments": {"a": 1, "b": 2}}),
                    ("device_info", {"device_id": "lab-2"}),
                    ("list_device_tools", {"device_id": "lab-2"}),
                    ("run_task", {"device_id": "lab-2", "request": [{"tool_name": "add"}]})):
                refused = await client.call_tool(tool, arguments)
                assert refused.is_error, tool
                assert "not available to this client" in text_of(refused)
            with pytest.raises(MCPError):
                await client.read_resource("aip://devices/lab-2")
        lab2 = await sessions_of(stack, "mcp:lab-client")
        assert {s.device_id for s in lab2} == {"lab-1"}

    # An mcp token is no device credential on /ws.
    with pytest.raises(PermanentRefusal, match="invalid credentials"):
        async with device(stack.ws_url, "lab-client", token=LIMITED_SECRET):
            pass


async def test_mcp_can_be_turned_off(make_stack: StackFactory) -> None:
    stack = await make_stack(gateway={"mcp": False})
    async with asyncio.timeout(10), httpx2.AsyncClient(timeout=5) as http:
        answer = await http.post(mcp_url(stack.http_url), json={})
    assert answer.status_code == 404


async def test_no_watcher_runs_without_listeners(stack: Stack) -> None:
    async with asyncio.timeout(20), device(stack.ws_url, "quiet"), \
            mcp_client(stack.http_url) as client:
        await client.call_tool("list_devices", {})
        endpoint = stack.gw.app._mcp.app if stack.gw is not None else None  # type: ignore[union-attr]
        assert endpoint is not None
        assert not endpoint.changes.watching
        await client.list_resources()
        await wait_for(lambda: endpoint.changes.watching, 5)
    await wait_for(lambda: not endpoint.changes.watching, 5)


async def test_a_2026_client_listens_for_device_changes(make_stack: StackFactory) -> None:
    stack = await make_stack(gateway={"mcp_watch_interval": 0.1})
    async with asyncio.timeout(30), device(stack.ws_url, "first"), \
            Client(mcp_url(stack.http_url)) as client:
        assert client.session.protocol_version == "2026-07-28"
        devices = structured(await client.call_tool("list_devices", {}))["devices"]
        assert [d["device_id"] for d in devices] == ["first"]
        async with client.listen(resources_list_changed=True) as subscription:
            async with device(stack.ws_url, "second"):
                event = await anext(aiter(subscription))
        assert isinstance(event, ResourcesListChanged)
        listed = await client.list_resources()
        assert "first" in [r.name for r in listed.resources]


async def test_a_body_over_the_limit_is_refused_before_it_is_read(
        make_stack: StackFactory) -> None:
    stack = await make_stack(gateway={"max_body_bytes": 4096})
    async with asyncio.timeout(10), httpx2.AsyncClient(timeout=5) as http:
        answer = await http.post(mcp_url(stack.http_url), content=b"x" * 8192, headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream"})
    assert answer.status_code == 413


async def test_host_names_are_answered_only_when_allowed(make_stack: StackFactory) -> None:
    # As the Kubernetes manifest configures it: the Service's name, any port.
    stack = await make_stack(gateway={"mcp_allowed_hosts": "aip-gateway-http:*"})
    async with asyncio.timeout(30), httpx2.AsyncClient(timeout=10) as http:
        for host, status in (("aip-gateway-http:8000", 200), ("evil.example:8000", 421),
                             ("aip-gateway-http.evil.example:8000", 421)):
            answer = await http.post(mcp_url(stack.http_url), json=INITIALIZE,
                                     headers={**ACCEPT, "Host": host})
            assert answer.status_code == status, (host, answer.status_code, answer.text)
