"""Authentication that fails closed, through a real gateway: no tokens means no start,
no key means no presence, credentials before presence, rate limits that survive a
reconnect, and bodies that are refused before they are read."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from gateway_service.auth import hash_token
from tests.conftest import StackFactory
from tests.stack import (
    HOST,
    Client,
    Stack,
    cmd,
    plan,
    register_device,
    register_frame,
    task_frame,
)

TOKENS = f"dev1 device {hash_token('dev-secret')}"


def start_gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway_service", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("content", ["", "# only comments\n\n"])
def test_an_empty_tokens_file_refuses_to_start(tmp_path: Path, content: str) -> None:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(content)
    done = start_gateway("--tokens-file", str(tokens_file))
    assert done.returncode != 0
    assert "--tokens-file" in done.stderr and "no token entries" in done.stderr


def test_a_missing_tokens_file_refuses_to_start(tmp_path: Path) -> None:
    done = start_gateway("--tokens-file", str(tmp_path / "absent"))
    assert done.returncode != 0
    assert "--tokens-file" in done.stderr and "cannot be read" in done.stderr


async def test_health_without_the_key_says_only_whether_healthy(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(gateway={"api_key": "k"})
    device = await register_device(stack.ws_url, "dev1")
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=5) as http:
        anonymous = (await http.get("/api/health")).json()
        assert anonymous == {"status": "healthy"}
        wrong = (await http.get("/api/health", headers={"X-API-Key": "nope"})).json()
        assert wrong == {"status": "healthy"}
        full = (await http.get("/api/health", headers={"X-API-Key": "k"})).json()
        assert full["online_clients"] == ["dev1"]
    await device.close()


async def test_credentials_are_checked_before_presence(make_stack: StackFactory) -> None:
    stack = await make_stack(gateway={"tokens": TOKENS})
    for target in ("ghost", "dev1"):
        client = await Client.connect(stack.ws_url)
        await client.send(register_frame("c1", "constellation", target_id=target))
        error = await client.recv()
        assert "Authentication failed" in error["error"], error
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_the_task_rate_limit_survives_a_reconnect(make_stack: StackFactory) -> None:
    stack = await make_stack(gateway={"task_rate": 0.01, "task_burst": 2})
    first = await register_device(stack.ws_url, "dev1")
    for n in range(2):
        await first.send(task_frame("dev1", plan([cmd()]), session_id=f"dev1@s{n}"))
        assert (await first.recv())["type"] != "error"
    await first.close()
    again = await register_device(stack.ws_url, "dev1")
    await again.send(task_frame("dev1", plan([cmd()]), session_id="dev1@s2"))
    refused = await again.recv_type("error")
    assert "Rate limit exceeded" in refused["error"] and refused["session_id"] == "dev1@s2"
    await again.close()


async def raw_request(stack: Stack, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send a request's head (and ``body``), never more; the status line's code."""
    port = int(stack.http_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        await writer.drain()
        async with asyncio.timeout(5):
            answer = await reader.read(65536)
        status = int(answer.split(b" ", 2)[1])
        return status, answer
    finally:
        writer.close()


@pytest.fixture
async def keyed(make_stack: StackFactory) -> AsyncIterator[Stack]:
    yield await make_stack(gateway={"api_key": "k", "max_body_bytes": 64 * 1024})


async def test_the_key_is_checked_before_the_body_is_read(keyed: Stack) -> None:
    # 100 MB announced and none sent: an answer means the body was not waited for.
    status, _ = await raw_request(
        keyed,
        "POST /api/dispatch HTTP/1.1\nHost: x\nContent-Type: application/json\n"
        "Content-Length: 100000000\n",
    )
    assert status == 401


async def test_a_large_announced_body_is_refused_unread(keyed: Stack) -> None:
    status, answer = await raw_request(
        keyed,
        "POST /api/dispatch HTTP/1.1\nHost: x\nX-API-Key: k\n"
        "Content-Type: application/json\nContent-Length: 100000000\n",
    )
    assert status == 413 and b"65536 bytes" in answer


async def test_a_large_chunked_body_is_refused(keyed: Stack) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"client_id": "dev1", "request": "'
        for _ in range(8):
            yield b"x" * 16384
        yield b'"}'

    async with httpx.AsyncClient(base_url=keyed.http_url, timeout=5) as http:
        response = await http.post(
            "/api/dispatch",
            content=chunks(),
            headers={"X-API-Key": "k", "Content-Type": "application/json"},
        )
    assert response.status_code == 413, response.text


async def test_a_body_under_the_limit_is_served(keyed: Stack) -> None:
    async with httpx.AsyncClient(base_url=keyed.http_url, timeout=5) as http:
        response = await http.post(
            "/api/dispatch",
            headers={"X-API-Key": "k"},
            json={"client_id": "ghost", "request": "x" * 1000},
        )
    assert response.status_code == 404, response.text
