"""What the property-based fuzz tests share: their hypothesis settings, strategies for
JSON values, frame-like objects and junk messages, and the parser invariant ``check``."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from aip_wire.frames import ClientFrame, FrameError, parse_client_frame
from aip_wire.vocab import CLIENT_MESSAGE_TYPES
from tests.wire import STATUSES

FUZZ = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
SMALL_FUZZ = settings(
    max_examples=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

CLIENT_TYPE_NAMES = sorted(CLIENT_MESSAGE_TYPES)
INT64 = (-(2**63), 2**63 - 1)

# ------------------------------------------------------------------------- strategies


def json_values(ints: st.SearchStrategy[int]) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        ints,
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=30),
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=5),
            st.dictionaries(st.text(max_size=10), children, max_size=5),
        ),
        max_leaves=25,
    )


ANY_JSON = json_values(st.integers())
JSON_64 = json_values(st.integers(*INT64))


def random_case(word: str) -> st.SearchStrategy[str]:
    flips = st.lists(st.booleans(), min_size=len(word), max_size=len(word))
    pad = st.sampled_from(["", " ", "\t", "  "])
    return st.tuples(pad, flips, pad).map(
        lambda t: t[0] + "".join(c.upper() if f else c for c, f in zip(word, t[1], strict=True))
        + t[2]
    )


def frame_objects(json_strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Frame-like objects: plausible fields of the right type, the wrong type, or junk."""
    names = st.sampled_from(["dev1", "c1", "dev2", "", "s1", "constellation-name@t-1234abcd"])
    text_field = st.one_of(st.none(), names, st.text(max_size=20), json_strategy)
    type_value = st.one_of(
        st.sampled_from(CLIENT_TYPE_NAMES).flatmap(random_case),
        st.sampled_from(["command", "register_confirm", "", "unknown"]),
        st.text(max_size=15),
        json_strategy,
    )
    status_value = st.one_of(
        st.none(),
        st.sampled_from(["ok", "continue", "completed", "failed", "error"]).flatmap(random_case),
        text_field,
    )
    kind_value = st.one_of(
        st.none(), st.sampled_from(["device", "constellation"]).flatmap(random_case), text_field
    )
    result = st.fixed_dictionaries(
        {"status": st.sampled_from(["success", "failure", "skipped", "none"]),
         "call_id": st.one_of(st.none(), st.text(max_size=5))},
        optional={"result": json_strategy, "error": st.one_of(st.none(), st.text(max_size=10))},
    )
    return st.fixed_dictionaries(
        {"type": type_value},
        optional={
            "status": status_value,
            "client_type": kind_value,
            "client_id": text_field,
            "session_id": text_field,
            "task_name": st.one_of(text_field, st.just("galaxy/x/t-1"), st.just("../../x")),
            "target_id": text_field,
            "request": st.one_of(st.text(max_size=30), json_strategy),
            "action_results": st.one_of(st.lists(result, max_size=3), json_strategy),
            "timestamp": st.one_of(st.just("2024-05-01T12:00:00+00:00"), text_field),
            "request_id": text_field,
            "prev_response_id": text_field,
            "error": st.one_of(st.text(max_size=20), json_strategy),
            "metadata": st.one_of(
                st.none(),
                st.fixed_dictionaries({}, optional={
                    "platform": st.one_of(st.sampled_from(["linux", "windows"]), json_strategy),
                    "system_info": json_strategy,
                }),
                json_strategy,
            ),
            "extra_field": json_strategy,
            "Type": json_strategy,
        },
    )


def well_typed_frames(json_strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Frames whose fields all have the right type: they reach the handlers."""
    ids = st.one_of(st.none(), st.sampled_from(["dev1", "c1", "dev2", "", "s1"]),
                    st.text(max_size=10))
    return st.fixed_dictionaries(
        {"type": st.one_of(st.sampled_from(CLIENT_TYPE_NAMES).flatmap(random_case),
                           st.text(max_size=10))},
        optional={
            "status": st.one_of(st.none(), st.sampled_from(sorted(STATUSES)).flatmap(random_case)),
            "client_type": st.one_of(
                st.none(), st.sampled_from(["device", "constellation"]).flatmap(random_case)
            ),
            "client_id": ids,
            "session_id": ids,
            "task_name": st.one_of(ids, st.just("galaxy/x/t-1"), st.just("../x")),
            "target_id": ids,
            "request": st.one_of(st.none(), st.text(max_size=20),
                                 st.lists(json_strategy, max_size=3),
                                 st.dictionaries(st.text(max_size=5), json_strategy, max_size=3)),
            "action_results": st.one_of(st.none(), st.lists(json_strategy, max_size=3)),
            "request_id": ids,
            "prev_response_id": ids,
            "error": st.one_of(st.none(), st.text(max_size=10), json_strategy),
            "metadata": st.one_of(
                st.none(),
                st.dictionaries(st.text(max_size=5), json_strategy, max_size=3),
                st.fixed_dictionaries({"system_info": st.dictionaries(
                    st.text(max_size=5), json_strategy, max_size=3)}),
            ),
            "unknown": json_strategy,
        },
    )


def encoded(objects: st.SearchStrategy[Any]) -> st.SearchStrategy[str | bytes]:
    """A JSON value as a WebSocket message: text (ASCII-escaped or not) or UTF-8 bytes."""
    return st.tuples(objects, st.booleans(), st.booleans()).map(
        lambda t: (
            json.dumps(t[0], ensure_ascii=t[1]).encode()
            if t[2]
            else json.dumps(t[0], ensure_ascii=t[1])
        )
    )


def deep(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


junk_messages = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    st.sampled_from([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b'{"type":"heartbeat"\xff}',
                     "", "{", "null", "[]", "[1]", '"task"', "NaN", "1e999"]),
    st.integers(1, 12_000).map(deep),
    st.integers(1, 12_000).map(lambda n: '{"type":"task","request":' + deep(n) + "}"),
    st.integers(1, 3_000).map(lambda n: '{"type":"error","error":' + '{"a":' * n + "1"
                              + "}" * n + "}"),
    encoded(ANY_JSON),
)


def check(data: str | bytes) -> ClientFrame | None:
    """The parser invariant; returns the frame or ``None`` for a FrameError."""
    try:
        frame = parse_client_frame(data)
    except FrameError as exc:
        assert str(exc).startswith("Invalid message format: ")
        return None
    assert isinstance(frame, ClientFrame)
    assert isinstance(frame.type, str)
    assert frame.type == frame.type.strip().lower()
    assert isinstance(frame.status, str)
    assert frame.status == frame.status.strip().lower()
    if frame.client_type is not None:
        assert frame.client_type == frame.client_type.strip().lower()
    assert frame.request is None or isinstance(frame.request, str)
    assert frame.error is None or isinstance(frame.error, str)
    return frame


BIG_INT_REQUEST = '{"type":"task","request":[18446744073709551616]}'
BIG_INT_ERROR = '{"type":"error","error":{"n":-9223372036854775809}}'
