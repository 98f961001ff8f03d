"""aip_wire.frames: exact server frames. Their types, statuses and UTC timestamps, the
fields of each kind, ids, the compact wire encoding and the module's constants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from aip_wire import frames
from aip_wire.vocab import CLIENT_MESSAGE_TYPES, ClientType, Status

SERVER_TYPES = {
    "heartbeat",
    "task",
    "command",
    "task_end",
    "error",
    "device_info_request",
    "device_info_response",
}
STATUSES = {"continue", "completed", "failed", "ok", "error"}


def assert_timestamp_utc(value: object) -> None:
    assert isinstance(value, str)
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0)


def assert_server_frame(frame: dict[str, object]) -> None:
    assert frame["type"] in SERVER_TYPES
    assert frame["status"] in STATUSES
    assert_timestamp_utc(frame["timestamp"])
    # round trips through the wire encoding as a JSON object
    assert orjson.loads(frames.encode(frame)) == frame


def test_now_iso_has_utc_offset() -> None:
    assert_timestamp_utc(frames.now_iso())


@given(st.one_of(
    st.floats(min_value=0, max_value=4e9, allow_nan=False),
    st.integers(min_value=0, max_value=4_000_000_000).map(float),
    st.integers(min_value=0, max_value=4_000_000_000).map(lambda s: s + 0.9999995),
    st.integers(min_value=0, max_value=4_000_000_000).map(lambda s: s + 0.0000005),
))
@example(1795700000.9999996)
@example(59.999999)
def test_iso_from_epoch_is_datetimes_isoformat(stamp: float) -> None:
    assert frames.iso_from_epoch(stamp) == datetime.fromtimestamp(stamp, UTC).isoformat()


def test_new_id_is_unique_text() -> None:
    ids = {frames.new_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(isinstance(item, str) and item for item in ids)


def test_heartbeat_frame() -> None:
    frame = frames.heartbeat_frame()
    assert_server_frame(frame)
    assert frame["type"] == "heartbeat"
    assert frame["status"] == "ok"
    assert isinstance(frame["response_id"], str) and frame["response_id"]
    assert "session_id" not in frame
    assert frames.heartbeat_frame()["response_id"] != frame["response_id"]


def test_heartbeat_frame_with_session_id() -> None:
    frame = frames.heartbeat_frame(session_id="c@t-1234abcd")
    assert_server_frame(frame)
    assert frame["session_id"] == "c@t-1234abcd"


def test_error_frame() -> None:
    frame = frames.error_frame("bad thing")
    assert_server_frame(frame)
    assert frame["type"] == "error"
    assert frame["status"] == "error"
    assert frame["error"] == "bad thing"
    assert "session_id" not in frame
    assert frames.error_frame("x", session_id="s1")["session_id"] == "s1"


def test_device_info_response_frame_ok_echoes_request_id() -> None:
    frame = frames.device_info_response_frame(result={"os": "linux"}, response_id="q1")
    assert_server_frame(frame)
    assert frame["type"] == "device_info_response"
    assert frame["status"] == "ok"
    assert frame["result"] == {"os": "linux"}
    assert frame["response_id"] == "q1"
    assert "error" not in frame


def test_device_info_response_frame_error() -> None:
    frame = frames.device_info_response_frame(result=None, response_id=None, error="nope")
    assert_server_frame(frame)
    assert frame["status"] == "error"
    assert frame["error"] == "nope"
    assert frame["result"] is None
    assert isinstance(frame["response_id"], str) and frame["response_id"]


def test_command_frame() -> None:
    actions = [{"tool_name": "ls", "parameters": {}, "tool_type": "action", "call_id": "k"}]
    frame = frames.command_frame(
        session_id="s1", task_name="t1", response_id="r7", actions=actions
    )
    assert_server_frame(frame)
    assert frame["type"] == "command"
    assert frame["status"] == "continue"
    assert frame["session_id"] == "s1"
    assert frame["task_name"] == "t1"
    assert frame["response_id"] == "r7"
    assert frame["actions"] == actions
    for optional in ("agent_name", "process_name", "root_name"):
        assert optional not in frame


def test_command_frame_with_routing_fields() -> None:
    frame = frames.command_frame(
        session_id="s1",
        task_name="t1",
        response_id="r7",
        actions=[],
        agent_name="LinuxAgent",
        process_name="bash",
        root_name="root",
        status="completed",
    )
    assert_server_frame(frame)
    assert frame["agent_name"] == "LinuxAgent"
    assert frame["process_name"] == "bash"
    assert frame["root_name"] == "root"
    assert frame["status"] == "completed"


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_task_end_frame(status: str) -> None:
    frame = frames.task_end_frame(
        session_id="c@t-1234abcd", task_name="t1", status=status, result={"x": 1},
        error=None if status == "completed" else "boom",
    )
    assert_server_frame(frame)
    assert frame["type"] == "task_end"
    assert frame["status"] == status
    assert frame["session_id"] == "c@t-1234abcd"
    assert frame["result"] == {"x": 1}
    assert frame["error"] == (None if status == "completed" else "boom")
    assert isinstance(frame["response_id"], str)


def test_encode_is_compact_json_text() -> None:
    text = frames.encode({"type": "heartbeat", "status": "ok", "x": "é"})
    assert isinstance(text, str)
    assert text == '{"type":"heartbeat","status":"ok","x":"é"}'


def test_module_constants_match_the_spec() -> None:
    assert frozenset(
        {
            "register", "heartbeat", "task", "command_results", "task_end", "error",
            "device_info_request", "device_info_response",
        }
    ) == CLIENT_MESSAGE_TYPES
    assert frozenset({"device", "constellation"}) == frozenset(ClientType)
    for status in (Status.CONTINUE, Status.COMPLETED, Status.FAILED, Status.OK,
                   Status.ERROR):
        assert status in STATUSES
