"""The fleet as ``/mcp`` reaches it: the replicas' public session API, as the console does.

Every tool is a call to ``aip.v1.SessionApi`` on a linked replica (through
:class:`~gateway_service.console.source.SessionSource`: the least loaded healthy replica
first, the links' channels and ``--session-token``), so ``/mcp`` sees every device of
every gateway, and whatever it runs is an ordinary session: queued behind the device's
running one, recorded, timed out by the session service. A call whose MCP request is
cancelled cancels its session. Only this module knows protobuf in the package.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import grpc

from aip_grpc import session_api_pb2 as pb
from aip_wire.frames import loads_or_text
from gateway_service.console.devices import DeviceView, device_views
from gateway_service.console.source import NoReplica, Refused, SessionSource
from gateway_service.gateway import Gateway
from gateway_service.mcp import progress
from gateway_service.mcp.outcomes import Ended

log = logging.getLogger("aip.gateway.mcp")

#: The cancel reason recorded for a session whose MCP request was cancelled.
CANCEL_REASON = "mcp_request_cancelled"
#: Seconds the cancel of such a session may take, shielded from the cancellation.
CANCEL_TIMEOUT = 5.0

_STATES = {
    pb.SESSION_STATE_QUEUED: "queued",
    pb.SESSION_STATE_RUNNING: "running",
    pb.SESSION_STATE_COMPLETED: "completed",
    pb.SESSION_STATE_FAILED: "failed",
    pb.SESSION_STATE_CANCELLED: "cancelled",
}
_KINDS = {
    pb.UPDATE_KIND_COMMAND_SENT: progress.SENT,
    pb.UPDATE_KIND_RESULTS_RECEIVED: progress.ANSWERED,
    pb.UPDATE_KIND_QUEUED: progress.QUEUED,
    pb.UPDATE_KIND_MODEL_TURN: progress.MODEL_TURN,
}

#: Told each update of a running session: its kind, the plan's step count, the detail.
OnUpdate = Callable[[str, int, Any], Awaitable[None]]


class FleetError(Exception):
    """The fleet could not do what was asked; the message says why, for the caller."""


def ended_of(info: pb.SessionInfo) -> Ended:
    return Ended(
        session_id=info.session_id,
        state=_STATES.get(info.state, "unknown"),
        result=loads_or_text(info.result_json),
        error=info.error,
        cancel_reason=info.cancel_reason,
    )


def _refusal(refused: Refused) -> FleetError:
    if refused.code == grpc.StatusCode.NOT_FOUND:
        return FleetError(f"Not found: {refused.details}")
    return FleetError(f"The session service refused: {refused.details}")


class Fleet(SessionSource):
    """The session API calls the MCP tools make."""

    def __init__(self, gateway: Gateway, timeout: float = 5.0) -> None:
        super().__init__(gateway, timeout)

    async def device_list(self) -> list[DeviceView]:
        """Every device of the fleet; this gateway's own when no replica answers."""
        try:
            remote: list[pb.Device] | None = await self.devices()
        except (NoReplica, Refused) as exc:
            log.info("mcp: listing devices from the registry only: %s", exc)
            remote = None
        return device_views(remote, list(self.gateway.registry), self.gateway.gateway_id)

    async def device_ids(self) -> frozenset[str]:
        return frozenset(view.device_id for view in await self.device_list())

    async def device_info(self, device_id: str) -> Any:
        """What the device reported about itself; ``None`` when it is not connected."""
        conn = self.gateway.registry.device(device_id)
        if conn is not None:
            return conn.device_info
        try:
            device: pb.Device = await self._call("GetDevice",
                                                 pb.GetDeviceRequest(device_id=device_id))
        except Refused as refused:
            if refused.code == grpc.StatusCode.NOT_FOUND:
                return None
            raise _refusal(refused) from None
        except NoReplica as exc:
            raise FleetError(f"No session-service replica answered: {exc}") from None
        return loads_or_text(device.device_info_json) or {}

    async def run(self, device_id: str, request: str, *, requester_id: str,
                  agent: str = "", on_update: OnUpdate | None = None) -> Ended:
        """Run one session to its end. Cancelled, it cancels the session (shielded).

        :raises FleetError: the session could not be started or followed.
        """
        try:
            # Shielded: a request cancelled while its session starts still cancels the
            # session (on the first await after), rather than leaving it running unseen.
            with anyio.CancelScope(shield=True):
                info: pb.SessionInfo = await self._call("StartSession", pb.StartSessionRequest(
                    device_id=device_id, request=request, requester_id=requester_id,
                    agent=agent,
                    # Asked again of the next replica after a timeout, it is the same session.
                    idempotency_key=uuid.uuid4().hex,
                ))
        except Refused as refused:
            raise _refusal(refused) from None
        except NoReplica as exc:
            raise FleetError(f"No session-service replica answered: {exc}") from None
        session_id = info.session_id
        try:
            return await self._follow(session_id, on_update)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_TIMEOUT):
                await self._cancel_quietly(session_id)
            raise

    async def _follow(self, session_id: str, on_update: OnUpdate | None) -> Ended:
        try:
            async for update in self.watch(session_id):
                if update.kind == pb.UPDATE_KIND_ENDED:
                    return ended_of(update.session)
                kind = _KINDS.get(update.kind)
                if kind is not None and on_update is not None:
                    await on_update(kind, update.session.steps_total,
                                    loads_or_text(update.detail_json))
        except Refused as refused:
            raise _refusal(refused) from None
        except NoReplica as exc:
            raise FleetError(f"Lost the session {session_id} (it may still run): {exc}") \
                from None
        # The stream ended without the end: read it.
        final = await self.session(session_id)
        if final is None:
            raise FleetError(f"The session {session_id} is gone")
        return ended_of(final)

    async def _cancel_quietly(self, session_id: str) -> None:
        try:
            await self._call("CancelSession", pb.CancelSessionRequest(
                session_id=session_id, reason=CANCEL_REASON))
            log.info("mcp: cancelled session %s: its request was cancelled", session_id)
        except (NoReplica, Refused) as exc:
            log.warning("mcp: could not cancel session %s: %s", session_id, exc)
