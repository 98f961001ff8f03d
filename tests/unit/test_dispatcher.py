"""session_service.dispatcher: pending commands and result normalisation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from session_service.dispatcher import CommandDispatcher, failure, normalize_results


def result(status: Any = "success", call_id: Any = "a", **extra: Any) -> dict[str, Any]:
    return {"status": status, "error": None, "result": None, "namespace": None,
            "call_id": call_id, **extra}


# -------------------------------------------------------------------- normalize_results


def test_failure_shape() -> None:
    assert failure("k", "why") == {"status": "failure", "error": "why", "result": None,
                                   "namespace": None, "call_id": "k"}


@pytest.mark.parametrize("raw", [None, {"status": "success"}, "results", 5])
def test_normalize_non_list_gives_failure_per_call(raw: Any) -> None:
    assert normalize_results(raw, ["a", "b"]) == [
        failure("a", "the device sent no result list"),
        failure("b", "the device sent no result list"),
    ]


def test_normalize_keeps_order_and_fills_every_field() -> None:
    raw = [
        {"status": "SUCCESS", "result": {"x": 1}, "call_id": "b", "junk": True},
        {"status": "Failure", "error": "bad", "call_id": "a", "namespace": "ns"},
    ]
    assert normalize_results(raw, ["a", "b"]) == [
        {"status": "success", "error": None, "result": {"x": 1}, "namespace": None,
         "call_id": "b"},
        {"status": "failure", "error": "bad", "result": None, "namespace": "ns",
         "call_id": "a"},
    ]


@pytest.mark.parametrize(
    ("status", "expected"),
    [("skipped", "skipped"), ("NONE", "none"), ("weird", "none"), (None, "none"), (3, "none"),
     ("ok", "none")],
)
def test_normalize_status_values(status: Any, expected: str) -> None:
    assert normalize_results([{"status": status, "call_id": "a"}], ["a"])[0]["status"] == expected


def test_normalize_non_object_entry_becomes_failure() -> None:
    out = normalize_results(["oops", result(call_id="a")], ["a"])
    assert out[0] == failure(None, "malformed result from the device: 'oops'")
    assert out[1] == result(call_id="a")
    assert len(out) == 2


def test_normalize_long_malformed_entry_is_truncated() -> None:
    out = normalize_results(["x" * 1000], [])
    assert out[0]["status"] == "failure"
    assert len(out[0]["error"]) == len("malformed result from the device: ") + 200


def test_normalize_missing_answer_is_added_as_failure() -> None:
    out = normalize_results([result(call_id="a")], ["a", "b", "c"])
    assert out == [
        result(call_id="a"),
        failure("b", "the device sent no result for this action"),
        failure("c", "the device sent no result for this action"),
    ]


def test_normalize_empty_list_gives_failure_per_call() -> None:
    assert normalize_results([], ["a"]) == [
        failure("a", "the device sent no result for this action")
    ]


def test_normalize_results_without_call_ids_are_kept_as_is() -> None:
    # A device that answers without call ids cannot be matched: its list is trusted.
    out = normalize_results([result(call_id=None), result(call_id=None)], ["a", "b"])
    assert out == [result(call_id=None), result(call_id=None)]


def test_normalize_no_call_ids_expected() -> None:
    assert normalize_results([], []) == []


# ------------------------------------------------------------------- CommandDispatcher


class Recorder:
    def __init__(self, accept: bool = True) -> None:
        self.frames: list[dict[str, Any]] = []
        self.accept = accept

    def __call__(self, frame: dict[str, Any]) -> bool:
        self.frames.append(frame)
        return self.accept


async def test_result_delivered_by_response_id() -> None:
    deliver = Recorder()
    dispatcher = CommandDispatcher("s1", deliver)
    frame = {"type": "command", "response_id": "r7"}
    running = asyncio.ensure_future(dispatcher.execute(frame, ["a"], timeout=5))
    await asyncio.sleep(0)
    assert deliver.frames == [frame]
    assert len(dispatcher) == 1
    assert dispatcher.set_result("other", []) is False
    assert dispatcher.set_result("r7", [{"status": "success", "call_id": "a", "result": 1}])
    out = await running
    assert out == [{"status": "success", "error": None, "result": 1, "namespace": None,
                    "call_id": "a"}]
    assert len(dispatcher) == 0
    assert dispatcher.set_result("r7", []) is False  # no longer pending
    assert dispatcher.session_id == "s1"


async def test_two_pending_commands_are_kept_apart() -> None:
    dispatcher = CommandDispatcher("s1", Recorder())
    first = asyncio.ensure_future(dispatcher.execute({"response_id": "r1"}, ["a"], 5))
    second = asyncio.ensure_future(dispatcher.execute({"response_id": "r2"}, ["b"], 5))
    await asyncio.sleep(0)
    assert len(dispatcher) == 2
    assert dispatcher.set_result("r2", [result(call_id="b")])
    assert dispatcher.set_result("r1", [result(status="failure", call_id="a")])
    assert await first == [result(status="failure", call_id="a")]
    assert await second == [result(call_id="b")]


async def test_timeout_gives_failure_per_call_id() -> None:
    dispatcher = CommandDispatcher("s1", Recorder())
    out = await dispatcher.execute({"response_id": "r1"}, ["a", "b"], timeout=0.01)
    assert out == [
        failure("a", "no result from the device within 0.01s"),
        failure("b", "no result from the device within 0.01s"),
    ]
    assert len(dispatcher) == 0
    assert dispatcher.set_result("r1", []) is False


async def test_undeliverable_gives_failure_without_waiting() -> None:
    deliver = Recorder(accept=False)
    dispatcher = CommandDispatcher("s1", deliver)
    async with asyncio.timeout(1):
        out = await dispatcher.execute({"response_id": "r1"}, ["a", "b"], timeout=60)
    assert out == [failure("a", "the device is not reachable"),
                   failure("b", "the device is not reachable")]
    assert len(deliver.frames) == 1
    assert len(dispatcher) == 0


async def test_unknown_response_id_returns_false() -> None:
    dispatcher = CommandDispatcher("s1", Recorder())
    assert dispatcher.set_result("nope", [result()]) is False


async def test_malformed_results_are_normalized() -> None:
    dispatcher = CommandDispatcher("s1", Recorder())
    running = asyncio.ensure_future(dispatcher.execute({"response_id": "r1"}, ["a"], 5))
    await asyncio.sleep(0)
    assert dispatcher.set_result("r1", {"not": "a list"})
    assert await running == [failure("a", "the device sent no result list")]


async def test_cancelled_execute_forgets_pending() -> None:
    dispatcher = CommandDispatcher("s1", Recorder())
    running = asyncio.ensure_future(dispatcher.execute({"response_id": "r1"}, ["a"], 60))
    await asyncio.sleep(0)
    assert len(dispatcher) == 1
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert len(dispatcher) == 0
    assert dispatcher.set_result("r1", []) is False
