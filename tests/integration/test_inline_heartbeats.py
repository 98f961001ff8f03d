"""Heartbeats answered where the gateway's socket reads them: the same answers, in order.

A registered client's plain heartbeat is answered as the WebSocket protocol reads it
while nothing is pending for that client; anything else, or a heartbeat behind it, takes
the application's receive loop. Frames sent back to back in one TCP write must come
back answered one for one, in the order they were sent, whichever way each one went.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway_service.handlers import FrameRouter
from tests.integration.exchange_support import assert_ack, heartbeat
from tests.raw_ws import TEXT, RawSocket, frame, text_frame
from tests.stack import HOST, Stack, register_frame


async def registered(stack: Stack, client_id: str) -> RawSocket:
    raw = await RawSocket.open(HOST, stack.gw.port)
    await raw.send(text_frame(register_frame(client_id)))
    _, payload = await raw.next_data_frame()
    assert json.loads(payload)["status"] == "ok"
    return raw


async def replies(raw: RawSocket, count: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(count):
        opcode, payload = await raw.next_data_frame()
        assert opcode == TEXT
        out.append(json.loads(payload))
    return out


@pytest.fixture
def inline_answers(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """What every inline answer was (its reply, or ``None`` when declined)."""
    seen: list[str | None] = []
    answer = FrameRouter.answer_inline

    def counting(self: FrameRouter, conn: Any, data: bytes) -> str | None:
        reply = answer(self, conn, data)
        seen.append(reply)
        return reply

    monkeypatch.setattr(FrameRouter, "answer_inline", counting)
    return seen


async def test_pipelined_heartbeats_are_each_acked_once(
        stack: Stack, inline_answers: list[str | None]) -> None:
    raw = await registered(stack, "dev-inline")
    try:
        await raw.send(b"".join(text_frame(heartbeat("dev-inline")) for _ in range(200)))
        acks = await replies(raw, 200)
        for ack in acks:
            assert_ack(ack)
        assert len({ack["response_id"] for ack in acks}) == 200
        # Most were answered where they were read (some queue behind the one before).
        answered = [reply for reply in inline_answers if reply is not None]
        assert len(answered) >= 1
        assert len(inline_answers) <= 200
    finally:
        await raw.close()


async def test_a_heartbeat_behind_another_frame_keeps_its_place(
        stack: Stack, inline_answers: list[str | None]) -> None:
    raw = await registered(stack, "dev-order")
    try:
        for _ in range(20):
            # An unknown type takes the receive loop (an error frame); the heartbeat
            # behind it must not overtake it, nor the one in front fall behind.
            await raw.send(text_frame(heartbeat("dev-order"))
                           + text_frame({"type": "no_such_type", "client_id": "dev-order"})
                           + text_frame(heartbeat("dev-order")))
            first, error, last = await replies(raw, 3)
            assert_ack(first)
            assert error["type"] == "error" and "no_such_type" in error["error"], error
            assert_ack(last)
        assert any(reply is not None for reply in inline_answers)
    finally:
        await raw.close()


async def test_an_unregistered_client_gets_no_inline_answer(
        stack: Stack, inline_answers: list[str | None]) -> None:
    raw = await RawSocket.open(HOST, stack.gw.port)
    try:
        await raw.send(text_frame(heartbeat("dev-early")))  # before registering
        opcode, payload = await raw.next_data_frame()
        assert opcode == TEXT and json.loads(payload)["type"] == "error"
        assert inline_answers == []
    finally:
        await raw.close()


async def test_text_that_is_not_utf8_still_closes_with_1007(stack: Stack) -> None:
    raw = await registered(stack, "dev-bytes")
    try:
        await raw.send(frame(TEXT, b'{"type": "heartbeat", "x": "\xff\xfe"}'))
        assert await raw.close_code() == 1007
    finally:
        await raw.close()
