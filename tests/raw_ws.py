"""A WebSocket client made of raw bytes, for tests that misbehave on purpose.

The ``websockets`` client does everything right; these helpers let a test stop halfway
through a request line, announce a frame it never finishes, flood pings or never read,
and still cost the test process little CPU per connection (thousands of cycles).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from typing import Any

TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


def upgrade_request(host: str, port: int, path: str = "/ws") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


def frame_header(opcode: int, length: int, fin: bool = True) -> bytes:
    """A client frame's header announcing ``length`` bytes, masked with a zero key (so the
    payload goes as it is)."""
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        head = bytes([first, 0x80 | length])
    elif length < 1 << 16:
        head = bytes([first, 0x80 | 126]) + struct.pack("!H", length)
    else:
        head = bytes([first, 0x80 | 127]) + struct.pack("!Q", length)
    return head + b"\0\0\0\0"


def frame(opcode: int, payload: bytes = b"") -> bytes:
    return frame_header(opcode, len(payload)) + payload


def text_frame(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    return frame(TEXT, text.encode())


def close_frame(code: int = 1000) -> bytes:
    return frame(CLOSE, struct.pack("!H", code))


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The next (unmasked, server) frame: its opcode and payload."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(length)


def close_code(payload: bytes) -> int | None:
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


class RawSocket:
    """One upgraded connection over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int, path: str = "/ws",
                   rcvbuf: int | None = None) -> RawSocket:
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(upgrade_request(host, port, path))
        answer = await reader.readuntil(b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 101 "), answer
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def next_data_frame(self) -> tuple[int, bytes]:
        """The next frame that is not a ping (pings are answered)."""
        while True:
            opcode, payload = await read_frame(self.reader)
            if opcode == PING:
                await self.send(frame(PONG, payload))
                continue
            return opcode, payload

    async def close_code(self) -> int | None:
        """Read up to the server's close frame; answer it and return its code."""
        while True:
            opcode, payload = await self.next_data_frame()
            if opcode == CLOSE:
                await self.send(frame(CLOSE, payload[:2]))
                return close_code(payload)

    async def at_eof(self, timeout: float = 5.0) -> bool:
        """Whether the server closes its end (anything it still sends is skipped)."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return True

    def abort(self) -> None:
        self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


async def register_and_leave(host: str, port: int, register: dict[str, Any],
                             path: str = "/ws") -> str:
    """One whole cycle: connect, register, read the answer, close properly.

    Returns ``"registered"`` (the gateway confirmed with a heartbeat) or ``"refused"`` (it
    answered with an error frame and closed).
    """
    raw = await RawSocket.open(host, port, path)
    try:
        await raw.send(text_frame(register))
        _, payload = await raw.next_data_frame()
        answer = json.loads(payload)
        if answer["type"] == "heartbeat":
            await raw.send(close_frame(1000))
            await raw.close_code()
            outcome = "registered"
        else:
            assert answer["type"] == "error", answer
            await raw.close_code()
            outcome = "refused"
        await raw.at_eof()
        return outcome
    finally:
        await raw.close()
