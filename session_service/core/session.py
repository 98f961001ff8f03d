"""What the service holds about one session: who asked, where it runs, how far it got.

A :class:`Session`'s state is its :class:`~session_service.core.lifecycle.Lifecycle`;
``state``, ``running``, ``result``, ``error`` and ``cancel_reason`` are read from it, so
nothing can set them behind the lifecycle's back.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aip_wire.vocab import CommandStatus, RequesterKind, SessionState
from session_service.core.lifecycle import AgentEnd, Lifecycle
from session_service.dispatcher import CommandDispatcher
from session_service.records import SessionRecord


class UpdateKind(StrEnum):
    """What a watcher of a session is told; the public API sends these as ``kind``."""

    WATCHING = "watching"  # first, with the session as it is when the watch begins
    QUEUED = "queued"  # it waits for its device; detail: {"position": n} (1: next)
    STARTED = "started"
    COMMAND_SENT = "command_sent"
    RESULTS_RECEIVED = "results_received"
    MODEL_TURN = "model_turn"  # the language-model agent's turn: its text and tool calls
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class Update:
    """One event of a session, for watchers."""

    kind: UpdateKind
    response_id: str = ""
    detail: Any = None


@dataclass(slots=True)
class CommandEntry:
    """One command of a running or recently ended session, for its command log."""

    seq: int
    response_id: str
    actions: Any
    sent_at: float
    status: CommandStatus = CommandStatus.SENT
    results: Any = None
    received_at: float | None = None
    #: About how many bytes ``results`` holds (see ``core.log_budget.approx_bytes``).
    size: int = 0
    #: The results were given back to keep the session's log within its budget: the
    #: store has them.
    released: bool = False


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
    device_gateway: str  # the device's gateway when the session was accepted
    agent_name: str = "plan"
    #: The model the requester chose for the llm agent ("": the replica's --llm-model).
    model: str = ""
    #: The backend's StartSession idempotency key ("" for none): unique per requester
    #: in the store, so a retry on any replica finds this session.
    idempotency_key: str = ""
    #: The W3C trace context its submitter sent ("": none), and the session's own span
    #: while it runs (only when tracing is on).
    traceparent: str = ""
    span: Any = None
    created_at: float = field(default_factory=time.time)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    #: Its place in its device's line while it waits (1: next), else 0.
    queue_position: int = 0
    #: When it began to wait (monotonic clock), for the queue timeout.
    queued_at: float | None = None
    #: Set when its agent starts; a session that never started never reached its device.
    started_at: float | None = None
    ended_at: float | None = None
    #: Accepted, its creation record not yet durable: its ack and start wait for it.
    awaiting_record: bool = False
    #: The requester's own ended session that holds this id in memory: a request
    #: answered with that session, never registered nor started.
    duplicate_of: Session | None = None
    steps_done: int = 0
    steps_total: int = 0
    dispatcher: CommandDispatcher | None = None
    task: asyncio.Task[AgentEnd] | None = None
    watchers: set[asyncio.Queue[Update]] = field(default_factory=set)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set once the end's record is settled in the store (committed, or lost for good):
    #: from then on every replica's reads agree with this memory about the end.
    end_recorded: asyncio.Event = field(default_factory=asyncio.Event)
    commands: list[CommandEntry] = field(default_factory=list)
    #: Bytes of results the command log holds, and how many of its oldest entries gave
    #: theirs back (:mod:`session_service.core.log_budget`).
    log_bytes: int = 0
    released: int = 0
    #: The language-model agent's transcript: one JSON-able dict per model turn.
    turns: list[dict[str, Any]] = field(default_factory=list)

    @property
    def state(self) -> SessionState:
        return self.lifecycle.public_state

    @property
    def running(self) -> bool:
        """Not ended yet: pending, running, or unwinding after a cancel."""
        # On every result a device sends: one attribute, not the phase's public state.
        return self.lifecycle.ended is None

    @property
    def cancel_reason(self) -> str | None:
        return self.lifecycle.cancel_reason

    @property
    def result(self) -> Any:
        ended = self.lifecycle.ended
        return ended.result if ended is not None else None

    @property
    def error(self) -> str | None:
        ended = self.lifecycle.ended
        return ended.error if ended is not None else None

    def creation_record(self, replica_id: str) -> SessionRecord:
        """The session's record as the store first writes it."""
        return SessionRecord(
            session_id=self.session_id, task_name=self.task_name, request=self.request,
            device_id=self.device_id, requester_id=self.requester_id,
            requester_kind=self.requester_kind, agent=self.agent_name,
            replica_id=replica_id, state=SessionState.RUNNING, created_at=self.created_at,
            idempotency_key=self.idempotency_key,
        )

    def publish(self, update: Update) -> None:
        for queue in self.watchers:
            queue.put_nowait(update)
