"""aip_wire.frames: client frames the parser refuses with a FrameError naming the
problem. Fields of the wrong type, no type, non-objects, invalid JSON or UTF-8, deep
nesting; out-of-range integers never crash it."""

from __future__ import annotations

import json

import pytest

from aip_wire.frames import FrameError, parse_client_frame
from tests.unit.frames_support import parse


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
