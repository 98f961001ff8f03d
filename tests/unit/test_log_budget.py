"""A running session's command log within its byte budget."""

from __future__ import annotations

import json

from aip_wire.vocab import RequesterKind
from session_service.core.log_budget import (
    RESULT_REASON,
    StepResults,
    approx_bytes,
    elided,
    keep_within,
)
from session_service.core.session import CommandEntry, Session


def session_with(sizes: list[int]) -> Session:
    session = Session("s1", "t", "{}", "dev1", "linux", {}, "c1", RequesterKind.BACKEND,
                      "gw", "gw")
    for seq, size in enumerate(sizes):
        results = [{"status": "success", "result": "x" * size, "call_id": "a"}]
        entry = CommandEntry(seq, f"r{seq}", [], 0.0, results=results,
                             size=approx_bytes(results))
        session.commands.append(entry)
        session.log_bytes += entry.size
    return session


def test_approx_bytes_is_close_to_the_json_size_for_big_strings() -> None:
    value = [{"status": "success", "result": "A" * 100_000, "call_id": "c1", "n": 3}]
    real = len(json.dumps(value))
    assert real - 64 <= approx_bytes(value) <= real + 64


def test_the_oldest_results_are_released_first_and_the_newest_kept() -> None:
    session = session_with([1000, 1000, 1000, 1000])
    assert keep_within(session, 2500) == 2
    assert [entry.released for entry in session.commands] == [True, True, False, False]
    assert session.commands[0].results is None and session.commands[2].results is not None
    assert session.released == 2
    assert session.log_bytes == sum(entry.size for entry in session.commands[2:])
    assert session.log_bytes <= 2500


def test_the_newest_results_stay_even_over_the_budget() -> None:
    session = session_with([10, 5000])
    keep_within(session, 100)
    assert [entry.released for entry in session.commands] == [True, False]
    assert session.commands[1].results is not None
    assert keep_within(session, 100) == 0  # nothing older left to give back


def test_within_the_budget_nothing_is_released() -> None:
    session = session_with([100, 100])
    assert keep_within(session, 10_000) == 0
    assert session.released == 0


def test_approx_bytes_counts_subclasses_as_their_base_types() -> None:
    from collections import OrderedDict
    from enum import StrEnum

    class Kind(StrEnum):
        OK = "ok"

    plain = {"status": "ok", "items": [1, "ab", None, {"k": True}], 7: "x"}
    shaped = OrderedDict([("status", Kind.OK), ("items", (1, "ab", None, {"k": True})),
                          (7, "x")])
    assert approx_bytes(shaped) == approx_bytes(plain) > 0
    assert approx_bytes(3.5) == approx_bytes(None) == approx_bytes(True) == 8


def step(call_id: str, size: int) -> list[dict[str, object]]:
    return [{"status": "success", "error": None, "result": "x" * size, "call_id": call_id}]


def test_step_results_within_budget_are_kept_whole_and_in_order() -> None:
    kept = StepResults(budget=10_000)
    for n in range(3):
        kept.append(step(f"c{n}", 1_000))
    assert kept.items == [step(f"c{n}", 1_000) for n in range(3)]


def test_step_results_past_the_budget_elide_the_oldest_first() -> None:
    kept = StepResults(budget=2_500)
    for n in range(5):
        kept.append(step(f"c{n}", 1_000))
    whole = [item for item in kept.items if isinstance(item[0]["result"], str)]
    assert whole == [step("c3", 1_000), step("c4", 1_000)]
    for n in range(3):
        (action,) = kept.items[n]
        assert action["call_id"] == f"c{n}" and action["status"] == "success"
        marker = action["result"]
        assert marker["elided"] is True and marker["reason"] == RESULT_REASON
        assert marker["bytes"] == approx_bytes(step(f"c{n}", 1_000))


def test_the_newest_step_is_whole_even_over_the_budget() -> None:
    kept = StepResults(budget=100)
    kept.append(step("c0", 50))
    kept.append(step("c1", 5_000))
    assert kept.items[1] == step("c1", 5_000)
    assert kept.items[0][0]["result"]["elided"] is True
    kept.append(step("c2", 10))
    assert kept.items[1][0]["result"]["elided"] is True
    assert kept.items[2] == step("c2", 10)


def test_elided_results_that_are_not_a_list_of_actions_become_one_marker() -> None:
    assert elided("odd", 3, "why") == {"elided": True, "bytes": 3, "reason": "why"}
