"""The MCP server: the SDK's low-level :class:`~mcp.server.lowlevel.Server`, its handlers
thin adapters from MCP requests to :class:`~gateway_service.mcp.fleet.Fleet` calls.

Each handler reads the caller's :class:`~gateway_service.mcp.access.Grant` (put in the
HTTP request's scope by the endpoint), checks the arguments and the device against it,
and maps what the fleet answers to MCP results; the rules themselves live in the pure
modules (``access``, ``arguments``, ``content``, ``outcomes``, ``progress``). Tool
failures are tool errors (``isError``), never protocol errors, so a model reads them.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.subscriptions import ListenHandler
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    ListResourcesResult,
    ListToolsResult,
    PaginatedRequestParams,
    ReadResourceRequestParams,
    ReadResourceResult,
    TextResourceContents,
)

from gateway_service.mcp import arguments, catalog, content, outcomes, resources
from gateway_service.mcp.access import Grant, device_allowed, requester_id
from gateway_service.mcp.arguments import ArgumentError
from gateway_service.mcp.changes import DeviceChanges
from gateway_service.mcp.fleet import Fleet, FleetError
from gateway_service.mcp.progress import StepCounter, statuses, tool_names

log = logging.getLogger("aip.gateway.mcp")

#: Where the endpoint puts the caller's grant in the ASGI scope.
GRANT_KEY = "aip.mcp.grant"
_NOBODY = Grant("unknown", frozenset())
INSTRUCTIONS = (
    "The devices of an AIP fleet. list_devices names them; list_device_tools gives a "
    "device's tools and call_device_tool runs one; run_task runs a whole plan or task. "
    "Each device is also a resource (its device info)."
)

Context = ServerRequestContext[Any, Any]


def grant_of(ctx: Context) -> Grant:
    """The caller's grant; none at all when the request did not come through the
    endpoint (it always does)."""
    request = ctx.request
    scope = getattr(request, "scope", None)
    grant = scope.get(GRANT_KEY) if isinstance(scope, dict) else None
    return grant if isinstance(grant, Grant) else _NOBODY


def unavailable(device_id: str) -> CallToolResult:
    """The answer for a device the caller may not reach: the same as for one that is
    not connected, so that a grant's holder learns nothing of other devices."""
    return content.failure(f"Device '{device_id}' is not connected or not available "
                           "to this client.")


class FleetServer(Server[Any]):
    """The server, announcing that its resource list changes."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or NotificationOptions(resources_changed=True),
            experimental_capabilities, extensions)


class Handlers:
    """The MCP requests the server answers."""

    def __init__(self, fleet: Fleet, changes: DeviceChanges) -> None:
        self.fleet = fleet
        self.changes = changes

    async def list_tools(self, ctx: Context,
                         params: PaginatedRequestParams | None) -> ListToolsResult:
        return ListToolsResult(tools=catalog.TOOLS)

    async def call_tool(self, ctx: Context, params: CallToolRequestParams) -> CallToolResult:
        grant = grant_of(ctx)
        try:
            return await self._call(ctx, grant, params.name, params.arguments)
        except ArgumentError as exc:
            return content.failure(str(exc))
        except FleetError as exc:
            return content.failure(str(exc))

    async def _call(self, ctx: Context, grant: Grant, name: str,
                    given: dict[str, Any] | None) -> CallToolResult:
        if name == catalog.LIST_DEVICES:
            arguments.check_names(name, given)
            return await self._list_devices(grant)
        if name == catalog.DEVICE_INFO:
            device_id = arguments.device_id(name, given)
            if not device_allowed(grant, device_id):
                return unavailable(device_id)
            info = await self.fleet.device_info(device_id)
            return unavailable(device_id) if info is None else content.success(info)
        if name == catalog.LIST_DEVICE_TOOLS:
            device_id = arguments.device_id(name, given)
            if not device_allowed(grant, device_id):
                return unavailable(device_id)
            ended = await self.fleet.run(device_id, arguments.list_tools_plan(),
                                         requester_id=requester_id(grant), agent="plan")
            return outcomes.device_tools(ended, arguments.TOOL_TYPES)
        if name == catalog.CALL_DEVICE_TOOL:
            call = arguments.tool_call(given)
            if not device_allowed(grant, call.device_id):
                return unavailable(call.device_id)
            ended = await self.fleet.run(call.device_id, arguments.one_step_plan(call),
                                         requester_id=requester_id(grant), agent="plan")
            return outcomes.tool_call(ended)
        if name == catalog.RUN_TASK:
            task = arguments.task(given)
            if not device_allowed(grant, task.device_id):
                return unavailable(task.device_id)
            return await self._run_task(ctx, grant, task)
        raise MCPError(INVALID_PARAMS, f"Unknown tool '{name}'")

    async def _list_devices(self, grant: Grant) -> CallToolResult:
        views = [view for view in await self.fleet.device_list()
                 if device_allowed(grant, view.device_id)]
        devices = [{
            "device_id": view.device_id,
            "platform": view.platform,
            "gateway_id": view.gateway_id,
            "running_sessions": view.running,
            "queued_sessions": view.queued,
            "connected_since": view.connected_since,
        } for view in views]
        return content.success({"devices": devices})

    async def _run_task(self, ctx: Context, grant: Grant,
                        task: arguments.Task) -> CallToolResult:
        counter = StepCounter()

        async def on_update(kind: str, steps_total: int, detail: Any) -> None:
            described = tool_names(detail) or statuses(detail)
            report = counter.update(kind, steps_total, described)
            if report is not None:
                await ctx.session.report_progress(report.progress, report.total,
                                                  report.message)

        ended = await self.fleet.run(task.device_id, task.request,
                                     requester_id=requester_id(grant), agent=task.agent,
                                     on_update=on_update)
        return outcomes.task(ended)

    async def list_resources(self, ctx: Context,
                             params: PaginatedRequestParams | None) -> ListResourcesResult:
        grant = grant_of(ctx)
        views = [view for view in await self.fleet.device_list()
                 if device_allowed(grant, view.device_id)]
        self.changes.listen(ctx.session, grant,
                            frozenset(view.device_id for view in views))
        return ListResourcesResult(resources=[resources.resource_of(view) for view in views])

    async def read_resource(self, ctx: Context,
                            params: ReadResourceRequestParams) -> ReadResourceResult:
        grant = grant_of(ctx)
        uri = str(params.uri)
        device_id = resources.device_of(uri)
        info = None
        if device_id is not None and device_allowed(grant, device_id):
            try:
                info = await self.fleet.device_info(device_id)
            except FleetError as exc:
                raise MCPError(INVALID_PARAMS, str(exc)) from None
        if info is None:
            raise MCPError(INVALID_PARAMS, f"Unknown resource: {uri}")
        return ReadResourceResult(contents=[TextResourceContents(
            uri=uri, mime_type=resources.MIME, text=orjson.dumps(info).decode())])


def build_server(fleet: Fleet, changes: DeviceChanges, version: str) -> FleetServer:
    handlers = Handlers(fleet, changes)
    return FleetServer(
        "aip-fleet",
        version=version,
        title="AIP fleet",
        instructions=INSTRUCTIONS,
        on_list_tools=handlers.list_tools,
        on_call_tool=handlers.call_tool,
        on_list_resources=handlers.list_resources,
        on_read_resource=handlers.read_resource,
        on_subscriptions_listen=ListenHandler(changes.bus),
    )
