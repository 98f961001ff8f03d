"""A lean WebSocket client for load generation (RFC 6455, text/binary, no extensions).

The ``websockets`` asyncio client spends tens of microseconds per message of its own
(tasks, frame assemblers, flow control); in a single-client round trip that is of the same
order as the server's cost and would flatten every ratio this suite reports. This client
is an ``asyncio.Protocol``: frames are parsed straight from ``data_received`` and handed to
a waiting future. Client frames are masked with an all-zero key, which is valid framing
(servers unmask as usual) and spares the client the XOR; pings are answered, closes
are echoed. Only what the benchmark needs: no fragmentation on send, no compression.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

_ZERO_MASK = b"\x00\x00\x00\x00"


class ConnectionClosedError(ConnectionError):
    pass


def _header(opcode: int, length: int) -> bytes:
    first = 0x80 | opcode
    if length < 126:
        return struct.pack("!BB", first, 0x80 | length) + _ZERO_MASK
    if length < 65536:
        return struct.pack("!BBH", first, 0x80 | 126, length) + _ZERO_MASK
    return struct.pack("!BBQ", first, 0x80 | 127, length) + _ZERO_MASK


class WsClient(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._upgraded = False
        self._messages: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._fragments: list[bytes] = []
        self.closed = False
        self.close_code: int | None = None
        #: When set, every message is handed to it instead of waiting for ``recv``
        #: (tens of thousands of clients need no task each).
        self.on_message: Callable[[bytes], None] | None = None

    # -------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._upgraded:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status_line = bytes(self._buffer[: self._buffer.find(b"\r\n")])
            del self._buffer[: end + 4]
            if b" 101 " not in status_line + b" ":
                self._handshake.set_exception(
                    ConnectionError(f"handshake refused: {status_line!r}"))
                return
            self._upgraded = True
            self._handshake.set_result(None)
        self._parse()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self._handshake.done():
            self._handshake.set_exception(exc or ConnectionError("connection lost"))
        self._wake()

    # -------------------------------------------------------------- framing

    def _parse(self) -> None:
        buf = self._buffer
        while len(buf) >= 2:
            first, second = buf[0], buf[1]
            length = second & 0x7F
            offset = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length = struct.unpack_from("!H", buf, 2)[0]
                offset = 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length = struct.unpack_from("!Q", buf, 2)[0]
                offset = 10
            if len(buf) < offset + length:
                return
            payload = bytes(buf[offset: offset + length])
            del buf[: offset + length]
            opcode = first & 0x0F
            if opcode in (0x1, 0x2, 0x0):
                self._fragments.append(payload)
                if first & 0x80:
                    message = self._fragments[0] if len(self._fragments) == 1 else b"".join(
                        self._fragments)
                    self._fragments = []
                    if self.on_message is not None:
                        self.on_message(message)
                    else:
                        self._messages.append(message)
                        self._wake()
            elif opcode == 0x9:  # ping
                self._write(0xA, payload)
            elif opcode == 0x8:  # close
                if len(payload) >= 2:
                    self.close_code = struct.unpack_from("!H", payload)[0]
                if not self.closed:
                    self._write(0x8, payload[:2])
                    self.closed = True
                    if self.transport is not None:
                        self.transport.close()
                self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _write(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_header(opcode, len(payload)) + payload)

    # -------------------------------------------------------------- API

    async def send(self, data: bytes | str) -> None:
        if self.closed:
            raise ConnectionClosedError(f"closed ({self.close_code})")
        if isinstance(data, str):
            data = data.encode()
        self._write(0x1, data)

    def write_now(self, data: bytes) -> None:
        """Send a text frame from a callback (``send`` without the coroutine)."""
        if not self.closed:
            self._write(0x1, data)

    async def recv(self) -> bytes:
        while not self._messages:
            if self.closed:
                raise ConnectionClosedError(f"closed ({self.close_code})")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._messages.popleft()

    def __aiter__(self) -> WsClient:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ConnectionClosedError:
            raise StopAsyncIteration from None

    async def close(self) -> None:
        if self.transport is None:
            return
        if not self.closed:
            self._write(0x8, struct.pack("!H", 1000))
            self.closed = True
        self.transport.close()


#: Linux's IP_BIND_ADDRESS_NO_PORT (not in the socket module of every Python).
_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


async def _bound(loop: asyncio.AbstractEventLoop, local_host: str, host: str,
                 port: int) -> socket.socket:
    """A socket from ``local_host`` connected to ``host:port``.

    Binding to port 0 makes the kernel pick a port unused by every socket on that
    address, a search that grows with the sockets already open (thousands of them made
    each connect take milliseconds); with IP_BIND_ADDRESS_NO_PORT the port is chosen
    at connect time, per destination, as for an unbound socket.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, _BIND_ADDRESS_NO_PORT, 1)
        sock.bind((local_host, 0))
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def connect(url: str, local_host: str | None = None) -> WsClient:
    """Open and upgrade a connection; ``local_host`` binds its source address (one
    loopback address has about 28,000 ephemeral ports to one server port)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    if local_host:
        _, client = await loop.create_connection(WsClient, sock=await _bound(
            loop, local_host, host, port))
    else:
        _, client = await loop.create_connection(WsClient, host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    assert client.transport is not None
    client.transport.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await client._handshake
    return client
