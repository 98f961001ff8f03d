"""Who may connect, and the limits that keep one client from hurting the others."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest
import websockets

from aip_wire import frames
from gateway_service import ws_handler, ws_protocol
from gateway_service.auth import hash_token
from tests.conftest import StackFactory
from tests.processes import GatewayService, Replica
from tests.stack import (
    Client,
    GatewayProcess,
    SessionReplica,
    cmd,
    plan,
    register_constellation,
    register_device,
    register_frame,
    task_frame,
    wait_for,
)

TOKENS = (
    f"dev1 device {hash_token('dev-secret')}; "
    f"c1 constellation {hash_token('con-secret')}"
)


async def refused_with(client: Client) -> tuple[dict[str, Any], int | None]:
    """The error frame a refused client gets, and the close code that follows."""
    error = await client.recv()
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await client.recv()
    return error, closed.value.rcvd.code if closed.value.rcvd else None


# ------------------------------------------------------------------------ authentication


async def test_without_a_token_registration_is_refused(make_stack: StackFactory) -> None:
    stack = await make_stack(gateway={"tokens": TOKENS})
    client = await Client.connect(stack.ws_url)
    await client.send(register_frame("dev1"))
    error, code = await refused_with(client)
    assert error["type"] == "error" and "Authentication failed" in error["error"]
    assert code == 4401
    assert len(stack.gateway.registry) == 0


@pytest.mark.parametrize("how", ["header", "query", "metadata"])
async def test_a_valid_token_is_accepted_wherever_presented(
    make_stack: StackFactory, how: str
) -> None:
    stack = await make_stack(gateway={"tokens": TOKENS})
    url, headers, metadata = stack.ws_url, {}, {"platform": "linux"}
    if how == "header":
        headers = {"Authorization": "Bearer dev-secret"}
    elif how == "query":
        url += "?token=dev-secret"
    else:
        metadata["auth_token"] = "dev-secret"
    client = Client(await websockets.connect(url, additional_headers=headers))
    await client.send(register_frame("dev1", metadata=metadata))
    confirmation = await client.recv()
    assert confirmation["type"] == "heartbeat" and confirmation["status"] == "ok"
    # The token is a credential, never part of the device info others may read.
    assert "auth_token" not in stack.gateway.registry.get("dev1").device_info  # type: ignore[union-attr]
    await client.close()


@pytest.mark.parametrize(
    ("client_id", "client_type", "token"),
    [
        ("dev1", "device", "wrong"),            # wrong secret
        ("dev1", "constellation", "dev-secret"),  # right secret, wrong client type
        ("c1", "constellation", "dev-secret"),  # another client's secret
        ("stranger", "device", "dev-secret"),   # unknown client
    ],
)
async def test_wrong_credentials_are_refused(
    make_stack: StackFactory, client_id: str, client_type: str, token: str
) -> None:
    stack = await make_stack(gateway={"tokens": TOKENS})
    device = await register_device(stack.ws_url + "?token=dev-secret", "dev1")
    client = await Client.connect(f"{stack.ws_url}?token={token}")
    await client.send(register_frame(client_id, client_type, target_id="dev1"))
    error, code = await refused_with(client)
    assert "Authentication failed" in error["error"] and code == 4401
    # Whatever was tried, the genuine device keeps its connection.
    assert stack.gateway.registry.get("dev1") is not None
    await device.send({"type": "heartbeat", "client_id": "dev1"})
    assert (await device.recv())["type"] == "heartbeat"
    await device.close()


async def test_takeover_needs_a_valid_token(make_stack: StackFactory, tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"# client tokens\ndev1 device {hash_token('dev-secret')}\n")
    stack = await make_stack(gateway={"tokens_file": tokens_file})
    first = await register_device(stack.ws_url + "?token=dev-secret", "dev1")
    intruder = await Client.connect(stack.ws_url + "?token=guess")
    await intruder.send(register_frame("dev1"))
    _, code = await refused_with(intruder)
    assert code == 4401
    second = await register_device(stack.ws_url + "?token=dev-secret", "dev1")
    with pytest.raises(websockets.ConnectionClosed):
        await first.recv()
    await second.send({"type": "heartbeat", "client_id": "dev1"})
    assert (await second.recv())["type"] == "heartbeat"
    await second.close()


# ------------------------------------------------------------------------ limits


async def test_task_rate_limit(make_stack: StackFactory) -> None:
    stack = await make_stack(gateway={"task_rate": 0.5, "task_burst": 2})
    device = await register_device(stack.ws_url, "dev1")
    for n in range(3):
        await device.send(task_frame("dev1", plan([cmd()]), session_id=f"s{n}"))
    frames = [await device.recv() for _ in range(3)]
    refused = [f for f in frames if f["type"] == "error"]
    assert len(refused) == 1 and "Rate limit exceeded" in refused[0]["error"]
    assert refused[0]["session_id"] == "s2"
    await device.close()


async def test_oversized_frame_closes_with_1009(make_stack: StackFactory) -> None:
    stack = await make_stack(gateway={"ws_max_size": 4096})
    device = await register_device(stack.ws_url, "dev1")
    await device.send({"type": "heartbeat", "client_id": "dev1", "error": "x" * 10_000})
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await device.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    await wait_for(lambda: len(stack.gateway.registry) == 0)


async def test_a_client_that_stops_reading_is_cut_off(make_stack: StackFactory) -> None:
    # The device's info is what makes each answer big: its register frame is too.
    stack = await make_stack(gateway={"max_pending_sends": 4,
                                      "ws_max_size_unregistered": 2_000_000})
    big = {"platform": "linux", "system_info": {"blob": "x" * 1_000_000}}
    device = await register_device(stack.ws_url, "dev1", metadata=big)
    # This constellation asks again and again and never reads the answers.
    reader = await websockets.connect(stack.ws_url, max_size=None, max_queue=1)
    await reader.send(json.dumps(register_frame("greedy", "constellation", target_id="dev1")))
    request = json.dumps({"type": "device_info_request", "client_type": "constellation",
                          "client_id": "greedy", "target_id": "dev1", "request_id": "q"})
    for _ in range(200):
        await reader.send(request)
    await wait_for(lambda: stack.gateway.registry.get("greedy") is None, timeout=15)
    # Nobody else slowed down.
    await device.send({"type": "heartbeat", "client_id": "dev1"})
    assert (await device.recv())["type"] == "heartbeat"
    await reader.close()
    await device.close()


def _server_connections(stack: Any) -> int:
    """Sockets uvicorn still holds for the gateway, whatever their state."""
    return len(stack.gw.server.server_state.connections)


async def _deaf_client(url: str, client_id: str) -> socket.socket:
    """A device that registers, then never reads a byte again (nor closes)."""
    host, port = url.removeprefix("ws://").split("/")[0].split(":")
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, (host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(sock, (
        f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    assert b" 101 " in await loop.sock_recv(sock, 4096)
    data = json.dumps(register_frame(client_id)).encode()
    assert 126 <= len(data) < 65536
    await loop.sock_sendall(
        sock, bytes([0x81, 0x80 | 126]) + len(data).to_bytes(2, "big") + b"\0\0\0\0" + data)
    return sock


async def _bury(stack: Any, client_id: str, count: int) -> None:
    """Queue frames of 8 MB for the client, each more than the kernel's buffers hold: the
    gateway's writes to it stall with data left in the transport, which a plain close
    waits for."""
    await wait_for(lambda: stack.gateway.registry.get(client_id) is not None)
    conn = stack.gateway.registry.get(client_id)
    blob = "x" * 8_000_000
    for n in range(count):
        conn.send(frames.error_frame(blob, session_id=f"s-{n}"))
        await asyncio.sleep(0.2)  # the gateway writes (and stalls) before the next one


async def test_a_client_that_reads_nothing_is_dropped_at_its_ping_timeout(
        make_stack: StackFactory) -> None:
    stack = await make_stack(gateway={"ws_ping_interval": 0.5, "ws_ping_timeout": 2.0})
    other = await register_device(stack.ws_url, "dev1")
    deaf = await _deaf_client(stack.ws_url, "deaf")
    try:
        await _bury(stack, "deaf", 2)
        await wait_for(lambda: stack.gateway.registry.get("deaf") is None, timeout=15,
                       what="the deaf client unregistered")
        await wait_for(lambda: _server_connections(stack) == 1, timeout=15,
                       what="its socket released")
        await other.send({"type": "heartbeat", "client_id": "dev1"})
        assert (await other.recv())["type"] == "heartbeat"
    finally:
        deaf.close()
        await other.close()


async def test_a_client_cut_off_for_not_reading_does_not_keep_its_socket(
        make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without pings: its outbox overflows (4429), and the close it cannot be sent does
    not hold the socket open."""
    monkeypatch.setattr(ws_handler, "CLOSE_WRITE_TIMEOUT", 0.5)
    monkeypatch.setattr(ws_protocol, "CLOSE_TIMEOUT", 0.5)
    stack = await make_stack(gateway={"ws_ping_interval": 0, "max_pending_sends": 4})
    deaf = await _deaf_client(stack.ws_url, "deaf")
    try:
        await _bury(stack, "deaf", 8)
        await wait_for(lambda: stack.gateway.registry.get("deaf") is None, timeout=15,
                       what="the deaf client unregistered")
        await wait_for(lambda: _server_connections(stack) == 0, timeout=15,
                       what="its socket released")
    finally:
        deaf.close()


