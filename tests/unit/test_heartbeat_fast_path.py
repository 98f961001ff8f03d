"""aip_wire.frames.is_plain_heartbeat agrees with the full parser it stands in for."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import assume, example, given
from hypothesis import strategies as st

from aip_wire import frames
from aip_wire.frames import ClientFrame, FrameError, is_plain_heartbeat, parse_client_frame
from tests.unit.fuzz_support import (
    ANY_JSON,
    FUZZ,
    JSON_64,
    encoded,
    frame_objects,
    random_case,
    well_typed_frames,
)


def full_parser_says_heartbeat(data: str | bytes) -> bool:
    try:
        return parse_client_frame(data).type == "heartbeat"
    except FrameError:
        return False


def as_heartbeat(frame: dict[str, Any], spelling: str) -> dict[str, Any]:
    return {**frame, "type": spelling}


heartbeat_spellings = st.one_of(random_case("heartbeat"), st.just(" Heartbeat\t"))


@FUZZ
@given(encoded(st.builds(as_heartbeat, frame_objects(ANY_JSON), heartbeat_spellings)))
@example('{"type":"heartbeat","client_id":5}')
@example('{"type":"heartbeat","metadata":[]}')
@example('{"type":"heartbeat","action_results":{}}')
@example('{"type":"heartbeat","request":7}')
@example('{"type":"heartbeat","status":null,"error":{"x":1}}')
@example('{"type":"heartbeat","error":' + str(2**70) + "}")
@example(b'{"type":"heartbeat","client_id":"\xff"}')
@example('{"type":"heartbeat"}x')
@example('[{"type":"heartbeat"}]')
def test_a_fast_heartbeat_is_always_one_for_the_full_parser(data: str | bytes) -> None:
    if is_plain_heartbeat(data):
        assert full_parser_says_heartbeat(data)


@FUZZ
@given(encoded(st.builds(as_heartbeat, well_typed_frames(JSON_64),
                         st.sampled_from(["heartbeat", "Heartbeat", " heartbeat\t"]))))
def test_well_formed_heartbeats_take_the_fast_path(data: str | bytes) -> None:
    """As the reference clients spell them; other spellings take the full parser."""
    # Escaped non-ASCII text can take a generated frame past the size the fast path
    # takes by design (test_a_large_heartbeat_takes_the_full_parser).
    assume(len(data) <= frames._HEARTBEAT_SIZE_LIMIT)
    assert full_parser_says_heartbeat(data)
    assert is_plain_heartbeat(data)


def test_a_reference_clients_heartbeat_takes_the_fast_path() -> None:
    frame = {"type": "heartbeat", "status": "ok", "client_type": "device",
             "client_id": "dev1", "session_id": None, "task_name": None, "target_id": None,
             "request": None, "action_results": None, "timestamp": "2026-01-01T00:00:00",
             "request_id": None, "prev_response_id": None, "error": None, "metadata": None}
    assert is_plain_heartbeat(json.dumps(frame))
    assert not is_plain_heartbeat(json.dumps({**frame, "type": "task"}))


def test_a_large_heartbeat_takes_the_full_parser() -> None:
    frame = {"type": "heartbeat", "client_id": "dev1", "metadata": {"blob": "x" * 5000}}
    assert not is_plain_heartbeat(json.dumps(frame))
    assert full_parser_says_heartbeat(json.dumps(frame))


def test_the_fast_path_checks_every_field_of_the_model() -> None:
    """A field added to ClientFrame must be added to is_plain_heartbeat's checks too."""
    checked = {*frames._TEXT_FIELDS, "type", "request", "action_results", "metadata",
               "error"}
    assert checked == set(ClientFrame.model_fields)
