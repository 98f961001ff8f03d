"""The session service's gRPC API as ``aip-task`` uses it: live steps and the device list.

Optional by design: ``grpc`` and the generated stubs are imported only when a call is
made, so the SDK installs and imports without them and ``aip-task`` falls back (no live
steps, the gateway's HTTP API for the device list) when they are missing or the service
is unreachable.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aip_client.task_output import Progress


async def open_channel(address: str) -> Any:
    """A ready gRPC channel to the session service, or ``None`` when unreachable."""
    try:
        import grpc
    except ImportError:
        return None
    channel = grpc.aio.insecure_channel(address)
    try:
        async with asyncio.timeout(2):
            await channel.channel_ready()
    except BaseException:
        await channel.close()
        raise
    return channel


def _metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """Call metadata for a session service that requires a shared token."""
    return (("authorization", f"Bearer {token}"),) if token else ()


async def watch_session(channel: Any, session_id: str, progress: Progress,
                        token: str | None = None) -> bool:
    """Follow a session's steps through gRPC ``WatchSession``; ``False`` if unavailable."""
    try:
        import grpc

        from aip_grpc import session_api_pb2, session_api_pb2_grpc
    except ImportError:
        return False
    if channel is None:
        return False
    stub = session_api_pb2_grpc.SessionApiStub(channel)
    try:
        async for update in stub.WatchSession(
            session_api_pb2.WatchSessionRequest(session_id=session_id),
            metadata=_metadata(token),
        ):
            info = update.session
            detail = json.loads(update.detail_json) if update.detail_json else None
            if update.kind == session_api_pb2.UPDATE_KIND_WATCHING:
                progress.watching(info.steps_done, info.steps_total, info.queue_position)
            elif update.kind == session_api_pb2.UPDATE_KIND_QUEUED:
                progress.queued(int((detail or {}).get("position", 0)))
            elif update.kind == session_api_pb2.UPDATE_KIND_STARTED:
                progress.session_started()
            elif update.kind == session_api_pb2.UPDATE_KIND_COMMAND_SENT:
                progress.command_sent(update.response_id, detail or [], info.steps_total)
            elif update.kind == session_api_pb2.UPDATE_KIND_RESULTS_RECEIVED:
                progress.results_received(update.response_id, detail or [],
                                          info.steps_total)
            elif update.kind == session_api_pb2.UPDATE_KIND_MODEL_TURN:
                progress.model_turn(detail if isinstance(detail, dict) else {})
            elif update.kind == session_api_pb2.UPDATE_KIND_ENDED:
                return True
    except grpc.aio.AioRpcError:
        return False
    return True


async def devices_grpc(address: str, token: str | None) -> list[dict[str, Any]] | None:
    """The devices the session service lists, or ``None`` when it cannot be asked."""
    try:
        import grpc

        from aip_grpc import session_api_pb2, session_api_pb2_grpc
    except ImportError:
        return None
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            async with asyncio.timeout(2):
                await channel.channel_ready()
            stub = session_api_pb2_grpc.SessionApiStub(channel)
            reply = await stub.ListDevices(session_api_pb2.ListDevicesRequest(), timeout=5,
                                           metadata=_metadata(token))
        except (TimeoutError, grpc.aio.AioRpcError):
            return None
    return [{"device_id": d.device_id, "platform": d.platform,
             "active_sessions": d.active_sessions, "running_sessions": d.running_sessions,
             "queued_sessions": d.queued_sessions, "gateway_id": d.gateway_id,
             "device_info": json.loads(d.device_info_json) if d.device_info_json else None}
            for d in reply.devices]


async def cancel_session(address: str, session_id: str, token: str | None,
                         reason: str, timeout: float = 3.0) -> str:
    """Cancel a session through gRPC ``CancelSession``, within ``timeout`` seconds in all.

    Returns what happened, for the user: the session's state after the call, or why it
    could not be cancelled this way.
    """
    if not address:
        return "not cancelled through the session service (--session-service is off)"
    try:
        import grpc

        from aip_grpc import session_api_pb2, session_api_pb2_grpc
    except ImportError:
        return "not cancelled through the session service (grpc is not installed)"
    try:
        async with asyncio.timeout(timeout), grpc.aio.insecure_channel(address) as channel:
            stub = session_api_pb2_grpc.SessionApiStub(channel)
            info = await stub.CancelSession(
                session_api_pb2.CancelSessionRequest(session_id=session_id, reason=reason),
                metadata=_metadata(token))
    except TimeoutError:
        return f"the session service at {address} did not answer within {timeout:g}s"
    except grpc.aio.AioRpcError as exc:
        return f"the session service refused to cancel it: {exc.code().name} {exc.details()}"
    state = session_api_pb2.SessionState.Name(info.state).removeprefix("SESSION_STATE_")
    return f"is {state.lower()}"