async def test_silent_clients_are_evicted(make_stack: StackFactory) -> None:
    stack = await make_stack(gateway={"silence_limit": 0.5})
    silent = await register_device(stack.ws_url, "silent")
    chatty = await register_device(stack.ws_url, "chatty")
    constellation = await register_constellation(stack.ws_url, "c", "silent")
    await constellation.send(task_frame("c", plan([cmd()]), client_type="constellation",
                                        target_id="silent", session_id="s-silent"))
    assert (await constellation.recv())["session_id"] == "s-silent"
    for _ in range(15):
        await chatty.send({"type": "heartbeat", "client_id": "chatty"})
        await constellation.send({"type": "heartbeat", "client_id": "c"})
        await asyncio.sleep(0.1)
    assert stack.gateway.registry.get("silent") is None
    assert stack.gateway.registry.get("chatty") is not None
    # Eviction has the disconnect semantics: the requester hears of it.
    end = await constellation.recv_type("task_end")
    assert end["status"] == "failed" and "device_disconnected" in end["error"]
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await silent.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408
    await chatty.close()
    await constellation.close()


# ------------------------------------------------------------------------ draining


async def test_drain_flushes_then_closes_with_1012(stack: Any) -> None:
    device = await register_device(stack.ws_url, "dev1")
    conn = stack.gateway.registry.get("dev1")
    for n in range(50):  # frames still queued for the client when the drain starts
        conn.send(frames.heartbeat_frame(session_id=f"queued-{n}"))
    await stack.gateway.drain(timeout=2.0)
    for n in range(50):
        assert (await device.recv())["session_id"] == f"queued-{n}"
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await device.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    late = await Client.connect(stack.ws_url)
    error, code = await refused_with(late)
    assert code == 1012 and "restarting" in error["error"]
    assert len(stack.gateway.registry) == 0


