"""The takeover decision for a ``client_id`` that a connection holds."""

from __future__ import annotations

import pytest

from gateway_service.takeover import (
    RecentTakeovers,
    TakeoverReason,
    TakeoverStep,
    after_probe,
    first_step,
    refusal_reason,
)


@pytest.mark.parametrize("token_valid", [False, True])
def test_refuse_duplicates_refuses_whatever_the_token(token_valid: bool) -> None:
    decision = first_step(refuse_duplicates=True, token_valid=token_valid)
    assert decision.step == TakeoverStep.REFUSE
    assert decision.reason == TakeoverReason.DUPLICATES_REFUSED
    assert decision.outcome == "refused"


def test_a_valid_token_takes_over_without_a_probe() -> None:
    decision = first_step(refuse_duplicates=False, token_valid=True)
    assert decision.step == TakeoverStep.TAKE_OVER and decision.reason == TakeoverReason.TOKEN
    assert decision.outcome == "took_over"


def test_without_a_token_the_holder_is_probed() -> None:
    assert first_step(refuse_duplicates=False, token_valid=False).step == TakeoverStep.PROBE


def test_the_probe_decides() -> None:
    alive = after_probe(answered=True)
    assert alive.step == TakeoverStep.REFUSE and alive.reason == TakeoverReason.HOLDER_ALIVE
    gone = after_probe(answered=False)
    assert gone.step == TakeoverStep.TAKE_OVER and gone.reason == TakeoverReason.PROBE_FAILED


def test_the_refusal_says_a_live_connection_holds_the_id() -> None:
    assert "another live connection holds client_id 'dev1'" in refusal_reason("dev1")


def test_a_token_takes_an_id_over_unprobed_once_per_window() -> None:
    recent = RecentTakeovers(window=60.0, capacity=2)
    assert not recent.recent("a", 0.0)
    decision = first_step(refuse_duplicates=False, token_valid=True,
                          taken_over_recently=recent.recent("a", 0.0))
    assert decision.step == TakeoverStep.TAKE_OVER
    recent.note("a", 0.0)
    assert recent.recent("a", 59.0) and not recent.recent("a", 60.0)
    again = first_step(refuse_duplicates=False, token_valid=True,
                       taken_over_recently=recent.recent("a", 30.0))
    assert again.step == TakeoverStep.PROBE
    recent.note("b", 1.0)
    recent.note("c", 2.0)  # over capacity: the oldest is forgotten
    assert not recent.recent("a", 3.0) and recent.recent("c", 3.0)
