"""session_service.core.lifecycle: every phase against every event, and the end texts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from aip_wire.vocab import CancelReason, SessionState
from session_service.agents.base import Outcome
from session_service.core.lifecycle import (
    AgentCrashed,
    AgentReturned,
    AgentStopped,
    CancelDecision,
    DeadlinePassed,
    IllegalTransition,
    Lifecycle,
    Phase,
)

SETUP: dict[Phase, Callable[[Lifecycle], Any]] = {
    Phase.PENDING: lambda life: None,
    Phase.QUEUED: lambda life: life.queue(),
    Phase.RUNNING: lambda life: life.start(),
    Phase.CANCELLING: lambda life: (life.start(), life.request_cancel("requested")),
    Phase.COMPLETED: lambda life: (life.start(), life.agent_ended(AgentReturned(Outcome(1)))),
    Phase.FAILED: lambda life: (life.start(), life.agent_ended(AgentCrashed(ValueError()))),
    Phase.CANCELLED: lambda life: (life.start(), life.agent_ended(AgentStopped())),
}

EVENTS: dict[str, Callable[[Lifecycle], Any]] = {
    "start": lambda life: life.start(),
    "queue": lambda life: life.queue(),
    "cancel": lambda life: life.request_cancel("device_disconnected"),
    "returned": lambda life: life.agent_ended(AgentReturned(Outcome("done"))),
    "returned_error": lambda life: life.agent_ended(AgentReturned(Outcome(None, "bad"))),
    "deadline": lambda life: life.agent_ended(DeadlinePassed(2.5)),
    "crashed": lambda life: life.agent_ended(AgentCrashed(RuntimeError("boom"))),
    "stopped": lambda life: life.agent_ended(AgentStopped()),
}

ILLEGAL = "illegal"
ENDS = ("returned", "returned_error", "deadline", "crashed", "stopped")
ENDED_PHASES = (Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED)

#: (phase, event) -> the phase after it, or ILLEGAL.
TABLE: dict[tuple[Phase, str], Phase | str] = {
    (Phase.PENDING, "start"): Phase.RUNNING,
    (Phase.PENDING, "queue"): Phase.QUEUED,
    (Phase.PENDING, "cancel"): Phase.CANCELLING,
    **{(Phase.PENDING, end): ILLEGAL for end in ENDS},
    (Phase.QUEUED, "start"): Phase.RUNNING,
    (Phase.QUEUED, "queue"): ILLEGAL,
    (Phase.QUEUED, "cancel"): Phase.CANCELLING,
    **{(Phase.QUEUED, end): ILLEGAL for end in ENDS},  # no agent runs yet
    **{(phase, "queue"): ILLEGAL for phase in (Phase.RUNNING, Phase.CANCELLING,
                                               *ENDED_PHASES)},
    (Phase.RUNNING, "start"): ILLEGAL,
    (Phase.RUNNING, "cancel"): Phase.CANCELLING,
    (Phase.RUNNING, "returned"): Phase.COMPLETED,
    (Phase.RUNNING, "returned_error"): Phase.FAILED,
    (Phase.RUNNING, "deadline"): Phase.CANCELLED,
    (Phase.RUNNING, "crashed"): Phase.FAILED,
    (Phase.RUNNING, "stopped"): Phase.CANCELLED,
    (Phase.CANCELLING, "start"): ILLEGAL,
    (Phase.CANCELLING, "cancel"): Phase.CANCELLING,  # ignored: the first reason stands
    **{(Phase.CANCELLING, end): Phase.CANCELLED for end in ENDS},
    **{(phase, "start"): ILLEGAL for phase in ENDED_PHASES},
    **{(phase, "cancel"): phase for phase in ENDED_PHASES},  # ignored
    **{(phase, end): ILLEGAL for phase in ENDED_PHASES for end in ENDS},
}


def test_table_covers_every_phase_and_event() -> None:
    assert set(TABLE) == {(phase, event) for phase in Phase for event in EVENTS}


@pytest.mark.parametrize(("phase", "event"), sorted(TABLE, key=lambda k: (k[0].value, k[1])))
def test_transition(phase: Phase, event: str) -> None:
    life = Lifecycle()
    SETUP[phase](life)
    assert life.phase is phase
    expected = TABLE[phase, event]
    if expected == ILLEGAL:
        with pytest.raises(IllegalTransition):
            EVENTS[event](life)
        assert life.phase is phase
    else:
        EVENTS[event](life)
        assert life.phase is expected


@pytest.mark.parametrize(("phase", "decision"), [
    (Phase.PENDING, CancelDecision.END_NOW),
    (Phase.QUEUED, CancelDecision.END_NOW),
    (Phase.RUNNING, CancelDecision.STOP_AGENT),
    (Phase.CANCELLING, CancelDecision.IGNORE),
    (Phase.COMPLETED, CancelDecision.IGNORE),
    (Phase.FAILED, CancelDecision.IGNORE),
    (Phase.CANCELLED, CancelDecision.IGNORE),
])
def test_cancel_decisions(phase: Phase, decision: CancelDecision) -> None:
    life = Lifecycle()
    SETUP[phase](life)
    assert life.request_cancel("x") is decision


def test_public_states() -> None:
    assert {phase: phase.public_state for phase in Phase} == {
        Phase.PENDING: SessionState.RUNNING,
        Phase.QUEUED: SessionState.QUEUED,
        Phase.RUNNING: SessionState.RUNNING,
        Phase.CANCELLING: SessionState.RUNNING,
        Phase.COMPLETED: SessionState.COMPLETED,
        Phase.FAILED: SessionState.FAILED,
        Phase.CANCELLED: SessionState.CANCELLED,
    }


def _running() -> Lifecycle:
    life = Lifecycle()
    life.start()
    return life


def test_returned_outcomes() -> None:
    ok = _running().agent_ended(AgentReturned(Outcome({"n": 1})))
    assert (ok.state, ok.result, ok.error, ok.cancel_reason) == (
        SessionState.COMPLETED, {"n": 1}, None, None)
    bad = _running().agent_ended(AgentReturned(Outcome("partial", "step 2 failed")))
    assert (bad.state, bad.result, bad.error, bad.cancel_reason) == (
        SessionState.FAILED, "partial", "step 2 failed", None)


def test_deadline_text() -> None:
    ended = _running().agent_ended(DeadlinePassed(2.5))
    assert ended.state == "cancelled"
    assert ended.cancel_reason == "deadline_exceeded"
    assert ended.error == "Session exceeded its deadline of 2.5s"
    assert _running().agent_ended(DeadlinePassed(600.0)).error == (
        "Session exceeded its deadline of 600s")


def test_crash_text() -> None:
    ended = _running().agent_ended(AgentCrashed(TimeoutError("mine")))
    assert ended.state == "failed" and ended.cancel_reason is None
    assert ended.error == "Agent error: TimeoutError('mine')"


def test_stopped_without_a_reason() -> None:
    ended = _running().agent_ended(AgentStopped())
    assert ended.state == "cancelled" and ended.cancel_reason == CancelReason.CANCELLED
    assert ended.error == "Session cancelled: cancelled" and ended.result is None


@pytest.mark.parametrize("start", [True, False])
def test_cancelled_with_the_first_reason(start: bool) -> None:
    life = Lifecycle()
    if start:
        life.start()
    life.request_cancel("device_disconnected")
    assert life.request_cancel("replica_shutdown") is CancelDecision.IGNORE
    assert life.public_state == "running" and life.cancel_reason == "device_disconnected"
    ended = life.agent_ended(AgentStopped())
    assert (ended.state, ended.result, ended.error, ended.cancel_reason) == (
        "cancelled", None, "Session cancelled: device_disconnected", "device_disconnected")
    assert life.ended is ended and life.cancel_reason == "device_disconnected"


def test_cancel_races_an_end() -> None:
    """An agent that ends on its own before its cancellation takes effect is recorded as
    cancelled, with the requested reason; a returned outcome keeps its result and error."""
    def cancelling() -> Lifecycle:
        life = _running()
        life.request_cancel("requested")
        return life

    returned = cancelling().agent_ended(AgentReturned(Outcome("r", None)))
    assert (returned.state, returned.result, returned.error, returned.cancel_reason) == (
        "cancelled", "r", None, "requested")
    crashed = cancelling().agent_ended(AgentCrashed(ValueError("v")))
    assert (crashed.state, crashed.error) == ("cancelled", "Agent error: ValueError('v')")
    late = cancelling().agent_ended(DeadlinePassed(1))
    assert (late.cancel_reason, late.error) == ("requested", "Session cancelled: requested")
