"""The public gRPC API: what backends call to start, watch, read and cancel sessions.

A session this replica holds in memory is answered from memory; any other is looked up in
the session store (in a worker thread), so records outlive the requester, the memory
retention and the process. The standard health service and reflection are set up here
too, since they are what probes and tools see of the replica.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from aip_grpc import session_api_pb2, session_api_pb2_grpc
from aip_wire.names import sanitize_task_name
from aip_wire.vocab import CancelReason, RequesterKind
from session_service.api_views import (
    detailed_info,
    device_of,
    restore_results,
    session_info,
    snapshot,
    status_code,
    stored_info,
    update_of,
)
from session_service.core.decisions import SessionRejected
from session_service.core.manager import SessionManager
from session_service.core.session import Session, Update, UpdateKind
from session_service.presence import ClientRecord, Presence
from session_service.records import SessionRecord
from session_service.store import SessionStore

log = logging.getLogger("aip.session.api")
T = TypeVar("T")

#: The full name of the service, for health checks and reflection.
SERVICE_NAME: str = session_api_pb2.DESCRIPTOR.services_by_name["SessionApi"].full_name


def _past_updates(session: Session) -> list[Update]:
    """The session's commands so far as the updates a watcher would have seen."""
    updates = []
    for entry in session.commands:
        updates.append(Update(UpdateKind.COMMAND_SENT, entry.response_id, entry.actions))
        if entry.received_at is not None:
            updates.append(Update(UpdateKind.RESULTS_RECEIVED, entry.response_id, entry.results))
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
        return detailed_info(session, self.replica_id)

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
            await context.abort(status_code(exc.code), str(exc))
        # Answered once the session's record is durable. The manager starts the session
        # then even if this call was cancelled meanwhile: it has a record, so it runs.
        answered: asyncio.Future[SessionRejected | None] = \
            asyncio.get_running_loop().create_future()

        def announce(refusal: SessionRejected | None) -> None:
            if not answered.done():
                answered.set_result(refusal)

        self.manager.accept(session, announce)
        refusal = await answered
        if refusal is not None:
            await context.abort(status_code(refusal.code), str(refusal))
        return self._info(session)

    def _update(self, session: Session, update: Update) -> session_api_pb2.SessionUpdate:
        return update_of(session, update, self.replica_id)

    async def WatchSession(
        self, request: session_api_pb2.WatchSessionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[session_api_pb2.SessionUpdate]:
        session = self.manager.sessions.get(request.session_id)
        if session is None:
            record = await self._stored(request.session_id, context)
            yield snapshot(UpdateKind.ENDED, stored_info(record))
            return
        if not session.running:  # its command log is in GetSession
            yield snapshot(UpdateKind.ENDED, self._info(session))
            return
        queue: asyncio.Queue[Update] = asyncio.Queue()
        session.watchers.add(queue)
        # Taken in the same step as the subscription: every event is either in this
        # replay or in the queue, never in both.
        past = _past_updates(session)
        try:
            yield snapshot(UpdateKind.WATCHING, self._info(session))
            for update in past:
                yield self._update(session, update)
            while True:
                update = await queue.get()
                yield self._update(session, update)
                if update.kind is UpdateKind.ENDED:
                    return
        finally:
            session.watchers.discard(queue)

    async def GetSession(
        self, request: session_api_pb2.GetSessionRequest, context: grpc.aio.ServicerContext
    ) -> session_api_pb2.SessionInfo:
        if request.session_id:
            session = self.manager.sessions.get(request.session_id)
            if session is not None:
                info = self._detailed(session)
                if session.released and self.store is not None:
                    # Results it gave back to its memory budget are in the store.
                    record = await self._read(
                        context, lambda store: store.get(request.session_id, True))
                    if record is not None:
                        restore_results(info, record.commands, session.released)
                return info
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
        self.manager.cancel(session.session_id, request.reason or CancelReason.REQUESTED)
        try:
            await asyncio.wait_for(session.ended.wait(), timeout=5.0)
        except TimeoutError:
            pass
        return self._info(session)

    def _device(self, record: ClientRecord) -> session_api_pb2.Device:
        return device_of(record, self.manager.active_on(record.client_id))

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


def add_to_server(servicer: SessionApiServicer, server: grpc.aio.Server) -> None:
    session_api_pb2_grpc.add_SessionApiServicer_to_server(servicer, server)


class Health:
    """The standard health service and reflection for ``service_names``; part of the
    public surface because backends and orchestrators probe it."""

    def __init__(self, server: grpc.aio.Server, service_names: tuple[str, ...]) -> None:
        self.service_names = service_names
        self._servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)
        reflection.enable_server_reflection(
            (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )

    async def serving(self, ok: bool = True) -> None:
        """Every service SERVING, or NOT_SERVING when not ``ok`` (the store cannot write);
        nothing changes once the graceful shutdown has begun."""
        status = (health_pb2.HealthCheckResponse.SERVING if ok
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", *self.service_names):
            await self._servicer.set(name, status)

    async def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING from now on, whatever is set later."""
        await self._servicer.enter_graceful_shutdown()


def probe(address: str = "127.0.0.1:50051", timeout: float = 3.0) -> int:
    """A container health check's exit status: 0 when the replica at ``address`` says
    SERVING, 1 otherwise (draining, unreachable, or no answer within ``timeout``)."""
    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError:
            return 1
    return 0 if answer.status == health_pb2.HealthCheckResponse.SERVING else 1
