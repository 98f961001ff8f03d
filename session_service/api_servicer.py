"""The public gRPC API: what backends call to start, watch, read and cancel sessions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc

from aip_grpc import link_pb2, session_api_pb2, session_api_pb2_grpc
from aip_wire.frames import dumps
from aip_wire.names import sanitize_task_name
from session_service.presence import ClientRecord, Presence
from session_service.sessions import (
    CANCELLED,
    COMPLETED,
    FAILED,
    REQUESTER_NAMES,
    RUNNING,
    Session,
    SessionManager,
    SessionRejected,
    Update,
)

STATES = {
    RUNNING: session_api_pb2.SESSION_STATE_RUNNING,
    COMPLETED: session_api_pb2.SESSION_STATE_COMPLETED,
    FAILED: session_api_pb2.SESSION_STATE_FAILED,
    CANCELLED: session_api_pb2.SESSION_STATE_CANCELLED,
}
REJECTION_CODES = {
    "exists": grpc.StatusCode.ALREADY_EXISTS,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
}


def session_info(session: Session, replica_id: str) -> session_api_pb2.SessionInfo:
    return session_api_pb2.SessionInfo(
        session_id=session.session_id,
        task_name=session.task_name,
        device_id=session.device_id,
        requester_id=session.requester_id,
        requester_kind=REQUESTER_NAMES.get(session.requester_kind, ""),
        state=STATES[session.state],
        result_json="" if session.running else dumps(session.result).decode(),
        error=session.error or "",
        cancel_reason=session.cancel_reason or "",
        created_at=session.created_at,
        ended_at=session.ended_at or 0.0,
        steps_done=session.steps_done,
        steps_total=session.steps_total,
        replica_id=replica_id,
    )


class SessionApiServicer(session_api_pb2_grpc.SessionApiServicer):
    def __init__(self, replica_id: str, manager: SessionManager, presence: Presence) -> None:
        self.replica_id = replica_id
        self.manager = manager
        self.presence = presence

    def _info(self, session: Session) -> session_api_pb2.SessionInfo:
        return session_info(session, self.replica_id)

    async def _session(self, session_id: str, context: grpc.aio.ServicerContext) -> Session:
        session = self.manager.sessions.get(session_id)
        if session is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"No session '{session_id}'")
        assert session is not None
        return session

    async def StartSession(
        self, request: session_api_pb2.StartSessionRequest, context: grpc.aio.ServicerContext
    ) -> session_api_pb2.SessionInfo:
        if not request.device_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "device_id is required")
        if not request.request.strip():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request must not be empty")
        try:
            session = self.manager.submit(
                session_id=request.session_id or str(uuid.uuid4()),
                task_name=sanitize_task_name(request.task_name),
                request=request.request,
                device_id=request.device_id,
                requester_id=request.requester_id or "backend",
                requester_kind=link_pb2.REQUESTER_KIND_BACKEND,
                origin_gateway="",
            )
        except SessionRejected as exc:
            await context.abort(REJECTION_CODES.get(exc.code, grpc.StatusCode.ABORTED), str(exc))
        self.manager.start(session)
        return self._info(session)

    async def WatchSession(
        self, request: session_api_pb2.WatchSessionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[session_api_pb2.SessionUpdate]:
        session = await self._session(request.session_id, context)
        if not session.running:
            yield session_api_pb2.SessionUpdate(kind="ended", session=self._info(session))
            return
        queue: asyncio.Queue[Update] = asyncio.Queue()
        session.watchers.add(queue)
        try:
            yield session_api_pb2.SessionUpdate(kind="watching", session=self._info(session))
            while True:
                update = await queue.get()
                yield session_api_pb2.SessionUpdate(
                    kind=update.kind,
                    session=self._info(session),
                    response_id=update.response_id,
                    detail_json=dumps(update.detail).decode()
                    if update.detail is not None else "",
                )
                if update.kind == "ended":
                    return
        finally:
            session.watchers.discard(queue)

    async def GetSession(
        self, request: session_api_pb2.GetSessionRequest, context: grpc.aio.ServicerContext
    ) -> session_api_pb2.SessionInfo:
        if request.session_id:
            return self._info(await self._session(request.session_id, context))
        if request.task_name:
            session = self.manager.find_by_task_name(request.task_name)
            if session is None:
                await context.abort(
                    grpc.StatusCode.NOT_FOUND, f"No session with task_name '{request.task_name}'"
                )
            assert session is not None
            return self._info(session)
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "give session_id or task_name")
        raise AssertionError("unreachable")

    async def ListSessions(
        self, request: session_api_pb2.ListSessionsRequest, context: grpc.aio.ServicerContext
    ) -> session_api_pb2.ListSessionsResponse:
        sessions = self.manager.list(request.device_id, request.running_only,
                                     request.limit or 100)
        return session_api_pb2.ListSessionsResponse(sessions=[self._info(s) for s in sessions])

    async def CancelSession(
        self, request: session_api_pb2.CancelSessionRequest, context: grpc.aio.ServicerContext
    ) -> session_api_pb2.SessionInfo:
        session = await self._session(request.session_id, context)
        self.manager.cancel(session.session_id, request.reason or "requested")
        try:
            await asyncio.wait_for(session.ended.wait(), timeout=5.0)
        except TimeoutError:
            pass
        return self._info(session)

    def _device(self, record: ClientRecord) -> session_api_pb2.Device:
        return session_api_pb2.Device(
            device_id=record.client_id,
            platform=record.platform,
            gateway_id=record.gateway_id,
            device_info_json=dumps(record.device_info).decode(),
            active_sessions=self.manager.active_on(record.client_id),
        )

    async def ListDevices(
        self, request: session_api_pb2.ListDevicesRequest, context: grpc.aio.ServicerContext
    ) -> session_api_pb2.ListDevicesResponse:
        return session_api_pb2.ListDevicesResponse(
            devices=[self._device(record) for record in self.presence.devices()]
        )

    async def GetDevice(
        self, request: session_api_pb2.GetDeviceRequest, context: grpc.aio.ServicerContext
    ) -> session_api_pb2.Device:
        record = self.presence.device(request.device_id)
        if record is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"Device '{request.device_id}' is not connected"
            )
        assert record is not None
        return self._device(record)
