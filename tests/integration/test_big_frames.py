"""Frames far larger than one link batch cross the link without breaking it.

Five screenshot-sized results (14 MB of base64 each) at once, and a 70 MB task given to
the HTTP API, are more than the channel takes in one gRPC message (128 MiB, formerly
64 MiB): they travel in batches and fragments of a few MiB. The link stays up throughout,
and an unrelated session on the same replica completes meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from typing import Any

import httpx
import pytest

from tests.conftest import StackFactory
from tests.stack import (
    Client,
    Stack,
    answer_commands,
    cmd,
    plan,
    register_constellation,
    register_device,
    results_for,
    task_frame,
    wait_for,
)

SCREENSHOT_BYTES = 14_000_000


class LinkWatch:
    """The gateway's link and the replica's peer at the start, to prove both stayed."""

    def __init__(self, stack: Stack) -> None:
        (self.link,) = stack.gateway.links
        self.peer = stack.service.hub.peers[stack.gateway.gateway_id]
        self.stack = stack

    def assert_unbroken(self, caplog: pytest.LogCaptureFixture) -> None:
        assert self.link.healthy and not self.link.last_error
        assert self.stack.service.hub.peers[self.stack.gateway.gateway_id] is self.peer
        assert not self.peer.queue.closed
        assert not self.link.lost_sessions
        broken = [r.getMessage() for r in caplog.records
                  if r.levelno >= logging.WARNING and r.name.startswith(("aip.gateway.link",
                                                                         "aip.session.link"))]
        assert not broken, broken


async def small_session(stack: Stack, name: str, steps: int) -> dict[str, Any]:
    """A session of ``steps`` small commands on a device of its own, answered as they
    come; returns its task_end."""
    device = await register_device(stack.ws_url, f"{name}-dev")
    constellation = await register_constellation(stack.ws_url, f"{name}-c", f"{name}-dev")
    await wait_for(lambda: stack.service.presence.get(f"{name}-c") is not None)
    await constellation.send(task_frame(
        f"{name}-c", plan(*([cmd("tick")] for _ in range(steps))),
        client_type="constellation", target_id=f"{name}-dev", session_id=f"s-{name}"))
    for _ in range(steps):
        await answer_commands(device, f"{name}-dev", 1)
        await asyncio.sleep(0.05)  # spread over the large transfers
    end = await constellation.recv_type("task_end", timeout=60)
    await device.close()
    await constellation.close()
    return end


async def test_five_screenshots_at_once_cross_the_link_in_bounded_messages(
    make_stack: StackFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    stack = await make_stack()
    watch = LinkWatch(stack)
    pairs: list[tuple[Client, Client]] = []
    for n in range(5):
        device = await register_device(stack.ws_url, f"dev{n}")
        constellation = await register_constellation(stack.ws_url, f"c{n}", f"dev{n}")
        pairs.append((device, constellation))
    await wait_for(lambda: stack.service.presence.get("c4") is not None)
    commands = []
    for n, (_, constellation) in enumerate(pairs):
        await constellation.send(task_frame(f"c{n}", plan([cmd("screenshot")]),
                                            client_type="constellation", target_id=f"dev{n}",
                                            session_id=f"s-shot{n}"))
    for device, _ in pairs:
        commands.append(await device.recv_type("command", timeout=10))

    body = base64.b64encode(os.urandom(SCREENSHOT_BYTES * 3 // 4)).decode()
    shots = [f"{n}:{body}" for n in range(5)]
    calm = asyncio.ensure_future(small_session(stack, "calm", steps=5))
    # All five at once: more than one gRPC message could carry, both ways (the results to
    # the replica, then the five task_end frames, which carry them, back).
    await asyncio.gather(*(
        device.send(results_for(command, f"dev{n}", result=shots[n]))
        for n, ((device, _), command) in enumerate(zip(pairs, commands, strict=True))
    ))
    for n, (_, constellation) in enumerate(pairs):
        end = await constellation.recv_type("task_end", timeout=60)
        assert end["session_id"] == f"s-shot{n}" and end["status"] == "completed", end.get(
            "error")
        assert end["result"][0][0]["result"] == shots[n]
    async with asyncio.timeout(60):
        assert (await calm)["status"] == "completed"
    watch.assert_unbroken(caplog)
    for device, constellation in pairs:
        await device.close()
        await constellation.close()


async def test_a_seventy_megabyte_task_from_the_http_api_runs(
    make_stack: StackFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    # HTTP bodies are held to 1 MiB unless raised: this deployment takes big tasks.
    stack = await make_stack(gateway={"max_body_bytes": 100 << 20})
    watch = LinkWatch(stack)
    device = await register_device(stack.ws_url, "big-dev")
    await wait_for(lambda: stack.service.presence.get("big-dev") is not None)
    payload = "p" * 70_000_000
    calm = asyncio.ensure_future(small_session(stack, "calm", steps=5))
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=60) as http:
        response = await http.post("/api/dispatch", json={
            "client_id": "big-dev", "request": plan([cmd("type_text", text=payload)]),
            "task_name": "big-job",
        })
    assert response.status_code == 200, response.text
    session_id = response.json()["session_id"]
    # The command carries the 70 MB back across the link, to the device.
    command = await device.recv_type("command", timeout=60)
    assert command["session_id"] == session_id
    assert command["actions"][0]["parameters"]["text"] == payload
    await device.send(results_for(command, "big-dev", result="typed"))
    end = await device.recv_type("task_end", timeout=60)
    assert end["session_id"] == session_id and end["status"] == "completed", end
    async with asyncio.timeout(60):
        assert (await calm)["status"] == "completed"
    watch.assert_unbroken(caplog)
    await device.close()
