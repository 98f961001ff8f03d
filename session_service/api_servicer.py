"""The public gRPC API: what backends call to start, watch, read and cancel sessions.

A session this replica holds in memory is answered from memory; any other is looked up in
the session store (in a worker thread), so records outlive the requester, the memory
retention and the process.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

from aip_grpc import session_api_pb2, session_api_pb2_grpc
from aip_wire.frames import dumps
from aip_wire.names import sanitize_task_name
from aip_wire.vocab import RejectionCode, RequesterKind
from session_service.presence import ClientRecord, Presence
from session_service.sessions import (
    CANCELLED,
    COMPLETED,
    FAILED,
    RUNNING,
    CommandEntry,
    Session,
    SessionManager,
    SessionRejected,
    Update,
)
from session_service.store import CommandRecord, SessionRecord, SessionStore

log = logging.getLogger("aip.session.api")
T = TypeVar("T")

STATES = {
    RUNNING: session_api_pb2.SESSION_STATE_RUNNING,
    COMPLETED: session_api_pb2.SESSION_STATE_COMPLETED,
    FAILED: session_api_pb2.SESSION_STATE_FAILED,
    CANCELLED: session_api_pb2.SESSION_STATE_CANCELLED,
}
REJECTION_CODES = {
    RejectionCode.EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    RejectionCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    RejectionCode.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    RejectionCode.DRAINING: grpc.StatusCode.UNAVAILABLE,
    RejectionCode.LIMIT: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
STORED_STATES = {**STATES, "": session_api_pb2.SESSION_STATE_UNSPECIFIED}


def session_info(session: Session, replica_id: str) -> session_api_pb2.SessionInfo:
    return session_api_pb2.SessionInfo(
        session_id=session.session_id,
        task_name=session.task_name,
        device_id=session.device_id,
        requester_id=session.requester_id,
        requester_kind=session.requester_kind,
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


def _json_or_empty(value: Any) -> str:
    return dumps(value).decode() if value is not None else ""


def live_commands(entries: list[CommandEntry]) -> list[session_api_pb2.CommandRecord]:
    return [session_api_pb2.CommandRecord(
        seq=entry.seq,
        response_id=entry.response_id,
        actions_json=_json_or_empty(entry.actions),
        sent_at=entry.sent_at,
        status=entry.status,
        results_json=_json_or_empty(entry.results),
        received_at=entry.received_at or 0.0,
    ) for entry in entries]


def stored_commands(records: list[CommandRecord]) -> list[session_api_pb2.CommandRecord]:
    return [session_api_pb2.CommandRecord(
        seq=record.seq,
        response_id=record.response_id,
        actions_json=record.actions_json,
        sent_at=record.sent_at,
        status=record.status,
        results_json=record.results_json or "",
        received_at=record.received_at or 0.0,
    ) for record in records]


def stored_info(record: SessionRecord, detailed: bool = False) -> session_api_pb2.SessionInfo:
    """A stored session; ``detailed`` adds the request and the command log."""
    info = session_api_pb2.SessionInfo(
        session_id=record.session_id,
        task_name=record.task_name,
        device_id=record.device_id,
        requester_id=record.requester_id,
        requester_kind=record.requester_kind,
        state=STORED_STATES.get(record.state, session_api_pb2.SESSION_STATE_UNSPECIFIED),
        result_json=record.result_json or "" if record.state != RUNNING else "",
        error=record.error or "",
        cancel_reason=record.cancel_reason or "",
        created_at=record.created_at,
        ended_at=record.ended_at or 0.0,
        steps_done=record.steps_done,
        steps_total=record.steps_total,
        replica_id=record.replica_id,
        stored=True,
    )
    if detailed:
        info.request = record.request
        info.commands.extend(stored_commands(record.commands))
    return info


def _past_updates(session: Session) -> list[Update]:
    """The session's commands so far as the updates a watcher would have seen."""
    updates = []
    for entry in session.commands:
        updates.append(Update("command_sent", entry.response_id, entry.actions))
        if entry.received_at is not None:
            updates.append(Update("results_received", entry.response_id, entry.results))
    return updates


