"""aip_wire.frames: lenient parsing of client frames. Enum values in any case, defaults,
unknown fields ignored, request and error given as JSON values kept as JSON text."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aip_wire.frames import FrameError, UnreadObject
from tests.unit.frames_support import parse


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
    # Checked for shape; what each result holds is left to the session service.
    assert frame.action_results == [UnreadObject()]
    assert frame.prev_response_id == "r7"


def test_action_results_other_than_objects_are_kept_as_they_came() -> None:
    frame = parse({"type": "command_results", "action_results": [1, "x", [2], None, {}]})
    assert frame.action_results == [1, "x", [2], None, UnreadObject()]


@pytest.mark.parametrize("results", ["not a list", 7, {"status": "success"}])
def test_action_results_that_are_not_a_list_are_refused(results: Any) -> None:
    with pytest.raises(FrameError):
        parse({"type": "command_results", "action_results": results})


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
