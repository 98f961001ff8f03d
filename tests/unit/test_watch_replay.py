"""A watcher that joins a running session first gets what happened so far, in order:
commands, their results and the model's turns interleaved as they happened."""

from __future__ import annotations

from aip_wire.vocab import RequesterKind
from session_service.api_servicer import _past_updates
from session_service.core.session import CommandEntry, Session, UpdateKind


def session() -> Session:
    return Session(session_id="s", task_name="t", request="do it", device_id="d",
                   platform="linux", device_info={}, requester_id="r",
                   requester_kind=RequesterKind.BACKEND, origin_gateway="",
                   device_gateway="g")


def test_turns_and_commands_replay_in_the_order_they_happened() -> None:
    s = session()
    s.turns.append({"seq": 0, "at": 10.0, "text": "", "tool_calls": [{"name": "ls"}]})
    s.commands.append(CommandEntry(0, "r0", [{"tool_name": "ls"}], 11.0,
                                   results=[{"status": "success"}], received_at=12.0))
    s.turns.append({"seq": 1, "at": 13.0, "text": "done"})
    s.commands.append(CommandEntry(1, "r1", [{"tool_name": "cat"}], 14.0))  # unanswered
    kinds = [(u.kind, u.response_id) for u in _past_updates(s)]
    assert kinds == [
        (UpdateKind.MODEL_TURN, ""), (UpdateKind.COMMAND_SENT, "r0"),
        (UpdateKind.RESULTS_RECEIVED, "r0"), (UpdateKind.MODEL_TURN, ""),
        (UpdateKind.COMMAND_SENT, "r1"),
    ]
    assert _past_updates(s)[3].detail == {"seq": 1, "at": 13.0, "text": "done"}
