"""Every session of this replica: admitting, running, cancelling, ending, forgetting.

The manager orchestrates; the rules live elsewhere. Admission and the audience of an end
are :mod:`~session_service.core.decisions`, every state change goes through the
session's :class:`~session_service.core.lifecycle.Lifecycle`, and the outside world is
reached through the :mod:`~session_service.core.ports` only. However a session ends, the
end is handled in one place, :meth:`SessionManager._finish`.

A session is acked to its requester only once its creation is durable in the record
sink (:meth:`SessionManager.accept`): the ack is a promise that the session has a record.
A replica whose store cannot write refuses new sessions with ``unavailable`` rather than
break that promise, but the sessions it runs still run and end for their requesters:
every other write is queued, never awaited, so the store can neither slow nor break a
running session. Ended sessions stay in memory within ``--ended-memory-bytes`` (and
``--max-records``, ``--record-retention``); older ones are read from the store.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable
from typing import Any

from aip_runtime import log_context, tracing
from aip_wire import frames
from aip_wire.vocab import (
    CancelReason,
    ClientType,
    CommandStatus,
    RequesterKind,
    SessionState,
    Status,
)
from session_service import metrics
from session_service.agents import AGENTS
from session_service.agents.selection import select_agent
from session_service.core import decisions, spans
from session_service.core.context import AgentSessionContext
from session_service.core.device_queue import Verdict
from session_service.core.lifecycle import (
    AgentCrashed,
    AgentEnd,
    AgentReturned,
    AgentStopped,
    CancelDecision,
    DeadlinePassed,
)
from session_service.core.ports import GatewayPort, NullRecords, RecordReader, RecordSink
from session_service.core.queries import SessionQueries
from session_service.core.retention import EndedSessions, Held, estimated_bytes
from session_service.core.reuse import answer_reuse
from session_service.core.session import Session, Update, UpdateKind
from session_service.core.stopping import Stopping
from session_service.core.waiting import WaitingRoom
from session_service.dispatcher import CommandDispatcher
from session_service.presence import Presence
from session_service.records import Claim
from session_service.settings import SessionSettings

log = logging.getLogger("aip.session")


class SessionManager(SessionQueries, Stopping):
    """Every session of this replica, running or recently ended."""

    def __init__(
        self,
        settings: SessionSettings,
        presence: Presence,
        gateways: GatewayPort,
        records: RecordSink | None = None,
        replica_id: str = "",
        reader: RecordReader | None = None,
    ) -> None:
        self.settings = settings
        self.presence = presence
        self.gateways = gateways
        self.records: RecordSink = records if records is not None \
            else NullRecords(settings.queue_limits)
        #: The shared store's reads (every replica's sessions); none without a store.
        self.reader = reader
        self.replica_id = replica_id or settings.replica_id
        self.sessions: dict[str, Session] = {}
        self.ended = EndedSessions(settings.ended_memory_bytes, settings.max_records,
                                   settings.record_retention)
        self.active = 0
        #: The sessions that wait for their device (--max-running-per-device).
        self.waiting = WaitingRoom(
            lambda ids, done: self.records.poll_slots(ids, done), settings.queue_timeout,
            start=self.start,
            expire=lambda s: self._end_waiting(s, CancelReason.QUEUE_TIMEOUT),
            lost=lambda s: self._end_waiting(s, CancelReason.REPLICA_LOST))
        #: Set when the replica drains: new sessions are refused.
        self.draining = False

    # ------------------------------------------------------------------ starting

    def submit(
        self,
        *,
        session_id: str,
        task_name: str,
        request: str,
        device_id: str,
        requester_id: str,
        requester_kind: RequesterKind,
        origin_gateway: str,
        agent_name: str | None = None,
        model: str = "",
        idempotency_key: str = "",
        traceparent: str = "",
    ) -> Session:
        """Admit a session; :meth:`start` runs it once its acceptance is announced.
        ``agent_name`` ``None`` chooses the agent by the request
        (:func:`~session_service.agents.selection.select_agent`).

        :raises ~session_service.core.decisions.SessionRejected: see
            :func:`~session_service.core.decisions.admit`.
        """
        if agent_name is None:
            agent_name = select_agent(request, llm_configured=self.settings.llm is not None)
        existing = self.sessions.get(session_id)
        device = self.presence.device(device_id)
        try:
            admission = decisions.admit(
                session_id=session_id, requester_id=requester_id, device_id=device_id,
                agent_name=agent_name, draining=self.draining,
                existing=None if existing is None
                else decisions.Existing(existing.requester_id, existing.running),
                recordable=self.records.writable, device_connected=device is not None,
                agents=AGENTS,
            )
        except decisions.AlreadyYours as exc:
            exc.existing = existing
            raise
        session = Session(
            session_id=session_id, task_name=task_name, request=request,
            device_id=device_id, platform=device.platform if device is not None else "",
            device_info=device.device_info if device is not None else {},
            requester_id=requester_id, requester_kind=requester_kind,
            origin_gateway=origin_gateway, agent_name=agent_name, model=model,
            idempotency_key=idempotency_key, traceparent=traceparent,
            device_gateway=device.gateway_id if device is not None else "",
        )
        if admission is decisions.Admission.DUPLICATE:
            session.duplicate_of = existing  # answered by :meth:`accept`, never run
            return session
        session.dispatcher = CommandDispatcher(session_id,
                                               lambda frame: self._deliver(session, frame))
        self.sessions[session_id] = session
        self.active += 1
        self._count()
        log.info(
            "session %s (%s) accepted for %s, from %s %s",
            session_id, task_name, device_id, requester_kind, requester_id,
        )
        return session

    def accept(self, session: Session,
               announce: Callable[[decisions.SessionRejected | None], None]) -> None:
        """Record the admitted ``session``; once its record is durable, ``announce(None)``
        (the adapter acks its requester) and start it. If the record cannot be written,
        the session is withdrawn and ``announce`` gets the refusal instead.

        The creation claims the id in the store, which every replica shares: if the id
        is held already, nothing starts and the holder answers (:mod:`~session_service.
        core.reuse`): another requester's id gets ``EXISTS``; the requester's own first
        session gets :class:`~session_service.core.decisions.AlreadyYours` (the public
        API returns its ``existing`` session) or, for a link requester whose session
        ended, an ack and that session's ``task_end`` again.

        A cancel that arrives meanwhile waits for the ack, so that the requester hears
        of the session before its end.
        """
        if session.duplicate_of is not None:
            answer_reuse(session, session.duplicate_of, announce, self.gateways, self.active)
            return
        session.awaiting_record = True
        claim = Claim()
        self.records.record_started(
            session.creation_record(self.replica_id),
            lambda written: self._recorded(session, written, claim, announce), claim)

    def _recorded(self, session: Session, written: bool, claim: Claim,
                  announce: Callable[[decisions.SessionRejected | None], None]) -> None:
        session.awaiting_record = False
        if not written:
            self._withdraw(session)
            metrics.STORE_REFUSED.inc()
            log.error("session %s refused: its record could not be written",
                      session.session_id)
            announce(decisions.unrecordable())
            return
        if claim.winner is not None:
            self._withdraw(session)
            verdict = answer_reuse(session, claim.winner, announce, self.gateways,
                                   self.active)
            log.info("session %s not started: its id is held (%s)", session.session_id,
                     verdict.name.lower())
            return
        if claim.placement.verdict is Verdict.FULL:
            self._withdraw(session)
            log.info("session %s refused: the queue of device %s is full",
                     session.session_id, session.device_id)
            announce(decisions.queue_full(session.device_id,
                                          self.settings.max_queued_per_device))
            return
        announce(None)
        if claim.placement.verdict is Verdict.WAIT \
                and session.lifecycle.cancel_reason is None:
            self.waiting.add(session, claim.placement.position)
            self._count()
            return
        self.start(session)

    def _withdraw(self, session: Session) -> None:
        """Undo the admission of a session that never started nor was announced."""
        self._forget(session)
        self._count_out(session)

    def _count_out(self, session: Session) -> None:
        self.active -= 1
        self._count()

    def _count(self) -> None:
        metrics.ACTIVE.set(self.active)
        metrics.QUEUED.set(len(self.waiting))
        metrics.RUNNING.set(self.active - len(self.waiting))

    def start(self, session: Session) -> None:
        """Run the session's agent; call after its acceptance has been announced. A
        session cancelled before that ends now, without running."""
        _log_context(session).run(self._begin, session)

    def _begin(self, session: Session) -> None:
        if session.lifecycle.cancel_reason is not None:
            self._finish(session, AgentStopped())
            return
        session.lifecycle.start()
        session.started_at = time.time()
        self._count()
        log.info("session %s started on %s", session.session_id, session.device_id)
        device = self.presence.device(session.device_id)
        if device is not None:  # it may have moved to another gateway while queued
            session.device_gateway = device.gateway_id
        if session.device_gateway != session.origin_gateway:
            self.gateways.open_session(session.device_gateway, session)
        if tracing.enabled():
            session.span = spans.session_started(session)
        # Created in the session's log context (and span), which the task copies.
        task = asyncio.get_running_loop().create_task(self._run(session),
                                                      name=session.session_id)
        session.task = task
        task.add_done_callback(lambda done: self._on_done(session, done))
        session.publish(Update(UpdateKind.STARTED))

    async def _run(self, session: Session) -> AgentEnd:
        """The agent under the session's deadline. Whether the deadline passed is asked
        of the timeout itself: a TimeoutError the agent raises on its own is a crash."""
        agent = AGENTS[session.agent_name]()
        context = AgentSessionContext(session, self.records, self.settings.command_timeout,
                                      self.settings.session_log_bytes, self.settings.llm)
        seconds = self.settings.session_timeout
        deadline = asyncio.timeout(seconds)
        try:
            async with deadline:
                outcome = await agent.run(context)
        except Exception as exc:
            if isinstance(exc, TimeoutError) and deadline.expired():
                return DeadlinePassed(seconds)
            return AgentCrashed(exc)
        return AgentReturned(outcome)

    def _device_gateway(self, session: Session) -> str:
        """The gateway that has the device now (it may have reconnected elsewhere)."""
        device = self.presence.device(session.device_id)
        return device.gateway_id if device is not None else session.device_gateway

    def _deliver(self, session: Session, frame: dict[str, Any]) -> bool:
        return self.gateways.send_command(self._device_gateway(session), session.device_id,
                                          session.session_id, frames.dumps(frame))

    # ------------------------------------------------------------------ inputs

    def command_results(
        self, session_id: str, device_id: str, response_id: str, results: Any
    ) -> bool:
        session = self.sessions.get(session_id)
        if session is None or not session.running:
            log.warning("results for unknown or ended session %r dropped", session_id)
            return False
        if session.device_id != device_id:
            log.warning(
                "results for session %s from %s dropped: the session runs on %s",
                session_id, device_id, session.device_id,
            )
            return False
        assert session.dispatcher is not None
        if not session.dispatcher.set_result(response_id, results):
            log.warning(
                "session %s: results for %r, which no command waits for, dropped",
                session_id, response_id,
            )
            return False
        return True

    def cancel(self, session_id: str, reason: str) -> Session | None:
        session = self.sessions.get(session_id)
        if session is None:
            return None
        decision = session.lifecycle.request_cancel(reason)
        if decision is not CancelDecision.IGNORE:
            log.info("session %s cancelled: %s", session_id, reason)
        if decision is CancelDecision.STOP_AGENT:
            assert session.task is not None
            session.task.cancel()
        elif decision is CancelDecision.END_NOW and not session.awaiting_record:
            self._finish(session, AgentStopped())
        return session

    def _end_waiting(self, session: Session, reason: CancelReason) -> None:
        log.warning("session %s ends while it waits for device %s: %s",
                    session.session_id, session.device_id, reason)
        self.cancel(session.session_id, reason)

    def client_offline(self, client_id: str, kind: ClientType) -> None:
        """Cancel what depended on a client that left, with the seed's reasons."""
        for session in list(self.sessions.values()):
            if not session.running:
                continue
            if kind == ClientType.DEVICE and session.device_id == client_id:
                self.cancel(session.session_id, CancelReason.DEVICE_DISCONNECTED)
            elif (
                kind == ClientType.CONSTELLATION
                and session.requester_kind == RequesterKind.CONSTELLATION
                and session.requester_id == client_id
            ):
                self.cancel(session.session_id, CancelReason.CONSTELLATION_DISCONNECTED)

    # ------------------------------------------------------------------ ending

    def _on_done(self, session: Session, task: asyncio.Task[AgentEnd]) -> None:
        end = AgentStopped() if task.cancelled() else task.result()
        if isinstance(end, AgentCrashed):
            log.error("session %s: agent crashed", session.session_id, exc_info=end.error)
        self._finish(session, end)

    def _finish(self, session: Session, end: AgentEnd) -> None:
        _log_context(session).run(self._ended, session, end)

    def _ended(self, session: Session, end: AgentEnd) -> None:
        ended = session.lifecycle.agent_ended(end)
        if session.span is not None:
            spans.session_ended(session.span, ended)
            session.span = None
        session.ended_at = time.time()
        for entry in session.commands:
            if entry.status == CommandStatus.SENT:  # as the store records it
                entry.status = CommandStatus.UNANSWERED
        self._count_out(session)
        self.waiting.remove(session)
        held = self.ended.add(session, session.ended_at,
                              estimated_bytes(session.request, session.commands, ended.result))
        self.records.record_ended(
            session.session_id, state=ended.state, result=ended.result, error=ended.error,
            cancel_reason=ended.cancel_reason, ended_at=session.ended_at,
            steps_done=session.steps_done, steps_total=session.steps_total,
            written=lambda ok: self._settled(held, session, ok),
        )
        self.waiting.freed(session.device_id)
        metrics.ENDED.labels(ended.state).inc()
        log.info("session %s %s%s", session.session_id, ended.state,
                 f": {ended.error}" if ended.error else "")
        self._notify_gateways(session)
        session.publish(Update(UpdateKind.ENDED))
        session.ended.set()
        self.prune_memory()

    def _settled(self, held: Held, session: Session, ok: bool = True) -> None:
        """An end record is committed (or lost for good): its session may be evicted.
        Its ticket in the device's line must not be lost with it, or the device would
        stay busy for every replica: its release is tried again until it is written."""
        held.settled = True
        session.end_recorded.set()
        self.prune_memory()
        if not ok:
            self._release_later(session.session_id)

    def _release_later(self, session_id: str) -> None:
        def retried(ok: bool) -> None:
            if not ok:
                self._release_later(session_id)

        loop = asyncio.get_running_loop()
        loop.call_later(1.0, self.records.release_slot, session_id, retried)

    def _notify_gateways(self, session: Session) -> None:
        text = frames.dumps(frames.task_end_frame(
            session_id=session.session_id,
            task_name=session.task_name,
            status=Status.COMPLETED if session.state == SessionState.COMPLETED
            else Status.FAILED,
            result=session.result,
            error=session.error,
        ))
        for notice in decisions.end_notices(
            requester_kind=session.requester_kind,
            cancel_reason=session.cancel_reason,
            origin_gateway=session.origin_gateway,
            accepted_device_gateway=session.device_gateway,
            device_gateway=self._device_gateway(session),
            started=session.started_at is not None,
        ):
            self.gateways.end_session(
                notice.gateway_id, session, notify_requester=notice.notify_requester,
                notify_device=notice.notify_device, frame_json=text,
                active_sessions=self.active,
            )

    def _forget(self, session: Session) -> None:
        if self.sessions.get(session.session_id) is session:
            del self.sessions[session.session_id]

    def prune_memory(self) -> None:
        """Forget the oldest ended sessions beyond the memory budget, the count or the
        retention (the store keeps them for the retention)."""
        for session in self.ended.evict(time.time()):
            self._forget(session)
        metrics.ENDED_IN_MEMORY.set(len(self.ended))
        metrics.ENDED_MEMORY_BYTES.set(self.ended.bytes)


def _log_context(session: Session) -> contextvars.Context:
    """A context whose log lines name the session, its requester and its device,
    whichever task or callback (the store's, a link's) gets to run the session's code."""
    context = contextvars.copy_context()
    context.run(log_context.bind, session_id=session.session_id,
                client_id=session.requester_id or None, device_id=session.device_id)
    return context
