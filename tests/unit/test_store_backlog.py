"""The store's write backlog in bytes: what is queued whole and what is elided."""

from __future__ import annotations

from session_service.store_backlog import ALWAYS_KEPT, Backlog, elided


def test_results_are_admitted_until_the_limit_and_again_once_written() -> None:
    backlog = Backlog(limit=10_000)
    assert backlog.admit(6_000)
    assert not backlog.admit(6_000)  # would pass the limit
    assert backlog.bytes == 6_000
    backlog.written(6_000)
    assert backlog.admit(6_000)


def test_small_results_are_always_admitted() -> None:
    backlog = Backlog(limit=0)
    assert backlog.admit(ALWAYS_KEPT)
    assert not backlog.admit(ALWAYS_KEPT + 1)


def test_elided_results_keep_everything_but_the_payload() -> None:
    results = [{"status": "success", "error": None, "call_id": "c1", "result": "x" * 10}]
    (item,) = elided(results, 10)
    assert (item["status"], item["call_id"], item["error"]) == ("success", "c1", None)
    assert item["result"]["elided"] is True and item["result"]["bytes"] == 10
    assert results[0]["result"] == "x" * 10  # the session's own copy is untouched
    assert elided("odd", 3)["elided"] is True
