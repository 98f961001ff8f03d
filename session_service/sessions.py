"""Sessions: creation and ownership, running their agent, cancellation, records.

A :class:`Session` runs one agent as an asyncio task. However it ends (the agent returns,
its deadline passes, it is cancelled with a reason, or it crashes) the end is handled in
one place, :meth:`SessionManager._finish`, which records the outcome, tells watchers and
sends ``task_ended`` to the gateways that must deliver ``task_end``.

Ended sessions stay in memory for a while (``--record-retention``, ``--max-records``);
every session is also written to the :class:`~session_service.store.SessionStore` (start,
each command and its results, end), which outlives the process. Store writes are queued,
never awaited, so the store can neither slow nor break a session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aip_link import messages as m
from aip_wire import frames
from aip_wire.vocab import ClientType, RejectionCode, RequesterKind, Status, end_audience
from session_service import metrics
from session_service.agents import AGENTS, Outcome
from session_service.agents.base import Step
from session_service.dispatcher import CommandDispatcher
from session_service.presence import Presence
from session_service.settings import SessionSettings
from session_service.store import SessionRecord, SessionStore

log = logging.getLogger("aip.session")

RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"

DEVICE_DISCONNECTED = "device_disconnected"
CONSTELLATION_DISCONNECTED = "constellation_disconnected"
REPLICA_SHUTDOWN = "replica_shutdown"
#: A command still waiting for its results, and one the session ended without.
SENT = "sent"
UNANSWERED = "unanswered"



class SessionRejected(Exception):
    """A session that cannot start; ``code`` is ``exists``, ``not_found``, ``invalid``,
    ``draining`` or ``limit``."""

    def __init__(self, message: str, code: RejectionCode = RejectionCode.EXISTS) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Update:
    """One event of a session, for watchers."""

    kind: str  # started, command_sent, results_received, ended
    response_id: str = ""
    detail: Any = None


@dataclass(slots=True)
class CommandEntry:
    """One command of a running or recently ended session, for its command log."""

    seq: int
    response_id: str
    actions: Any
    sent_at: float
    status: str = SENT  # then answered, timeout or undeliverable
    results: Any = None
    received_at: float | None = None


@dataclass(eq=False)
class Session:
    session_id: str
    task_name: str
    request: str
    device_id: str
    platform: str
    device_info: dict[str, Any]
    requester_id: str
    requester_kind: RequesterKind
    origin_gateway: str  # the gateway that submitted it ("" for backend calls)
    device_gateway: str
    agent_name: str = "plan"
    created_at: float = field(default_factory=time.time)
    state: str = RUNNING
    result: Any = None
    error: str | None = None
    cancel_reason: str | None = None
    ended_at: float | None = None
    steps_done: int = 0
    steps_total: int = 0
    dispatcher: CommandDispatcher | None = None
    task: asyncio.Task[Outcome] | None = None
    watchers: set[asyncio.Queue[Update]] = field(default_factory=set)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    commands: list[CommandEntry] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    def publish(self, update: Update) -> None:
        for queue in self.watchers:
            queue.put_nowait(update)


class _Context:
    """The :class:`~session_service.agents.base.AgentContext` of one session."""

    def __init__(self, manager: SessionManager, session: Session) -> None:
        self._manager = manager
        self._session = session
        self.session_id = session.session_id
        self.task_name = session.task_name
        self.request = session.request
        self.platform = session.platform
        self.device_info = session.device_info

    def set_total_steps(self, total: int) -> None:
        self._session.steps_total = total

    async def run_step(self, step: Step) -> list[dict[str, Any]]:
        session = self._session
        assert session.dispatcher is not None
        timeout = step.timeout or self._manager.settings.command_timeout
        frame = frames.command_frame(
            session_id=session.session_id,
            task_name=session.task_name,
            response_id=frames.new_id(),
            actions=step.actions,
            agent_name=step.agent_name,
            process_name=step.process_name,
            root_name=step.root_name,
        )
        entry = CommandEntry(len(session.commands), frame["response_id"], step.actions,
                             time.time())
        session.commands.append(entry)
        store = self._manager.store
        if store is not None:
            store.record_command(session.session_id, entry.seq, entry.response_id,
                                 entry.actions, entry.sent_at)
        session.publish(Update("command_sent", frame["response_id"], step.actions))
        started = time.perf_counter()
        results, entry.status = await session.dispatcher.execute_detailed(
            frame, [action["call_id"] for action in step.actions], timeout
        )
        metrics.COMMAND_SECONDS.observe(time.perf_counter() - started)
        entry.results, entry.received_at = results, time.time()
        if store is not None:
            store.record_results(session.session_id, entry.seq, results, entry.received_at,
                                 entry.status)
        session.steps_done += 1
        session.publish(Update("results_received", frame["response_id"], results))
        return results


class SessionManager:
    """Every session of this replica, running or recently ended."""

    def __init__(
        self,
        settings: SessionSettings,
        presence: Presence,
        send_to_gateway: Callable[[str, m.SessionMessage], bool],
        store: SessionStore | None = None,
        replica_id: str = "",
    ) -> None:
        self.settings = settings
        self.presence = presence
        self._send = send_to_gateway
        self.store = store
        self.replica_id = replica_id or settings.replica_id
        self.sessions: dict[str, Session] = {}
        self._ended: deque[Session] = deque()
        self.active = 0
        #: Running sessions per device, for --max-sessions-per-device.
        self._running_on: dict[str, int] = {}
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
        agent_name: str = "plan",
    ) -> Session:
        """Create and start a session.

        :raises SessionRejected: the replica is draining, the id belongs to another
            requester or is running, the device is unknown or at its limit of sessions,
            or the agent does not exist.
        """
        if self.draining:
            raise SessionRejected("replica is draining: it takes no new sessions",
                                  RejectionCode.DRAINING)
        existing = self.sessions.get(session_id)
        if existing is not None:
            if existing.requester_id != requester_id:
                raise SessionRejected(f"Session '{session_id}' belongs to another client")
            if existing.running:
                raise SessionRejected(f"Session '{session_id}' is already running")
            self._forget(existing)
        device = self.presence.device(device_id)
        if device is None:
            raise SessionRejected(f"Device '{device_id}' is not connected", RejectionCode.NOT_FOUND)
        agent_type = AGENTS.get(agent_name)
        if agent_type is None:
            raise SessionRejected(f"Unknown agent '{agent_name}'", RejectionCode.INVALID)
        limit = self.settings.max_sessions_per_device
        running = self._running_on.get(device_id, 0)
        if limit and running >= limit:
            raise SessionRejected(
                f"Device '{device_id}' already runs {running} session(s): the limit is "
                f"{limit} per device (max_sessions_per_device)", RejectionCode.LIMIT,
            )
        session = Session(
            session_id=session_id,
            task_name=task_name,
            request=request,
            device_id=device_id,
            platform=device.platform,
            device_info=device.device_info,
            requester_id=requester_id,
            requester_kind=requester_kind,
            origin_gateway=origin_gateway,
            device_gateway=device.gateway_id,
            agent_name=agent_name,
        )
        session.dispatcher = CommandDispatcher(session_id, lambda frame: self._deliver(session,
                                                                                       frame))
        self.sessions[session_id] = session
        self._running_on[device_id] = running + 1
        self.active += 1
        metrics.ACTIVE.set(self.active)
        log.info(
            "session %s (%s) started on %s for %s %s",
            session_id, task_name, device_id, requester_kind, requester_id,
        )
        return session

    def start(self, session: Session) -> None:
        """Run the session's agent; call after its acceptance has been announced."""
        agent = AGENTS[session.agent_name]()
        context = _Context(self, session)

        async def run() -> Outcome:
            async with asyncio.timeout(self.settings.session_timeout):
                return await agent.run(context)

        if session.device_gateway != session.origin_gateway:
            self._send(session.device_gateway, m.SessionOpened(
                session_id=session.session_id,
                task_name=session.task_name,
                device_id=session.device_id,
                requester_id=session.requester_id,
                requester_kind=session.requester_kind,
            ))
        if self.store is not None:
            self.store.record_started(SessionRecord(
                session_id=session.session_id,
                task_name=session.task_name,
                request=session.request,
                device_id=session.device_id,
                requester_id=session.requester_id,
                requester_kind=session.requester_kind,
                agent=session.agent_name,
                replica_id=self.replica_id,
                state=RUNNING,
                created_at=session.created_at,
            ))
        session.task = asyncio.get_running_loop().create_task(run(), name=session.session_id)
        session.task.add_done_callback(lambda task: self._on_done(session, task))
        session.publish(Update("started"))

    def _deliver(self, session: Session, frame: dict[str, Any]) -> bool:
        device = self.presence.device(session.device_id)
        gateway = device.gateway_id if device is not None else session.device_gateway
        return self._send(gateway, m.DeviceFrame(
            device_id=session.device_id,
            session_id=session.session_id,
            frame_json=frames.dumps(frame),
        ))

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
        if session.running and session.cancel_reason is None:
            log.info("session %s cancelled: %s", session_id, reason)
            session.cancel_reason = reason
            if session.task is not None:
                session.task.cancel()
            else:
                self._finish(session, Outcome(None, f"Session cancelled: {reason}"))
        return session

    def client_offline(self, client_id: str, kind: ClientType) -> None:
        """Cancel what depended on a client that left, with the seed's reasons."""
        for session in list(self.sessions.values()):
            if not session.running:
                continue
            if kind == ClientType.DEVICE and session.device_id == client_id:
                self.cancel(session.session_id, DEVICE_DISCONNECTED)
            elif (
                kind == ClientType.CONSTELLATION
                and session.requester_kind == RequesterKind.CONSTELLATION
                and session.requester_id == client_id
            ):
                self.cancel(session.session_id, CONSTELLATION_DISCONNECTED)

    # ------------------------------------------------------------------ ending

    def _on_done(self, session: Session, task: asyncio.Task[Outcome]) -> None:
        if task.cancelled():
            reason = session.cancel_reason or "cancelled"
            session.cancel_reason = reason
            outcome = Outcome(None, f"Session cancelled: {reason}")
        elif isinstance(task.exception(), TimeoutError):
            session.cancel_reason = "deadline_exceeded"
            outcome = Outcome(
                None, f"Session exceeded its deadline of {self.settings.session_timeout:g}s"
            )
        elif task.exception() is not None:
            exc = task.exception()
            log.error("session %s: agent crashed", session.session_id, exc_info=exc)
            outcome = Outcome(None, f"Agent error: {exc!r}")
        else:
            outcome = task.result()
        self._finish(session, outcome)

    def _finish(self, session: Session, outcome: Outcome) -> None:
        if not session.running:
            return
        if session.cancel_reason is not None:
            session.state = CANCELLED
        else:
            session.state = COMPLETED if outcome.error is None else FAILED
        session.result = outcome.result
        session.error = outcome.error
        session.ended_at = time.time()
        for entry in session.commands:
            if entry.status == SENT:  # as the store records it
                entry.status = UNANSWERED
        self.active -= 1
        left = self._running_on.get(session.device_id, 1) - 1
        if left > 0:
            self._running_on[session.device_id] = left
        else:
            self._running_on.pop(session.device_id, None)
        if self.store is not None:
            self.store.record_ended(
                session.session_id, state=session.state, result=session.result,
                error=session.error, cancel_reason=session.cancel_reason,
                ended_at=session.ended_at, steps_done=session.steps_done,
                steps_total=session.steps_total,
            )
        metrics.ACTIVE.set(self.active)
        metrics.ENDED.labels(session.state).inc()
        log.info("session %s %s%s", session.session_id, session.state,
                 f": {session.error}" if session.error else "")
        self._notify_gateways(session)
        session.publish(Update("ended"))
        session.ended.set()
        self._ended.append(session)
        self.prune_memory()

    def _notify_gateways(self, session: Session) -> None:
        notify_requester, notify_device = end_audience(session.requester_kind,
                                                       session.cancel_reason)
        text = frames.dumps(frames.task_end_frame(
            session_id=session.session_id,
            task_name=session.task_name,
            status=Status.COMPLETED if session.state == COMPLETED else Status.FAILED,
            result=session.result,
            error=session.error,
        ))
        device = self.presence.device(session.device_id)
        device_gateway = device.gateway_id if device is not None else session.device_gateway

        def ended(requester: bool, device_too: bool) -> m.TaskEnded:
            return m.TaskEnded(
                session_id=session.session_id,
                requester_id=session.requester_id,
                requester_kind=session.requester_kind,
                device_id=session.device_id,
                notify_requester=requester,
                notify_device=device_too,
                frame_json=text,
                active_sessions=self.active,
            )

        # Every gateway that holds a route for the session hears of its end, notified or
        # not, so that no route outlives its session.
        gateways = {session.device_gateway, device_gateway} - {session.origin_gateway, ""}
        if session.origin_gateway:
            same = session.origin_gateway == device_gateway
            self._send(session.origin_gateway, ended(notify_requester, notify_device and same))
        for gateway_id in gateways:
            self._send(gateway_id, ended(False, notify_device and gateway_id == device_gateway))

    def _forget(self, session: Session) -> None:
        if self.sessions.get(session.session_id) is session:
            del self.sessions[session.session_id]

    def prune_memory(self) -> None:
        """Forget ended sessions beyond the retention or the count (the store keeps
        them for the retention)."""
        horizon = time.time() - self.settings.record_retention
        ended = self._ended
        while ended and (
            len(ended) > self.settings.max_records or (ended[0].ended_at or 0) < horizon
        ):
            self._forget(ended.popleft())

    # ------------------------------------------------------------------ queries

    def find_by_task_name(self, task_name: str) -> Session | None:
        matches = [s for s in self.sessions.values() if s.task_name == task_name]
        return max(matches, key=lambda s: s.created_at) if matches else None

    def list(self, device_id: str = "", running_only: bool = False,
             limit: int = 100) -> list[Session]:
        selected = [
            s for s in self.sessions.values()
            if (not device_id or s.device_id == device_id) and (not running_only or s.running)
        ]
        selected.sort(key=lambda s: s.created_at, reverse=True)
        return selected[:limit]

    def active_on(self, device_id: str) -> int:
        return self._running_on.get(device_id, 0)

    async def drain(self, timeout: float, can_progress: Callable[[], bool]) -> int:
        """Refuse new sessions and wait up to ``timeout`` seconds for the running ones.

        The wait stops early once ``can_progress()`` is false (no gateway is linked, so
        no command can reach a device and no result come back).

        :returns: how many sessions still run.
        """
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self.active:
            log.info("draining: waiting up to %gs for %d session(s)", timeout, self.active)
        while self.active and can_progress():
            left = deadline - loop.time()
            if left <= 0:
                break
            await asyncio.sleep(min(left, 0.05))
        return self.active

    async def shutdown(self, reason: str = REPLICA_SHUTDOWN) -> None:
        running = [s for s in self.sessions.values() if s.running]
        for session in running:
            self.cancel(session.session_id, reason)
        if running:
            try:
                await asyncio.wait_for(
                    asyncio.gather(*(session.ended.wait() for session in running)), timeout=5
                )
            except TimeoutError:
                log.warning("%d session(s) did not end within 5s of shutdown", len(running))
