"""Keepalive pings go only to peers that have been silent for a whole ping interval.

A peer that keeps sending (heartbeats, or pings of its own, as the reference clients and
websockets' defaults do) is evidently alive and gets no pings from the gateway; one that
falls silent gets them, and one that then answers none is dropped.
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from tests.conftest import StackFactory
from tests.stack import register_frame


class RawPeer:
    """A WebSocket client whose every received frame (pings included) is visible.

    A background task reads the socket, feeds the sans-I/O protocol and writes what it
    answers (pongs), so the peer keeps reading whatever the test is doing.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 protocol: ClientProtocol) -> None:
        self.reader, self.writer, self.protocol = reader, writer, protocol
        self.pings = 0
        self.texts: list[str] = []
        self.arrived = asyncio.Event()
        self._task = asyncio.create_task(self._read_forever())

    @classmethod
    async def open(cls, url: str) -> RawPeer:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        protocol = ClientProtocol(parse_uri(url))
        protocol.send_request(protocol.connect())
        peer = cls(reader, writer, protocol)
        peer.flush()
        async with asyncio.timeout(5):
            await peer.arrived.wait()  # the handshake's response
        if protocol.handshake_exc is not None:
            raise protocol.handshake_exc
        return peer

    def flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            self.writer.write(chunk)

    async def _read_forever(self) -> None:
        while data := await self.reader.read(65536):
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                if isinstance(event, Frame):
                    if event.opcode is Opcode.PING:
                        self.pings += 1
                    elif event.opcode is Opcode.TEXT:
                        self.texts.append(bytes(event.data).decode())
            self.arrived.set()
            self.flush()  # pongs, answered by the protocol

    def send(self, frame: dict[str, object]) -> None:
        self.protocol.send_text(json.dumps(frame).encode())
        self.flush()

    async def first_text(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while not self.texts:
            self.arrived.clear()
            async with asyncio.timeout(deadline - time.monotonic()):
                await self.arrived.wait()
        return self.texts[0]

    async def talk_for(self, seconds: float, every: float) -> None:
        """Send a heartbeat every ``every`` seconds for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.send({"type": "heartbeat", "client_type": "device", "client_id": "dev-k",
                       "status": "ok"})
            await asyncio.sleep(every)

    async def close(self) -> None:
        self._task.cancel()
        self.writer.close()
        await asyncio.gather(self._task, return_exceptions=True)


async def test_pings_go_only_to_silent_peers(make_stack: StackFactory) -> None:
    stack = await make_stack(gateway={"ws_ping_interval": 0.3, "ws_ping_timeout": 1.0})
    peer = await RawPeer.open(stack.ws_url)
    try:
        peer.send(register_frame("dev-k"))
        assert json.loads(await peer.first_text(5))["status"] == "ok"

        # Talking every 0.1 s through four ping intervals: no ping is needed.
        await peer.talk_for(1.2, every=0.1)
        assert peer.pings == 0

        # Silent (but reading and answering) for as long: pinged about once an interval.
        await asyncio.sleep(1.2)
        assert peer.pings >= 2
        assert stack.gateway.registry.get("dev-k") is not None  # its pongs keep it
    finally:
        await peer.close()
