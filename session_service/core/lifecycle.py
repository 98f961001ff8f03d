"""The lifecycle of one session as an explicit state machine.

Every rule about how a session's state may change lives in :class:`Lifecycle`. Its
methods do no I/O: they check that a move is legal, make it, and return what the caller
must do about it (stop the agent, end the session now, record an end). Illegal moves raise
:class:`IllegalTransition`, so a bug that would end a session twice fails loudly instead
of sending a second ``task_end``.

::

    PENDING --start--> RUNNING --agent ended--> COMPLETED | FAILED | CANCELLED
       |                  ^   |
     queue              start +--cancel--> CANCELLING --agent ended--> CANCELLED
       v                  |
    QUEUED ---------------+
       |
       +--cancel (END_NOW, also from PENDING)--> CANCELLING

A session waits in QUEUED while its device runs as many sessions as it may
(:mod:`~session_service.core.device_queue`); it never ran, so a cancel ends it at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto
from typing import Any

from aip_wire.vocab import CancelReason, SessionState
from session_service.agents.base import Outcome


class Phase(Enum):
    """Where a session is; finer than :class:`SessionState`, which the API shows."""

    PENDING = auto()  # accepted, its agent not started yet
    QUEUED = auto()  # accepted, waiting for its device
    RUNNING = auto()
    CANCELLING = auto()  # a cancel was requested; the agent is unwinding
    COMPLETED = auto()
    FAILED = auto()
    CANCELLED = auto()

    @property
    def public_state(self) -> SessionState:
        return _PUBLIC[self]


_PUBLIC = {
    Phase.PENDING: SessionState.RUNNING,
    Phase.QUEUED: SessionState.QUEUED,
    Phase.RUNNING: SessionState.RUNNING,
    Phase.CANCELLING: SessionState.RUNNING,
    Phase.COMPLETED: SessionState.COMPLETED,
    Phase.FAILED: SessionState.FAILED,
    Phase.CANCELLED: SessionState.CANCELLED,
}


class IllegalTransition(RuntimeError):
    """A move the lifecycle does not allow from its current phase: a bug in the caller."""


class CancelDecision(Enum):
    """What the caller of :meth:`Lifecycle.request_cancel` must do."""

    IGNORE = auto()  # already ending or ended: the first reason stands
    STOP_AGENT = auto()  # cancel the agent's task; its end is reported later
    END_NOW = auto()  # no agent runs: report the end at once (AgentStopped)


# ---------------------------------------------------------------- how an agent ended


@dataclass(frozen=True, slots=True)
class AgentReturned:
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class DeadlinePassed:
    """The runner's own deadline expired (not merely a TimeoutError from the agent)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class AgentCrashed:
    error: BaseException


@dataclass(frozen=True, slots=True)
class AgentStopped:
    """The agent's task was cancelled, or it never started and was cancelled."""


AgentEnd = AgentReturned | DeadlinePassed | AgentCrashed | AgentStopped


@dataclass(frozen=True, slots=True)
class Ended:
    """How a session ended, as its record, its watchers and its ``task_end`` say."""

    state: SessionState
    result: Any
    error: str | None
    cancel_reason: str | None


def cancelled_text(reason: str) -> str:
    return f"Session cancelled: {reason}"


def deadline_text(seconds: float) -> str:
    return f"Session exceeded its deadline of {seconds:g}s"


def crash_text(error: BaseException) -> str:
    return f"Agent error: {error!r}"


class Lifecycle:
    """The phase of one session and the reason it was cancelled, if it was."""

    __slots__ = ("cancel_reason", "ended", "phase")

    def __init__(self) -> None:
        self.phase = Phase.PENDING
        #: The requested reason while CANCELLING, then the recorded one once ended.
        self.cancel_reason: str | None = None
        self.ended: Ended | None = None

    @property
    def public_state(self) -> SessionState:
        return self.phase.public_state

    def _refuse(self, move: str) -> IllegalTransition:
        return IllegalTransition(f"cannot {move} a session that is {self.phase.name}")

    def queue(self) -> None:
        if self.phase is not Phase.PENDING:
            raise self._refuse("queue")
        self.phase = Phase.QUEUED

    def start(self) -> None:
        if self.phase not in (Phase.PENDING, Phase.QUEUED):
            raise self._refuse("start")
        self.phase = Phase.RUNNING

    def request_cancel(self, reason: str) -> CancelDecision:
        if self.phase is Phase.RUNNING:
            decision = CancelDecision.STOP_AGENT
        elif self.phase in (Phase.PENDING, Phase.QUEUED):
            decision = CancelDecision.END_NOW
        else:
            return CancelDecision.IGNORE
        self.phase = Phase.CANCELLING
        self.cancel_reason = reason
        return decision

    def agent_ended(self, end: AgentEnd) -> Ended:
        """Record the end; in CANCELLING every end is a cancellation with the reason
        that was requested first (even a deadline or a crash while unwinding)."""
        if self.phase is Phase.CANCELLING:
            assert self.cancel_reason is not None
            ended = self._cancelled(end, self.cancel_reason)
        elif self.phase is Phase.RUNNING:
            ended = self._ended(end)
        else:
            raise self._refuse("end")
        self.phase = _PHASE_OF[ended.state]
        self.cancel_reason = ended.cancel_reason
        self.ended = ended
        return ended

    @staticmethod
    def _cancelled(end: AgentEnd, reason: str) -> Ended:
        # An agent that returned or crashed before its cancellation took effect keeps
        # its own result and error, as the session record always showed them.
        if isinstance(end, AgentReturned):
            return Ended(SessionState.CANCELLED, end.outcome.result, end.outcome.error, reason)
        if isinstance(end, AgentCrashed):
            return Ended(SessionState.CANCELLED, None, crash_text(end.error), reason)
        return Ended(SessionState.CANCELLED, None, cancelled_text(reason), reason)

    @staticmethod
    def _ended(end: AgentEnd) -> Ended:
        if isinstance(end, AgentReturned):
            outcome = end.outcome
            state = SessionState.COMPLETED if outcome.error is None else SessionState.FAILED
            return Ended(state, outcome.result, outcome.error, None)
        if isinstance(end, DeadlinePassed):
            return Ended(SessionState.CANCELLED, None, deadline_text(end.seconds),
                         CancelReason.DEADLINE_EXCEEDED)
        if isinstance(end, AgentCrashed):
            return Ended(SessionState.FAILED, None, crash_text(end.error), None)
        reason = CancelReason.CANCELLED  # stopped without anyone asking
        return Ended(SessionState.CANCELLED, None, cancelled_text(reason), reason)


_PHASE_OF = {
    SessionState.COMPLETED: Phase.COMPLETED,
    SessionState.FAILED: Phase.FAILED,
    SessionState.CANCELLED: Phase.CANCELLED,
}
