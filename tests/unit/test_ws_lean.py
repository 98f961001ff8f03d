"""The lean per-socket primitives: what uvicorn's protocol relies on, and the parser swap."""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import weakref

import pytest
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from gateway_service.ws_lean import Flag, Inbox, release_handshake


async def test_inbox_is_first_in_first_out_and_wakes_its_reader() -> None:
    inbox = Inbox()
    assert inbox.empty() and inbox.qsize() == 0
    reader = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    assert not reader.done()
    inbox.put_nowait("a")
    inbox.put_nowait("b")
    assert await reader == "a"
    assert inbox.qsize() == 1
    assert await inbox.get() == "b"
    assert inbox.empty()


async def test_a_cancelled_reader_takes_nothing_and_others_still_wake() -> None:
    inbox = Inbox()
    cancelled = asyncio.ensure_future(inbox.get())
    other = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    inbox.put_nowait("kept")
    async with asyncio.timeout(1):
        assert await other == "kept"
    assert inbox.empty()


async def test_flag_waits_until_set_and_not_after_clear() -> None:
    flag = Flag()
    assert not flag.is_set()
    waiter = asyncio.ensure_future(flag.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    flag.set()
    assert await waiter is True
    async with asyncio.timeout(1):
        assert await flag.wait() is True  # already set: no wait
    flag.clear()
    again = asyncio.ensure_future(flag.wait())
    await asyncio.sleep(0.01)
    assert not again.done()
    flag.set()
    async with asyncio.timeout(1):
        assert await again is True


def _opened() -> ServerProtocol:
    conn = ServerProtocol()
    key = base64.b64encode(os.urandom(16)).decode()
    conn.receive_data(
        f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"X-Padding: {'p' * 500}\r\n\r\n".encode()
    )
    [request] = conn.events_received()
    assert isinstance(request, Request)
    conn.send_response(conn.accept(request))
    conn.data_to_send()
    return conn


def _masked(opcode: Opcode, payload: bytes) -> bytes:
    header = bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\x00\x00\x00\x00"
    return header + payload  # an all-zero mask leaves the payload as it is


def test_the_handshake_request_is_let_go_between_frames() -> None:
    conn = _opened()
    # The handshake request is held only by the parser's frame after this point.
    request_ref = weakref.ref(conn.parser.gi_frame.f_locals["request"])  # type: ignore[attr-defined]
    assert release_handshake(conn) is True
    gc.collect()
    assert request_ref() is None
    conn.receive_data(_masked(Opcode.TEXT, b"hello"))
    [frame] = conn.events_received()
    assert isinstance(frame, Frame) and frame.data == b"hello"
    assert release_handshake(conn) is False  # already swapped: nothing to do


@pytest.mark.parametrize("first", [4, 6], ids=["bytes buffered", "nothing buffered"])
def test_half_a_frame_keeps_the_parser(first: int) -> None:
    conn = _opened()
    whole = _masked(Opcode.TEXT, b"split across reads")
    # 4: part of the mask waits in the buffer; 6: header and mask read, the payload
    # not yet come, the buffer empty: mid-frame either way.
    conn.receive_data(whole[:first])
    assert release_handshake(conn) is False
    conn.receive_data(whole[first:])
    [frame] = conn.events_received()
    assert isinstance(frame, Frame) and frame.data == b"split across reads"
