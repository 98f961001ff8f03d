"""Property-based fuzzing of the frame parser.

Invariant: :func:`parse_client_frame` returns a :class:`ClientFrame` or raises
:class:`FrameError`, whatever it is given; never any other exception.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from aip_wire.frames import FrameError, parse_client_frame
from aip_wire.vocab import CLIENT_MESSAGE_TYPES
from tests.unit.fuzz_support import (
    ANY_JSON,
    BIG_INT_ERROR,
    BIG_INT_REQUEST,
    CLIENT_TYPE_NAMES,
    FUZZ,
    INT64,
    JSON_64,
    SMALL_FUZZ,
    check,
    encoded,
    frame_objects,
    junk_messages,
    random_case,
    well_typed_frames,
)


@FUZZ
@given(encoded(frame_objects(ANY_JSON)))
@example(BIG_INT_REQUEST)
@example(BIG_INT_ERROR)
def test_parse_frame_like_objects_any_integers(data: str | bytes) -> None:
    check(data)


@FUZZ
@given(encoded(st.one_of(well_typed_frames(JSON_64), frame_objects(JSON_64))))
def test_parse_frame_like_objects(data: str | bytes) -> None:
    check(data)


@FUZZ
@given(encoded(JSON_64))
def test_parse_random_json_values(data: str | bytes) -> None:
    frame = check(data)
    value = json.loads(data)
    if not isinstance(value, dict):
        assert frame is None


@FUZZ
@given(junk_messages)
def test_parse_junk(data: str | bytes) -> None:
    check(data)


@FUZZ
@given(st.text())
def test_parse_random_text(data: str) -> None:
    check(data)


@FUZZ
@given(st.binary())
def test_parse_random_bytes(data: bytes) -> None:
    frame = check(data)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        assert frame is None


@FUZZ
@given(st.sampled_from(CLIENT_TYPE_NAMES).flatmap(random_case),
       st.sampled_from(["ok", "continue", "completed", "failed", "error"]).flatmap(random_case),
       st.one_of(st.none(), st.sampled_from(["device", "constellation"]).flatmap(random_case)))
def test_parse_random_case_enums(kind: str, status: str, client_type: str | None) -> None:
    frame = parse_client_frame(json.dumps(
        {"type": kind, "status": status, "client_type": client_type}
    ))
    assert frame.type == kind.strip().lower()
    assert frame.type in CLIENT_MESSAGE_TYPES
    assert frame.status == status.strip().lower()
    assert frame.client_type == (client_type.strip().lower() if client_type else None)


@FUZZ
@given(
    st.sampled_from(["type", "status", "client_type", "client_id", "session_id", "task_name",
                     "target_id", "timestamp", "request_id", "prev_response_id"]),
    st.one_of(st.integers(*INT64), st.floats(allow_nan=False), st.booleans(),
              st.lists(st.integers(0, 9), max_size=3),
              st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=2)),
)
def test_parse_wrong_typed_string_fields(field: str, value: Any) -> None:
    obj = {"type": "heartbeat", field: value}
    with pytest.raises(FrameError) as info:
        parse_client_frame(json.dumps(obj))
    assert f"field '{field}'" in str(info.value)


@SMALL_FUZZ
@given(st.integers(100_000, 1_000_000), st.sampled_from(
    ["request", "client_id", "error", "task_name", "session_id", "type"]))
def test_parse_huge_strings(size: int, field: str) -> None:
    obj = {"type": "task", field: "é" * size}
    frame = check(json.dumps(obj, ensure_ascii=False).encode())
    assert frame is not None
    assert getattr(frame, field) == "é" * size


def test_parse_huge_junk_strings() -> None:
    check("x" * 5_000_000)
    check(b"\xff" * 1_000_000)
    check("[" * 2_000_000)
    check('{"type":"' + "a" * 5_000_000)
