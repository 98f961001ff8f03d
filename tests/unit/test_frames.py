"""aip_wire.frames: lenient parsing of client frames, exact server frames."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from aip_wire import frames
from aip_wire.frames import ClientFrame, FrameError, parse_client_frame
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


def parse(obj: object) -> ClientFrame:
    return parse_client_frame(json.dumps(obj))


# --------------------------------------------------------------------------- input


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("HEARTBEAT", "heartbeat"),
        ("Register", "register"),
        ("  Task  ", "task"),
        ("Command_Results", "command_results"),
        ("DEVICE_INFO_REQUEST", "device_info_request"),
    ],
)
def test_type_is_case_insensitive(raw: str, expected: str) -> None:
    assert parse({"type": raw}).type == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("OK", "ok"), ("Continue", "continue"), ("COMPLETED", "completed"), (" Failed ", "failed")],
)
def test_status_is_case_insensitive(raw: str, expected: str) -> None:
    assert parse({"type": "heartbeat", "status": raw}).status == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("DEVICE", "device"), ("Constellation", "constellation"), (" device ", "device")],
)
def test_client_type_is_case_insensitive(raw: str, expected: str) -> None:
    assert parse({"type": "register", "client_type": raw}).client_type == expected


def test_status_defaults_to_ok_when_absent_or_null() -> None:
    assert parse({"type": "heartbeat"}).status == "ok"
    assert parse({"type": "heartbeat", "status": None}).status == "ok"


def test_client_type_absent_or_null_stays_none() -> None:
    assert parse({"type": "register"}).client_type is None
    assert parse({"type": "register", "client_type": None}).client_type is None


def test_unknown_fields_are_ignored() -> None:
    frame = parse(
        {"type": "heartbeat", "client_id": "dev1", "bogus": [1, 2], "x": {"y": None}, "Z": 1}
    )
    assert frame.type == "heartbeat"
    assert frame.client_id == "dev1"
    assert not hasattr(frame, "bogus")
    assert "bogus" not in frame.model_dump()


def test_unknown_type_value_is_parsed_lowercased() -> None:
    # Routing decides what to do with it; the parser does not refuse it.
    assert parse({"type": "Launch_Missiles"}).type == "launch_missiles"


def test_reference_client_frame_with_all_fields_null() -> None:
    keys = [
        "status", "client_type", "client_id", "session_id", "task_name", "target_id",
        "request", "action_results", "timestamp", "request_id", "prev_response_id",
        "error", "metadata",
    ]
    obj: dict[str, object] = {key: None for key in keys}
    obj["type"] = "heartbeat"
    frame = parse(obj)
    assert frame.status == "ok"
    assert frame.model_dump(exclude={"type", "status"}) == {key: None for key in keys[1:]}


def test_full_task_frame() -> None:
    frame = parse(
        {
            "type": "task",
            "client_type": "constellation",
            "client_id": "c1",
            "target_id": "dev1",
            "request": "do it",
            "task_name": "galaxy/x/t-1",
            "session_id": "constellation-name@t-1234abcd",
            "status": "continue",
            "timestamp": "2024-01-01T00:00:00+00:00",
        }
    )
    assert frame.type == "task"
    assert frame.client_type == "constellation"
    assert frame.client_id == "c1"
    assert frame.target_id == "dev1"
    assert frame.request == "do it"
    assert frame.task_name == "galaxy/x/t-1"
    assert frame.session_id == "constellation-name@t-1234abcd"
    assert frame.status == "continue"


def test_command_results_frame() -> None:
    results = [{"status": "success", "error": None, "result": {"a": 1}, "call_id": "k1"}]
    frame = parse(
        {
            "type": "command_results",
            "client_id": "dev1",
            "session_id": "s1",
            "prev_response_id": "r7",
            "action_results": results,
            "status": "continue",
        }
    )
    assert frame.action_results == results
    assert frame.prev_response_id == "r7"


def test_request_given_as_object_is_kept_as_json_text() -> None:
    frame = parse({"type": "task", "request": {"steps": [[{"tool_name": "ls"}]]}})
    assert isinstance(frame.request, str)
    assert json.loads(frame.request) == {"steps": [[{"tool_name": "ls"}]]}


def test_request_given_as_list_is_kept_as_json_text() -> None:
    frame = parse({"type": "task", "request": [{"tool_name": "ls", "parameters": {}}]})
    assert isinstance(frame.request, str)
    assert json.loads(frame.request) == [{"tool_name": "ls", "parameters": {}}]


def test_request_string_is_kept_verbatim() -> None:
    assert parse({"type": "task", "request": "  open notepad  "}).request == "  open notepad  "


def test_error_given_as_non_string_is_kept_as_json_text() -> None:
    frame = parse({"type": "error", "error": {"code": 3, "msg": "boom"}})
    assert frame.error is not None
    assert json.loads(frame.error) == {"code": 3, "msg": "boom"}
    assert parse({"type": "error", "error": 12}).error == "12"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("type", 5),
        ("type", None),
        ("type", ["task"]),
        ("status", 5),
        ("status", ["ok"]),
        ("client_type", 1),
        ("client_id", 5),
        ("client_id", {"a": 1}),
        ("session_id", True),
        ("task_name", 1.5),
        ("target_id", []),
        ("request", True),
        ("request", 42),
        ("action_results", {"a": 1}),
        ("action_results", "x"),
        ("timestamp", 1700000000),
        ("request_id", 7),
        ("prev_response_id", 7),
        ("metadata", []),
        ("metadata", "info"),
    ],
)
def test_wrong_types_are_rejected_with_a_message_naming_the_field(
    field: str, value: object
) -> None:
    obj: dict[str, object] = {"type": "heartbeat", field: value}
    with pytest.raises(FrameError) as info:
        parse(obj)
    message = str(info.value)
    assert message.startswith("Invalid message format: ")
    assert f"field '{field}'" in message


def test_missing_type_is_rejected() -> None:
    with pytest.raises(FrameError, match=r"missing required field 'type'"):
        parse({"status": "ok", "Type": "heartbeat"})
    with pytest.raises(FrameError, match=r"missing required field 'type'"):
        parse({})


@pytest.mark.parametrize("text", ["[]", "[1, 2]", '"heartbeat"', "42", "null", "true", "1.5"])
def test_non_object_json_is_rejected(text: str) -> None:
    with pytest.raises(FrameError, match=r"a frame must be a JSON object"):
        parse_client_frame(text)


@pytest.mark.parametrize("text", ["", "{", "{'type': 'x'}", "type=heartbeat", '{"type":"x",}'])
def test_invalid_json_is_rejected(text: str) -> None:
    with pytest.raises(FrameError, match=r"^Invalid message format: not valid JSON"):
        parse_client_frame(text)


def test_bytes_holding_utf8_json_are_accepted() -> None:
    frame = parse_client_frame('{"type":"TASK","request":"héllo ✓"}'.encode())
    assert frame.type == "task"
    assert frame.request == "héllo ✓"


@pytest.mark.parametrize(
    "data",
    [b"\xff", b'{"type":"heartbeat","client_id":"\xc3\x28"}', b"\x80abc", b"\xed\xa0\x80"],
)
def test_invalid_utf8_bytes_are_rejected(data: bytes) -> None:
    with pytest.raises(FrameError, match=r"^Invalid message format: not valid UTF-8$"):
        parse_client_frame(data)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 10_000 + "]" * 10_000,
        '{"type":' + "[" * 10_000 + "]" * 10_000 + "}",
        '{"type":"task","request":' + "[" * 10_000 + "]" * 10_000 + "}",
        '{"type":"error","error":' + '{"a":' * 10_000 + "1" + "}" * 10_000 + "}",
        '{"type":"register","metadata":' + '{"a":' * 10_000 + "1" + "}" * 10_000 + "}",
        '{"type":"command_results","action_results":' + "[" * 10_000 + "]" * 10_000 + "}",
        '{"type":"task","request":' + "[" * 10_000,  # deep and truncated
    ],
)
def test_deep_nesting_is_rejected_without_recursion_error(text: str) -> None:
    with pytest.raises(FrameError, match=r"^Invalid message format: "):
        parse_client_frame(text)
    with pytest.raises(FrameError):
        parse_client_frame(text.encode())


def test_moderate_nesting_in_request_is_kept() -> None:
    nested: object = "leaf"
    for _ in range(50):
        nested = [nested]
    frame = parse({"type": "task", "request": nested})
    assert frame.request is not None
    assert json.loads(frame.request) == nested


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"task","request":[18446744073709551616]}',
        '{"type":"task","request":{"n":-9223372036854775809}}',
        '{"type":"error","error":18446744073709551616}',
        '{"type":"error","error":{"n":' + "9" * 40 + "}}",
    ],
)
def test_out_of_range_integers_in_request_or_error_give_frame_error(text: str) -> None:
    # The JSON is valid; Python's json module parses it. The frame must either be
    # accepted (the number kept in the JSON text) or refused with a FrameError, never
    # crash with another exception.
    try:
        frame = parse_client_frame(text)
    except FrameError:
        return
    kept = frame.request if frame.type == "task" else frame.error
    assert kept is not None
    assert json.loads(kept) == json.loads(text)["request" if frame.type == "task" else "error"]


def test_frame_error_is_a_value_error() -> None:
    assert issubclass(FrameError, ValueError)


# -------------------------------------------------------------------------- output


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
