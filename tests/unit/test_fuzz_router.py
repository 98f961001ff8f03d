"""Property-based fuzzing of the handler core, the gateway's frame router.

Invariant: :meth:`FrameRouter.handle` on a registered connection never raises; it answers
a malformed or unknown frame with exactly one ``error`` frame and keeps the connection
open; everything it sends is a frame a strict client accepts.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from aip_wire.frames import FrameError, parse_client_frame
from aip_wire.vocab import CLIENT_MESSAGE_TYPES
from gateway_service.gateway import Gateway
from gateway_service.handlers import FrameRouter
from gateway_service.log_safety import clip
from gateway_service.registry import Connection
from gateway_service.rules import Registration, device_info_scope, pin_identity
from gateway_service.settings import GatewaySettings
from tests.unit.fuzz_support import (
    ANY_JSON,
    BIG_INT_ERROR,
    BIG_INT_REQUEST,
    FUZZ,
    JSON_64,
    deep,
    encoded,
    frame_objects,
    junk_messages,
    well_typed_frames,
)
from tests.wire import SERVER_TYPES, STATUSES


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
        async with asyncio.timeout(5):
            await asyncio.gather(*conn.tasks)
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
        assert sent[0]["error"] == f"Unknown message type '{clip(parsed.type)}'"
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
