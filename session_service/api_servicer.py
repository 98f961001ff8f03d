"""The public gRPC API: what backends call to start, watch, read and cancel sessions.

A session this replica holds in memory is answered from memory; any other is looked up in
the session store (in a worker thread), so records outlive the requester, the memory
retention and the process. A running session of another replica is watched and cancelled at
its owner (:mod:`session_service.api_forward`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import grpc

from aip_grpc import session_api_pb2, session_api_pb2_grpc
from aip_runtime import tracing
from aip_wire.names import sanitize_task_name
from aip_wire.vocab import CancelReason, RequesterKind, SessionState
from session_service.agents.plan import PlanError, parse_plan
from session_service.agents.selection import LLM, PLAN, AgentChoiceError, select_agent
from session_service.api_errors import (
    ApiError,
    Reason,
    abort,
    invalid,
    not_found,
    rejected,
)
from session_service.api_forward import Owners
from session_service.api_pages import (
    MAX_KEY_LENGTH,
    Filters,
    IdempotencyKeys,
    Row,
    page_size,
    select_page,
    unwrap_token,
    wrap_token,
)
from session_service.api_views import (
    STATE_NAMES,
    detailed_info,
    device_of,
    restore_results,
    session_info,
    snapshot,
    stored_info,
    update_of,
)
from session_service.core.decisions import AlreadyYours, SessionRejected
from session_service.core.manager import SessionManager
from session_service.core.session import Session, Update, UpdateKind
from session_service.presence import ClientRecord, Presence
from session_service.records import SessionRecord
from session_service.store import SessionStore

log = logging.getLogger("aip.session.api")

T = TypeVar("T")

#: The full name of the service, for health checks and reflection.
SERVICE_NAME: str = session_api_pb2.DESCRIPTOR.services_by_name["SessionApi"].full_name


def admission_problems(request: session_api_pb2.StartSessionRequest,
                       llm_configured: bool = False) -> list[tuple[str, str]]:
    """What is wrong with a StartSession request, as ``(field, description)`` pairs;
    empty when it may start. Pure: the agent is chosen as the manager will choose it
    (:func:`~session_service.agents.selection.select_agent`), and a request for the plan
    agent is parsed as it will parse it, so a request refused here is one the agent
    would have failed. Any non-empty request may go to the llm agent."""
    problems = []
    if not request.device_id:
        problems.append(("device_id", "required"))
    agent = ""
    try:
        agent = select_agent(request.request, request.agent, llm_configured=llm_configured)
    except AgentChoiceError as exc:
        problems.append(("agent", str(exc)))
    if request.model and agent != LLM:
        problems.append(("model", "only the llm agent uses a model"))
    if len(request.model) > MAX_KEY_LENGTH:
        problems.append(("model", f"longer than {MAX_KEY_LENGTH} characters"))
    if not request.request.strip():
        problems.append(("request", "required"))
    elif agent == PLAN:
        try:
            parse_plan(request.request)
        except PlanError as exc:
            problems.append(("request", str(exc)))
    if len(request.idempotency_key) > MAX_KEY_LENGTH:
        problems.append(("idempotency_key",
                         f"longer than {MAX_KEY_LENGTH} characters"))
    return problems


def _past_updates(session: Session) -> list[Update]:
    """The session's commands and model turns so far, in the order they happened, as
    the updates a watcher would have seen."""
    timed: list[tuple[float, Update]] = []
    for entry in session.commands:
        timed.append((entry.sent_at, Update(UpdateKind.COMMAND_SENT, entry.response_id,
                                            entry.actions)))
        if entry.received_at is not None:
            timed.append((entry.received_at, Update(UpdateKind.RESULTS_RECEIVED,
                                                    entry.response_id, entry.results)))
    for turn in session.turns:
        at = turn.get("at")
        timed.append((at if isinstance(at, (int, float)) else 0.0,
                      Update(UpdateKind.MODEL_TURN, "", turn)))
    timed.sort(key=lambda pair: pair[0])  # stable: a command's results follow it
    return [update for _, update in timed]


class SessionApiServicer(session_api_pb2_grpc.SessionApiServicer):
    def __init__(self, replica_id: str, manager: SessionManager, presence: Presence,
                 store: SessionStore | None = None, owners: Owners | None = None) -> None:
        self.replica_id = replica_id
        self.manager = manager
        self.presence = presence
        self.store = store
        #: How calls about another replica's running session reach it.
        self.owners = owners
        self.idempotency = IdempotencyKeys()

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
            await abort(context, ApiError(grpc.StatusCode.UNAVAILABLE,
                                          Reason.STORE_UNAVAILABLE, f"session store: {exc}"))

    async def _stored(self, session_id: str, context: grpc.aio.ServicerContext,
                      with_commands: bool = False) -> SessionRecord:
        record = await self._read(context, lambda store: store.get(session_id, with_commands))
        if record is None:
            await abort(context, not_found(f"No session '{session_id}'"))
        return record

    async def StartSession(
        self, request: session_api_pb2.StartSessionRequest, context: grpc.aio.ServicerContext
    ) -> session_api_pb2.SessionInfo:
        problems = admission_problems(request, self.manager.settings.llm is not None)
        if problems:  # before anything is recorded or sent
            await abort(context, invalid(problems))
        requester_id = request.requester_id or "backend"
        key = request.idempotency_key
        first = self.idempotency.get(requester_id, key)
        if first is not None:
            return await self._first_session(first, context)
        if self.presence.device(request.device_id) is None:
            await self.presence.wait_device(request.device_id,
                                            self.manager.settings.device_wait)
            # Looked up again in the same step as the submission (see below).
            first = self.idempotency.get(requester_id, key)
            if first is not None:
                return await self._first_session(first, context)
        try:
            session = self.manager.submit(
                session_id=request.session_id or str(uuid.uuid4()),
                task_name=sanitize_task_name(request.task_name),
                request=request.request,
                device_id=request.device_id,
                requester_id=requester_id,
                requester_kind=RequesterKind.BACKEND,
                origin_gateway="",
                agent_name=request.agent or None,
                model=request.model,
                idempotency_key=key,
                traceparent=tracing.from_metadata(context.invocation_metadata()),
            )
        except AlreadyYours as exc:  # this requester's retry: the first session
            return self._existing(exc)
        except SessionRejected as exc:
            await abort(context, rejected(exc.code, str(exc)))
        # Kept in the same step as the submission: a concurrent retry with this key
        # finds this session rather than starting a second one.
        self.idempotency.put(requester_id, key, session.session_id)
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
            self.idempotency.forget(requester_id, key, session.session_id)
            if isinstance(refusal, AlreadyYours):  # the store knew the id as its own
                return self._existing(refusal)
            await abort(context, rejected(refusal.code, str(refusal)))
        return self._info(session)

    def _existing(self, retry: AlreadyYours) -> session_api_pb2.SessionInfo:
        """The session a requester's retry with its own id finds, live or recorded."""
        existing = retry.existing
        if isinstance(existing, Session):
            return self._info(existing)
        return stored_info(existing)

    async def _first_session(self, session_id: str,
                             context: grpc.aio.ServicerContext) -> session_api_pb2.SessionInfo:
        """The session an idempotency key started, from memory or the store."""
        session = self.manager.sessions.get(session_id)
        if session is not None:
            return self._info(session)
        return stored_info(await self._stored(session_id, context))

    def _update(self, session: Session, update: Update) -> session_api_pb2.SessionUpdate:
        return update_of(session, update, self.replica_id)

    async def WatchSession(
        self, request: session_api_pb2.WatchSessionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[session_api_pb2.SessionUpdate]:
        session = self.manager.sessions.get(request.session_id)
        if session is None:
            record = await self._stored(request.session_id, context)
            if self.owners is not None and self.owners.runs_elsewhere(record, context):
                async for relayed in self.owners.watch(request, record, context):
                    yield relayed
                return
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
                await abort(context, not_found(f"No session with task_name '{task_name}'"))
            return stored_info(record, True)
        await abort(context, invalid([("session_id", "give session_id or task_name")]))

    async def ListSessions(
        self, request: session_api_pb2.ListSessionsRequest, context: grpc.aio.ServicerContext
    ) -> session_api_pb2.ListSessionsResponse:
        state = "" if not request.state else STATE_NAMES.get(request.state)
        if state is None:
            await abort(context, invalid([("state", "not a session state")]))
        if request.running_only:
            if state not in ("", SessionState.RUNNING):
                await abort(context, invalid([("running_only", "contradicts state")]))
            state = SessionState.RUNNING
        filters = Filters(request.device_id, state or "", request.requester_id,
                          request.task_name, request.replica_id)
        size = page_size(request.page_size)
        try:
            if self.store is None:
                return self._memory_page(filters, request.page_token, size)
            cursor = unwrap_token(request.page_token, filters)
        except ApiError as error:
            await abort(context, error)
        try:
            found, next_cursor = await self.manager.page(filters.stored(), size, cursor)
        except Exception as exc:
            log.exception("session store read failed")
            await abort(context, ApiError(grpc.StatusCode.UNAVAILABLE,
                                          Reason.STORE_UNAVAILABLE, f"session store: {exc}"))
        # A session this replica holds is described from memory: its record may lag
        # behind by a commit interval.
        return session_api_pb2.ListSessionsResponse(
            sessions=[self._info(s) if isinstance(s, Session) else stored_info(s)
                      for s in found],
            next_page_token=wrap_token(next_cursor, filters))

    def _memory_page(self, filters: Filters, token: str,
                     size: int) -> session_api_pb2.ListSessionsResponse:
        """A page of this replica's memory, for a replica without a store."""
        live = {s.session_id: s for s in self.manager.sessions.values()}
        rows = (Row(s.session_id, s.created_at, s.device_id, s.state, s.requester_id,
                    s.task_name, self.replica_id) for s in live.values())
        page, next_token = select_page(rows, filters, token, size)
        return session_api_pb2.ListSessionsResponse(
            sessions=[self._info(live[row.session_id]) for row in page],
            next_page_token=next_token)

    async def CancelSession(
        self, request: session_api_pb2.CancelSessionRequest, context: grpc.aio.ServicerContext
    ) -> session_api_pb2.SessionInfo:
        session = self.manager.sessions.get(request.session_id)
        if session is None:
            record = await self._stored(request.session_id, context)
            if self.owners is not None and self.owners.runs_elsewhere(record, context):
                return await self.owners.cancel(request, record, context)
            return stored_info(record)  # ended: nothing to cancel
        self.manager.cancel(session.session_id, request.reason or CancelReason.REQUESTED)
        try:
            # Until the end is in the store too, so that any replica's next read (a
            # ListSessions by state, say) already agrees with this answer.
            async with asyncio.timeout(5.0):
                await session.ended.wait()
                await session.end_recorded.wait()
        except TimeoutError:
            pass
        return self._info(session)

    async def _devices(self, records: list[ClientRecord],
                       context: grpc.aio.ServicerContext) -> list[session_api_pb2.Device]:
        """The devices with their running and queued sessions counted over every
        replica: this one's from memory, the others' from the store."""
        elsewhere = await self._read(context, SessionStore.live_elsewhere) or {}
        here = self.manager.live_counts()
        devices = []
        for record in records:
            running, queued = here.get(record.client_id, (0, 0))
            more_running, more_queued = elsewhere.get(record.client_id, (0, 0))
            devices.append(device_of(record, running + more_running, queued + more_queued))
        return devices

    async def ListDevices(
        self, request: session_api_pb2.ListDevicesRequest, context: grpc.aio.ServicerContext
    ) -> session_api_pb2.ListDevicesResponse:
        return session_api_pb2.ListDevicesResponse(
            devices=await self._devices(self.presence.devices(), context))

    async def GetDevice(
        self, request: session_api_pb2.GetDeviceRequest, context: grpc.aio.ServicerContext
    ) -> session_api_pb2.Device:
        record = self.presence.device(request.device_id)
        if record is None:
            await abort(context, not_found(f"Device '{request.device_id}' is not connected",
                                           Reason.DEVICE_NOT_CONNECTED))
        [device] = await self._devices([record], context)
        return device


def add_to_server(servicer: SessionApiServicer, server: grpc.aio.Server) -> None:
    session_api_pb2_grpc.add_SessionApiServicer_to_server(servicer, server)