class SessionApiServicer(session_api_pb2_grpc.SessionApiServicer):
    def __init__(self, replica_id: str, manager: SessionManager, presence: Presence,
                 store: SessionStore | None = None) -> None:
        self.replica_id = replica_id
        self.manager = manager
        self.presence = presence
        self.store = store

    def _info(self, session: Session) -> session_api_pb2.SessionInfo:
        return session_info(session, self.replica_id)

    def _detailed(self, session: Session) -> session_api_pb2.SessionInfo:
        info = self._info(session)
        info.request = session.request
        info.commands.extend(live_commands(session.commands))
        return info

    async def _read(self, context: grpc.aio.ServicerContext,
                    read: Callable[[SessionStore], T]) -> T | None:
        """One store read in a worker thread; ``None`` without a store. A failing read
        is logged and answered UNAVAILABLE."""
        store = self.store
        if store is None:
            return None
        try:
            return await asyncio.to_thread(read, store)
        except Exception as exc:
            log.exception("session store read failed")
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"session store: {exc}")
            raise AssertionError("unreachable") from exc

    async def _stored(self, session_id: str, context: grpc.aio.ServicerContext,
                      with_commands: bool = False) -> SessionRecord:
        record = await self._read(context, lambda store: store.get(session_id, with_commands))
        if record is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"No session '{session_id}'")
        assert record is not None
        return record

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
                requester_kind=RequesterKind.BACKEND,
                origin_gateway="",
            )
        except SessionRejected as exc:
            await context.abort(REJECTION_CODES.get(exc.code, grpc.StatusCode.ABORTED), str(exc))
        self.manager.start(session)
        return self._info(session)

    def _update(self, session: Session, update: Update) -> session_api_pb2.SessionUpdate:
        return session_api_pb2.SessionUpdate(
            kind=update.kind,
            session=self._info(session),
            response_id=update.response_id,
            detail_json=dumps(update.detail).decode() if update.detail is not None else "",
        )

    async def WatchSession(
        self, request: session_api_pb2.WatchSessionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[session_api_pb2.SessionUpdate]:
        session = self.manager.sessions.get(request.session_id)
        if session is None:
            record = await self._stored(request.session_id, context)
            yield session_api_pb2.SessionUpdate(kind="ended", session=stored_info(record))
            return
        if not session.running:  # its command log is in GetSession
            yield session_api_pb2.SessionUpdate(kind="ended", session=self._info(session))
            return
        queue: asyncio.Queue[Update] = asyncio.Queue()
        session.watchers.add(queue)
        # Taken in the same step as the subscription: every event is either in this
        # replay or in the queue, never in both.
        past = _past_updates(session)
        try:
            yield session_api_pb2.SessionUpdate(kind="watching", session=self._info(session))
            for update in past:
                yield self._update(session, update)
            while True:
                update = await queue.get()
                yield self._update(session, update)
                if update.kind == "ended":
                    return
        finally:
            session.watchers.discard(queue)

    async def GetSession(
        self, request: session_api_pb2.GetSessionRequest, context: grpc.aio.ServicerContext
    ) -> session_api_pb2.SessionInfo:
        if request.session_id:
            session = self.manager.sessions.get(request.session_id)
            if session is not None:
                return self._detailed(session)
            return stored_info(await self._stored(request.session_id, context, True), True)
        if request.task_name:
            task_name = request.task_name
            session = self.manager.find_by_task_name(task_name)
            if session is not None:
                return self._detailed(session)
            record = await self._read(context, lambda store: store.find_by_task_name(task_name))
            if record is None:
                await context.abort(
                    grpc.StatusCode.NOT_FOUND, f"No session with task_name '{task_name}'"
                )
            assert record is not None
            return stored_info(record, True)
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "give session_id or task_name")
        raise AssertionError("unreachable")

    async def ListSessions(
        self, request: session_api_pb2.ListSessionsRequest, context: grpc.aio.ServicerContext
    ) -> session_api_pb2.ListSessionsResponse:
        limit = request.limit or 100
        live = [self._info(s) for s in self.manager.list(request.device_id,
                                                         request.running_only, limit)]
        # This replica's own records, plus every replica's when asked: a replica with a
        # stable --replica-id sees its history across restarts.
        replica_id = None if request.include_other_replicas else self.replica_id
        stored = await self._read(context, lambda store: store.list(
            request.device_id, request.running_only, limit, replica_id)) or []
        # A session this replica holds in memory is described by memory alone, even when
        # the filter left it out: its record may lag behind by a commit interval.
        known = self.manager.sessions
        merged = live + [stored_info(r) for r in stored if r.session_id not in known]
        merged.sort(key=lambda info: info.created_at, reverse=True)
        return session_api_pb2.ListSessionsResponse(sessions=merged[:limit])

    async def CancelSession(
        self, request: session_api_pb2.CancelSessionRequest, context: grpc.aio.ServicerContext
    ) -> session_api_pb2.SessionInfo:
        session = self.manager.sessions.get(request.session_id)
        if session is None:  # ended long ago, maybe in another process: nothing to cancel
            return stored_info(await self._stored(request.session_id, context))
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
