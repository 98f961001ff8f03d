"""Property-based fuzzing of the frame parser, the gateway rules and the handler core.

Invariants:

* :func:`parse_client_frame` returns a :class:`ClientFrame` or raises :class:`FrameError`,
  whatever it is given; never any other exception.
* :meth:`FrameRouter.handle` on a registered connection never raises; it answers a
  malformed or unknown frame with exactly one ``error`` frame and keeps the connection
  open; everything it sends is a frame a strict client accepts.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aip_wire.frames import ClientFrame, FrameError, parse_client_frame
from aip_wire.vocab import CLIENT_MESSAGE_TYPES, ClientType
from gateway_service.gateway import Gateway
from gateway_service.handlers import FrameRouter
from gateway_service.registry import Connection
from gateway_service.rules import (
    Refusal,
    Registration,
    check_device,
    check_registration,
    check_target,
    device_info_scope,
    pin_identity,
    plan_task,
)
from gateway_service.settings import GatewaySettings
from gateway_service.ws_handler import close_code
from tests.wire import SERVER_TYPES, STATUSES

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


# --------------------------------------------------------------------- parser fuzzing

BIG_INT_REQUEST = '{"type":"task","request":[18446744073709551616]}'
BIG_INT_ERROR = '{"type":"error","error":{"n":-9223372036854775809}}'


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


# ---------------------------------------------------------------------- rules fuzzing


@FUZZ
@given(frame_objects(JSON_64).map(json.dumps), st.sets(st.sampled_from(["dev1", "dev2", ""])))
def test_check_registration_only_refuses(data: str, connected: set[str]) -> None:
    frame = check(data)
    if frame is None:
        return
    try:
        reg = check_registration(frame)
        if reg.target_id is not None:
            check_target(reg, reg.target_id in connected)
    except Refusal as refusal:
        assert 4000 <= close_code(refusal) <= 4999
        assert refusal.reason
        return
    assert frame.type == "register"
    assert reg.client_id.strip()
    assert reg.client_type in frozenset(ClientType)
    assert isinstance(reg.platform, str) and reg.platform
    assert isinstance(reg.device_info, dict)
    if reg.target_id is not None:
        assert reg.client_type == "constellation"
        assert reg.target_id in connected


@FUZZ
@given(frame_objects(JSON_64).map(json.dumps), st.sampled_from(["device", "constellation"]),
       st.sets(st.sampled_from(["dev1", "dev2"])))
def test_plan_task_only_raises_value_error(data: str, kind: str, connected: set[str]) -> None:
    frame = check(data)
    if frame is None:
        return
    try:
        plan = plan_task(frame, "dev1" if kind == "device" else "c1", kind)
        if plan.check_device:
            check_device(plan, plan.device_id in connected)
    except ValueError as exc:
        assert str(exc)
        return
    assert plan.request.strip()
    assert plan.session_id
    assert plan.task_name and not plan.task_name.startswith(".")
    assert "/" not in plan.task_name
    if kind == "device":
        assert plan.device_id == "dev1"
    else:
        assert plan.device_id in connected


# -------------------------------------------------------------------- handler fuzzing


class Sink:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def __call__(self, text: str) -> None:
        self.sent.append(text)

    def frames(self) -> list[dict[str, Any]]:
        return [json.loads(text) for text in self.sent]


def assert_strict_client_accepts(frame: dict[str, Any]) -> None:
    assert isinstance(frame, dict)
    assert frame["type"] in SERVER_TYPES
    assert frame["status"] in STATUSES
    stamp = datetime.fromisoformat(frame["timestamp"])
    assert stamp.utcoffset() == timedelta(0)


def expected_types(data: str | bytes, conn_kind: str, conn_id: str,
                   registered_target: str | None) -> list[str] | None:
    """What the router answers, from the rules; ``None``: malformed (one error frame)."""
    try:
        frame = parse_client_frame(data)
    except FrameError:
        return None
    except Exception:  # a parser bug: the router must still answer with one error frame
        return None
    if frame.type not in CLIENT_MESSAGE_TYPES:
        return ["error"]
    if pin_identity(frame, conn_id, conn_kind) is not None:
        return ["error"]
    if frame.type == "heartbeat":
        return ["heartbeat"]
    if frame.type in {"task", "error", "register"}:
        return ["error"]  # no replica is reachable: a task always ends in an error frame
    if frame.type in {"command_results", "task_end"}:
        return []
    if frame.type == "device_info_request":
        if conn_kind == "device":
            return ["error"]
        return ["device_info_response"]
    if frame.type == "device_info_response":
        if conn_kind == "device" and frame.metadata is not None:
            return []
        return ["error"]
    raise AssertionError(frame.type)


async def route_one(
    data: str | bytes, as_constellation: bool, target: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Any], list[Any], Connection]:
    loop = asyncio.get_running_loop()
    loop_errors: list[Any] = []
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    gateway = Gateway(GatewaySettings(session_service="127.0.0.1:1", gateway_id="gw-test"))
    closes: list[Any] = []

    def closer(code: int, reason: str) -> None:
        closes.append((code, reason))

    dev_sink = Sink()
    dev = gateway.register(
        Registration("dev1", "device", "linux", None, {"os": "Linux"}), dev_sink, closer
    )
    conn, sink = dev, dev_sink
    if as_constellation:
        sink = Sink()
        conn = gateway.register(
            Registration("c1", "constellation", "windows", target, {}), sink, closer
        )
    router = FrameRouter(gateway)
    router.handle(conn, data)
    for _ in range(5):
        await asyncio.sleep(0)
    if conn.tasks:
        await asyncio.wait_for(asyncio.gather(*conn.tasks), 5)
    await conn.outbox.drain(5)
    await dev.outbox.drain(5)
    for _ in range(5):
        await asyncio.sleep(0)
    others = dev_sink.frames() if as_constellation else []
    return sink.frames(), others, closes, loop_errors, conn


def run_router(data: str | bytes, as_constellation: bool, target: str | None) -> None:
    sent, others, closes, loop_errors, conn = asyncio.run(
        route_one(data, as_constellation, target)
    )
    assert loop_errors == []
    assert closes == []  # a bad frame after registration never closes the connection
    assert others == []  # nothing reaches another client
    for frame in sent:
        assert_strict_client_accepts(frame)
    kind = "constellation" if as_constellation else "device"
    cid = "c1" if as_constellation else "dev1"
    expected = expected_types(data, kind, cid, target)
    if expected is None:
        assert [f["type"] for f in sent] == ["error"], sent
        assert sent[0]["error"].startswith("Invalid message format")
        return
    assert [f["type"] for f in sent] == expected, (data, sent)
    parsed = parse_client_frame(data)
    if expected == ["error"] and parsed.type == "task" and parsed.session_id is not None:
        assert sent[0]["session_id"] == parsed.session_id
    if parsed.type not in CLIENT_MESSAGE_TYPES:
        assert sent[0]["error"] == f"Unknown message type '{parsed.type}'"
    if expected == ["device_info_response"]:
        answer = sent[0]
        if parsed.request_id is not None:
            assert answer["response_id"] == parsed.request_id
        wanted, problem = device_info_scope(parsed, "constellation", target)
        if problem is None and wanted == "dev1":
            assert answer["status"] == "ok"
            assert answer["result"] == {"os": "Linux"}
        else:
            assert answer["status"] == "error"
            assert answer["error"]
    if expected == [] and parsed.type == "device_info_response":
        pushed = parsed.metadata or {}
        info = pushed.get("system_info")
        assert conn.device_info == (info if isinstance(info, dict) else pushed)


_WELL_TYPED = encoded(well_typed_frames(JSON_64))
_FRAME_LIKE = encoded(frame_objects(JSON_64))
# Mostly frames that reach the handlers; some with wrong types; some junk.
router_inputs = st.integers(0, 9).flatmap(
    lambda n: _WELL_TYPED if n < 6 else _FRAME_LIKE if n < 8 else junk_messages
)


@FUZZ
@given(router_inputs, st.booleans(), st.sampled_from([None, "dev1"]))
def test_router_never_raises_and_answers_exactly(
    data: str | bytes, as_constellation: bool, target: str | None
) -> None:
    run_router(data, as_constellation, target)


@FUZZ
@given(encoded(st.one_of(well_typed_frames(ANY_JSON), frame_objects(ANY_JSON))), st.booleans())
@example(BIG_INT_REQUEST, False)
@example(BIG_INT_ERROR, True)
def test_router_never_raises_any_integers(data: str | bytes, as_constellation: bool) -> None:
    run_router(data, as_constellation, None)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe\xfd",
        "not json",
        "[]",
        '"heartbeat"',
        "{}",
        '{"type": 5}',
        '{"type": "heartbeat", "client_id": 5}',
        '{"type": "task", "request": true}',
        '{"type": "LAUNCH"}',
        '{"type": "register_confirm", "status": "ok"}',
        deep(10_000),
        '{"type":"task","request":' + deep(10_000) + "}",
        "x" * 2_000_000,
    ],
)
@pytest.mark.parametrize("as_constellation", [False, True])
def test_router_malformed_and_unknown_examples(data: str | bytes, as_constellation: bool) -> None:
    run_router(data, as_constellation, None)


def test_router_answers_heartbeat_with_spoofed_identity() -> None:
    run_router('{"type":"HeartBeat","client_id":"other","client_type":"device"}', True, None)


def test_router_task_without_replica_answers_one_error() -> None:
    sent, _, _, errors, _ = asyncio.run(route_one(
        '{"type":"task","request":"x","session_id":"s1","status":"continue"}', False, None
    ))
    assert errors == []
    assert [f["type"] for f in sent] == ["error"]
    assert sent[0]["session_id"] == "s1"
    assert sent[0]["error"].startswith("No session service replica is reachable")
