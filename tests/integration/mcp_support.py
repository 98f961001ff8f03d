"""For the ``/mcp`` tests: real AIP devices serving tools, and the SDK's own MCP client
over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from aip_client import DeviceClient, ToolFailure, ToolRegistry, builtin_registry

#: A 1x1 PNG, as a device's screenshot tool would send it.
PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJ"
    "RU5ErkJggg=="
)
PNG_DATA_URL = "data:image/png;base64," + PNG_BASE64


def device_tools() -> ToolRegistry:
    registry = builtin_registry()

    @registry.tool(tool_type="data_collection")
    def screenshot() -> str:
        """Tool: take a screenshot of the screen."""
        return PNG_DATA_URL

    @registry.tool()
    def add(a: int, b: int) -> int:
        """Tool: add two numbers."""
        return a + b

    @registry.tool()
    def jam() -> None:
        """Tool: always fails."""
        raise ToolFailure("the printer is jammed")

    @registry.tool()
    async def nap(seconds: float = 0.2) -> str:
        """Tool: sleep a while."""
        await asyncio.sleep(seconds)
        return f"slept {seconds}"

    return registry


@asynccontextmanager
async def device(ws_url: str, client_id: str, token: str | None = None) -> AsyncIterator[
        DeviceClient]:
    client = DeviceClient(ws_url, client_id, device_tools(), token=token,
                          backoff_min=0.05, backoff_max=0.3)
    await client.start(timeout=10)
    try:
        yield client
    finally:
        await client.stop()


def mcp_url(http_url: str) -> str:
    return f"{http_url}/mcp"


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


class Notifications:
    """What the server told the client outside of answers."""

    def __init__(self) -> None:
        self.received: list[Any] = []
        self.changed = asyncio.Event()

    async def __call__(self, message: Any) -> None:
        self.received.append(message)
        if isinstance(message, types.ResourceListChangedNotification):
            self.changed.set()


@asynccontextmanager
async def mcp_client(http_url: str, headers: dict[str, str] | None = None,
                     notifications: Notifications | None = None) -> AsyncIterator[ClientSession]:
    """An initialized MCP session with the gateway's ``/mcp``."""
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(10.0, read=60.0))
    async with http, streamable_http_client(mcp_url(http_url), http_client=http) as (
            read, write), ClientSession(read, write, message_handler=notifications) as session:
        await session.initialize()
        yield session


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content
                     if isinstance(block, types.TextContent))


def structured(result: types.CallToolResult) -> dict[str, Any]:
    """A successful result's structured content."""
    assert not result.is_error, text_of(result)
    assert isinstance(result.structured_content, dict), result
    return result.structured_content


#: The tools :func:`device_tools` serves that the tests look for (and a builtin one).
SERVED_TOOLS = {"get_system_info", "screenshot", "add", "jam", "nap"}


async def tools_by_name(client: ClientSession, device_id: str) -> dict[str, dict[str, Any]]:
    """``list_device_tools`` for ``device_id``, by tool name."""
    tools = structured(await client.call_tool("list_device_tools",
                                              {"device_id": device_id}))["tools"]
    return {tool["name"]: tool for tool in tools}
