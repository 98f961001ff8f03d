"""The gateway's sockets under peers that hold on to them: half-open upgrades, partial
frames, oversized messages, pings from a peer that never reads, an outbox never read."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
import websockets

from aip_runtime.fd_limit import raise_fd_limit
from aip_wire import frames
from gateway_service import metrics, ws_handler, ws_protocol
from gateway_service.socket_guard import SocketGuard
from tests.conftest import StackFactory
from tests.processes import GatewayService, Replica
from tests.raw_ws import PING, TEXT, RawSocket, frame, frame_header, text_frame
from tests.stack import HOST, Stack, register_device, register_frame, wait_for

MB = 1_000_000

log = logging.getLogger(__name__)


def guard(stack: Stack) -> SocketGuard:
    assert stack.gw is not None
    sockets: SocketGuard = stack.gw.server.config.socket_guard  # type: ignore[attr-defined]
    return sockets


def counted(counter: object) -> float:
    return float(counter._value.get())  # type: ignore[attr-defined]


async def half_open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A socket that starts an upgrade request and stops in the middle of its headers."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"GET /ws HTTP/1.1\r\nHost: gateway\r\nUpgrade: websock")
    await writer.drain()
    return reader, writer


async def register_raw(port: int, client_id: str, rcvbuf: int | None = None) -> RawSocket:
    raw = await RawSocket.open(HOST, port, rcvbuf=rcvbuf)
    await raw.send(text_frame(register_frame(client_id)))
    _, payload = await raw.next_data_frame()
    assert json.loads(payload)["type"] == "heartbeat"
    return raw


# ------------------------------------------------------------------ half-open upgrades


@pytest.mark.timeout(90)
async def test_half_open_upgrades_neither_block_a_device_nor_stay(
        make_stack: StackFactory) -> None:
    raise_fd_limit()
    stack = await make_stack(gateway={"handshake_timeout": 4.0})
    port = stack.gw.port  # type: ignore[union-attr]
    timeouts = counted(metrics.HANDSHAKE_TIMEOUTS)
    sockets = []
    for _ in range(15):
        sockets += await asyncio.gather(*(half_open(port) for _ in range(100)))
    opened = time.monotonic()
    await wait_for(lambda: guard(stack).unregistered == 1500, what="1,500 sockets waiting")
    started = time.monotonic()
    device = await register_device(stack.ws_url, "dev1")
    assert time.monotonic() - started <= 1.0
    assert guard(stack).unregistered == 1500  # the device gave its slot back
    # Each half-open socket is answered 408 and closed at its deadline.
    answers = await asyncio.gather(*(reader.read() for reader, _ in sockets))
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers)
    assert time.monotonic() - opened < 4.0 + 10.0
    assert counted(metrics.HANDSHAKE_TIMEOUTS) - timeouts == 1500
    await wait_for(lambda: guard(stack).unregistered == 0, what="every slot given back")
    await device.send({"type": "heartbeat", "client_id": "dev1"})
    assert (await device.recv())["type"] == "heartbeat"
    await device.close()
    for _, writer in sockets:
        writer.close()


async def test_over_the_cap_of_unregistered_sockets_new_ones_are_refused(
        make_stack: StackFactory) -> None:
    stack = await make_stack(gateway={"max_unregistered": 20, "handshake_timeout": 1.0})
    port = stack.gw.port  # type: ignore[union-attr]
    refused = counted(metrics.SOCKETS_REFUSED)
    waiting = await asyncio.gather(*(half_open(port) for _ in range(20)))
    await wait_for(lambda: guard(stack).unregistered == 20)
    reader, writer = await asyncio.open_connection(HOST, port)
    assert (await reader.read()).startswith(b"HTTP/1.1 503 ")
    writer.close()
    with pytest.raises((websockets.InvalidStatus, ConnectionError)):
        await websockets.connect(stack.ws_url)
    assert counted(metrics.SOCKETS_REFUSED) - refused == 2
    # Once the half-open sockets are timed out, there is room again.
    await wait_for(lambda: guard(stack).unregistered == 0, timeout=5)
    device = await register_device(stack.ws_url, "dev1")
    await device.close()
    for _, half in waiting:
        half.close()


# ------------------------------------------------------------------ partial frames


async def test_unregistered_sockets_announcing_big_frames_are_refused_at_once(
        make_stack: StackFactory) -> None:
    stack = await make_stack()
    port = stack.gw.port  # type: ignore[union-attr]
    oversize = counted(metrics.OVERSIZE_UNREGISTERED)
    sockets = [await RawSocket.open(HOST, port) for _ in range(26)]
    for raw in sockets:  # a 15 MB register frame, of which 100 KB ever comes
        await raw.send(frame_header(TEXT, 15 * MB) + b"x" * 100_000)
    codes = await asyncio.gather(*(raw.close_code() for raw in sockets))
    assert codes == [1009] * 26
    assert all(await asyncio.gather(*(raw.at_eof() for raw in sockets)))
    assert counted(metrics.OVERSIZE_UNREGISTERED) - oversize == 26
    await wait_for(lambda: guard(stack).unregistered == 0)
    assert guard(stack).partial_bytes == 0
    for raw in sockets:
        await raw.close()


async def test_partial_frames_beyond_the_budget_close_the_socket_with_1013(
        make_stack: StackFactory) -> None:
    stack = await make_stack(gateway={"partial_frames_budget": 2_500_000,
                                      "ws_max_size": 10 * MB})
    port = stack.gw.port  # type: ignore[union-attr]
    budget_closes = counted(metrics.BUDGET_CLOSES)
    holders = [await register_raw(port, f"dev{n}") for n in range(3)]
    for n, raw in enumerate(holders[:2]):  # 2 MB held, of two 5 MB frames
        await raw.send(frame_header(TEXT, 5 * MB) + b"x" * MB)
        await wait_for(lambda n=n: guard(stack).partial_bytes == (n + 1) * MB)
    third = holders[2]
    await third.send(frame_header(TEXT, 5 * MB) + b"x" * MB)
    assert await third.close_code() == 1013
    assert await third.at_eof()
    assert counted(metrics.BUDGET_CLOSES) - budget_closes == 1
    assert guard(stack).partial_bytes == 2 * MB  # the two others still hold theirs
    await wait_for(lambda: stack.gateway.registry.get("dev2") is None)
    assert stack.gateway.registry.get("dev0") is not None
    for raw in holders:
        raw.abort()
    await wait_for(lambda: guard(stack).partial_bytes == 0)


# ------------------------------------------------------------------ oversize


async def test_a_message_over_the_limit_after_registration_gets_1009_not_a_reset(
        make_stack: StackFactory) -> None:
    stack = await make_stack(gateway={"ws_max_size": MB})
    oversize = counted(metrics.OVERSIZE_REGISTERED)
    device = await register_device(stack.ws_url, "dev1")
    # Under the limit after registration, over the limit before it.
    await device.send({"type": "heartbeat", "client_id": "dev1", "error": "x" * 500_000})
    assert (await device.recv())["type"] == "heartbeat"
    # Far more than the kernel's buffers hold: most of it is unread when the gateway
    # closes, and must be read and discarded for the close frame to arrive.
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await device.send({"type": "heartbeat", "client_id": "dev1", "error": "x" * 20 * MB})
        await device.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert counted(metrics.OVERSIZE_REGISTERED) - oversize == 1
    await wait_for(lambda: len(stack.gateway.registry) == 0)


async def test_an_oversized_register_frame_gets_1009_not_a_reset(stack: Stack) -> None:
    client = await websockets.connect(stack.ws_url, max_size=None)
    big = json.dumps(register_frame("dev1", metadata={"blob": "x" * 15 * MB}))
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await client.send(big)
        await client.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


# ------------------------------------------------------------------ peers that do not read


@pytest.mark.timeout(90)
async def test_a_ping_flood_from_a_peer_that_never_reads_is_cut_off() -> None:
    replica = Replica()
    gateway = GatewayService("g-pings", [replica], extra_args=[
        "--ws-ping-interval", "1", "--ws-ping-timeout", "2"])
    replica.start()
    gateway.start()
    try:
        await gateway.wait_replicas(1)
        before = gateway.rss()
        raw = await register_raw(gateway.port, "flooder", rcvbuf=4096)
        pings = frame(PING, b"p" * 125) * 2_000  # 262 KB, 2,000 pongs if all answered
        sent, cut_off = 0, False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not cut_off:
            transport = raw.writer.transport
            if transport.get_write_buffer_size() < len(pings):
                raw.writer.write(pings)
                sent += len(pings)
            try:
                async with asyncio.timeout(0.2):
                    await raw.writer.drain()
            except TimeoutError:
                pass  # the gateway stopped reading us: our own buffers are full
            except ConnectionError:
                cut_off = True
            await asyncio.sleep(0.01)  # drain does not yield while under its mark
        grown = gateway.rss() - before
        log.warning("ping flood: %d bytes of pings sent, gateway RSS %+.1f MiB (%.1f MiB "
                    "before)", sent, grown / (1 << 20), before / (1 << 20))
        assert cut_off, f"still connected after sending {sent} bytes of pings"
        health = await gateway.health()
        assert not health["online_clients"]
        # Without the bound, pongs for everything sent pile up in the gateway.
        assert grown < 16 << 20, f"grew by {grown} bytes after {sent} bytes of pings"
        raw.abort()
    finally:
        gateway.stop()
        replica.stop()


async def test_a_client_that_stops_reading_is_cut_off_by_pending_bytes(
        make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ws_handler, "CLOSE_WRITE_TIMEOUT", 0.5)
    monkeypatch.setattr(ws_protocol, "CLOSE_TIMEOUT", 0.5)
    stack = await make_stack(gateway={"ws_ping_interval": 0,
                                      "max_pending_bytes": 4 * MB})
    deaf = await register_raw(stack.gw.port, "deaf", rcvbuf=4096)  # type: ignore[union-attr]
    conn = stack.gateway.registry.get("deaf")
    assert conn is not None
    blob = "x" * MB
    sent = 0
    while conn.send(frames.error_frame(blob, session_id=f"s-{sent}")):
        sent += 1
        await asyncio.sleep(0.05)  # the gateway writes (and stalls) before the next one
        assert sent < 100
    assert conn.outbox.overflow == f"{4 * MB} bytes"
    # The kernel's buffers take a few frames, the transport one, the writer holds one;
    # then three fit the limit, and the next one does not.
    assert sent <= 12
    await wait_for(lambda: stack.gateway.registry.get("deaf") is None)
    await wait_for(lambda: len(stack.gw.server.server_state.connections) == 0,  # type: ignore[union-attr]
                   timeout=15, what="its socket released")
    deaf.abort()


async def test_frames_read_by_a_slow_reader_all_arrive(make_stack: StackFactory) -> None:
    """Reading paused while the write buffer is full must not lose or stall anything."""
    stack = await make_stack()
    device = await register_device(stack.ws_url, "dev1")
    conn = stack.gateway.registry.get("dev1")
    assert conn is not None
    for n in range(20):
        conn.send(frames.error_frame("y" * 200_000, session_id=f"s-{n}"))
    await asyncio.sleep(0.3)  # the buffers fill up; the client reads only now
    for n in range(20):
        await device.ws.ping()
        assert (await device.recv())["session_id"] == f"s-{n}"
    await device.send({"type": "heartbeat", "client_id": "dev1"})
    assert (await device.recv())["type"] == "heartbeat"
    await device.close()
