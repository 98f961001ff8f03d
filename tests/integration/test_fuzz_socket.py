"""Garbage over a real socket: the connection and the server stay up and keep answering."""

from __future__ import annotations

import json
import random
import string
from typing import Any

import httpx
import pytest
import websockets

from tests.stack import Client, Stack, register_device, wait_for

FIELDS = ["type", "status", "client_type", "client_id", "session_id", "task_name",
          "target_id", "request", "action_results", "timestamp", "request_id",
          "prev_response_id", "error", "metadata", "Type", "CLIENT_ID"]
TYPES = ["register", "heartbeat", "task", "command_results", "task_end", "error",
         "device_info_request", "device_info_response", "HEARTBEAT", "Task", "nonsense", ""]


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**70, 3.5, float("1e308")])
    if kind in (3, 4, 5):
        return "".join(rng.choice(string.printable) for _ in range(rng.randrange(12)))
    if kind == 6:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(FIELDS): _value(rng, depth + 1) for _ in range(rng.randrange(4))}


def garbage(rng: random.Random) -> str | bytes:
    """One hostile message: broken JSON, wrong types, wrong case, deep or huge, binary."""
    choice = rng.randrange(8)
    if choice == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    if choice == 1:
        return "{" * rng.randrange(1, 5000)
    if choice == 2:
        return json.dumps({"type": "heartbeat", "error": "x" * rng.randrange(100_000)})
    if choice == 3:
        return "[" * 3000 + "]" * 3000
    frame = {field: _value(rng) for field in rng.sample(FIELDS, rng.randrange(len(FIELDS)))}
    frame["type"] = rng.choice(TYPES) if rng.random() < 0.9 else _value(rng)
    text = json.dumps(frame)
    return text.encode() if choice == 4 else text


@pytest.mark.parametrize("seed", [1, 2])
async def test_hostile_frames_never_break_the_connection(stack: Stack, seed: int) -> None:
    rng = random.Random(seed)
    # Whatever one client sends, another one is not disturbed.
    bystander = await register_device(stack.ws_url, "bystander")
    fuzzed = await register_device(stack.ws_url, "fuzzed")
    answers: list[dict[str, Any]] = []
    for _ in range(400):
        await fuzzed.send(garbage(rng))
    # The acknowledgement of this one, echoing a marker, closes the sequence.
    await fuzzed.send({"type": "error", "client_id": "fuzzed", "error": "end-of-fuzz"})
    while True:
        frame = await fuzzed.recv(timeout=20)
        answers.append(frame)
        # Every answer is a frame a strict client accepts.
        assert frame["type"] in {"heartbeat", "error", "task_end", "device_info_response",
                                 "command"}, frame
        assert frame["status"] in {"ok", "error", "continue", "completed", "failed"}, frame
        if frame["type"] == "error" and frame["error"].endswith("end-of-fuzz"):
            break
    assert any(a["type"] == "error" for a in answers)
    assert stack.gateway.registry.get("fuzzed") is not None
    await bystander.send({"type": "heartbeat", "client_id": "bystander"})
    assert (await bystander.recv())["type"] == "heartbeat"
    async with httpx.AsyncClient() as http:
        health = (await http.get(f"{stack.http_url}/api/health", timeout=5)).json()
    assert health["status"] == "healthy"
    await fuzzed.close()
    await bystander.close()
    await wait_for(lambda: len(stack.gateway.registry) == 0)


async def test_hostile_registrations_are_refused_cleanly(stack: Stack) -> None:
    rng = random.Random(7)
    for _ in range(60):
        client = await Client.connect(stack.ws_url)
        message = garbage(rng)
        await client.send(message)
        try:
            first = await client.recv(timeout=5)
        except websockets.ConnectionClosed as closed:
            # Over the size limit before registration: refused from the frame's header.
            limit = stack.gateway.settings.ws_max_size_unregistered
            assert len(message) > limit, f"closed on {message!r:.80}"
            assert closed.rcvd is not None and closed.rcvd.code == 1009
            continue
        except Exception:  # closed without a frame is not acceptable either
            raise AssertionError(f"no answer to {message!r:.80}") from None
        assert first["type"] in {"heartbeat", "error"}, first
        await client.close()
    await wait_for(lambda: len(stack.gateway.registry) == 0)
    # The gateway still registers a well-behaved client.
    device = await register_device(stack.ws_url, "after")
    await device.close()