async def test_sigterm_drains_the_gateway_process() -> None:
    replica = Replica()
    replica.start()
    gateway = GatewayService("g-term", [replica])
    gateway.start()
    try:
        await gateway.wait_replicas(1)
        device = await register_device(gateway.ws_url, "dev-term")
        assert gateway.process is not None
        gateway.process.send_signal(signal.SIGTERM)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await device.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        assert await asyncio.to_thread(gateway.process.wait, 15) == 0
    finally:
        gateway.stop()
        replica.stop()


# ------------------------------------------------------------------------ draining replicas


async def test_a_draining_replica_is_skipped() -> None:
    first, second = SessionReplica(), SessionReplica()
    await first.start()
    await second.start()
    gateway = GatewayProcess([first.address, second.address])
    await gateway.start()
    try:
        await gateway.wait_linked(2)
        first.service.manager.draining = True  # as after SIGTERM, unknown to the gateway
        device = await register_device(gateway.ws_url, "dev1")
        await device.send(task_frame("dev1", plan([cmd()]), session_id="s-moved"))
        assert (await device.recv())["session_id"] == "s-moved"  # accepted after all
        assert "s-moved" in second.service.manager.sessions
        assert gateway.gateway.links[0].draining
        await device.close()
    finally:
        await gateway.stop()
        await first.stop()
        await second.stop()
