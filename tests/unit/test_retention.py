"""session_service.core.retention: ended sessions in memory within a budget of bytes."""

from __future__ import annotations

import json

from session_service.core.log_budget import approx_bytes
from session_service.core.retention import (
    COMMAND_OVERHEAD,
    SESSION_OVERHEAD,
    EndedSessions,
    estimated_bytes,
)
from session_service.core.session import CommandEntry


def test_the_estimate_is_about_the_json_of_the_log_and_the_result_plus_overheads() -> None:
    entries = [CommandEntry(0, "r0", [{"tool_name": "a"}], 1.0, results=["x" * 5000]),
               CommandEntry(1, "r1", [], 2.0)]  # no results yet
    size = estimated_bytes('{"steps": []}', entries, {"ok": True})
    assert size == (SESSION_OVERHEAD + len('{"steps": []}') + approx_bytes({"ok": True})
                    + 2 * COMMAND_OVERHEAD + approx_bytes([{"tool_name": "a"}])
                    + approx_bytes(["x" * 5000]) + approx_bytes([]) + approx_bytes(None))
    # Strings dominate, and they are counted as their JSON is long.
    exact = (len('{"steps": []}') + len('{"ok":true}') + len('[{"tool_name":"a"}]')
             + len(json.dumps(["x" * 5000])) + len("[]"))
    assert abs(size - SESSION_OVERHEAD - 2 * COMMAND_OVERHEAD - exact) < 100
    assert estimated_bytes("", [], None) == SESSION_OVERHEAD + approx_bytes(None)


def test_the_oldest_settled_sessions_go_first_once_over_the_budget() -> None:
    ended = EndedSessions(budget=1000, max_count=100, retention=3600)
    held = [ended.add(name, 10.0 + n, 400) for n, name in enumerate("abcd")]
    assert ended.evict(20.0) == []  # 1600 bytes, but nothing is settled yet
    for entry in held[:3]:
        entry.settled = True
    assert ended.evict(20.0) == ["a", "b"]  # down to 800 bytes
    assert ended.bytes == 800 and len(ended) == 2
    assert ended.evict(20.0) == []


def test_an_unsettled_end_holds_back_the_younger_ones() -> None:
    ended = EndedSessions(budget=100, max_count=100, retention=3600)
    first = ended.add("first", 1.0, 200)
    ended.add("second", 2.0, 200).settled = True
    assert ended.evict(5.0) == []  # records settle in order: wait for the first
    first.settled = True
    assert ended.evict(5.0) == ["first", "second"] and ended.bytes == 0


def test_the_count_and_the_retention_bound_it_too() -> None:
    ended = EndedSessions(budget=10**9, max_count=2, retention=60)
    for n, name in enumerate("abc"):
        ended.add(name, 100.0 + n, 10).settled = True
    assert ended.evict(110.0) == ["a"]
    ended.add("unsettled", 105.0, 10)
    assert ended.evict(166.0) == ["b", "c", "unsettled"]  # past retention, settled or not
