"""What the fault-injection tests share: a background frame recorder, the check that each
session ended exactly once, and small look-ups of the services' state."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import httpx
import websockets

from aip_grpc import session_api_pb2
from tests.stack import Client, api_call, wait_for

pb = session_api_pb2

#: How long to keep listening after the expected task_end frames arrived.
QUIET = 0.5


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    await wait_for(condition, timeout, interval=0.02, what=what)


class Recorder:
    """Reads every frame a client receives in the background, so tests can wait for
    frames of any kind without losing the others; records the close code too."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name
        self.frames: list[dict[str, Any]] = []
        self.closed = False
        self._taken: set[int] = set()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            async for raw in self.client.ws:
                self.frames.append(json.loads(raw))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed = True

    @property
    def close_code(self) -> int | None:
        return self.client.ws.close_code

    async def send(self, frame: dict[str, Any]) -> None:
        await self.client.send(frame)

    def of_type(self, kind: str, session_id: str | None = None) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == kind
                and (session_id is None or f.get("session_id") == session_id)]

    def ends(self, session_id: str) -> list[dict[str, Any]]:
        return self.of_type("task_end", session_id)

    async def command(self, session_id: str | None = None,
                      timeout: float = 5.0) -> dict[str, Any]:
        """The next command (for ``session_id``) not taken yet."""
        found: list[dict[str, Any]] = []

        def ready() -> bool:
            for n, frame in enumerate(self.frames):
                if (n not in self._taken and frame.get("type") == "command"
                        and (session_id is None or frame.get("session_id") == session_id)):
                    self._taken.add(n)
                    found.append(frame)
                    return True
            return False

        await until(ready, timeout, f"{self.name} gets a command for {session_id}")
        return found[0]

    async def ack(self, session_id: str, timeout: float = 5.0) -> None:
        await until(lambda: any(f.get("type") == "heartbeat" and f.get("session_id") == session_id
                                for f in self.frames),
                    timeout, f"{self.name} gets the ack of {session_id}")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(3):
                await self.client.close()
        self.abort()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(3):
                await self._task

    def abort(self) -> None:
        transport = self.client.ws.transport
        if not transport.is_closing():
            transport.abort()


async def ended_once(recorder: Recorder, session_ids: list[str] | set[str],
                     timeout: float = 10.0, quiet: float = QUIET) -> dict[str, dict[str, Any]]:
    """Wait for a task_end of each session, listen ``quiet`` seconds more, then check
    that each session ended exactly once; returns the task_end frames."""
    wanted = sorted(session_ids)
    await until(lambda: all(recorder.ends(s) for s in wanted), timeout,
                f"{recorder.name} gets task_end for {wanted}")
    await asyncio.sleep(quiet)
    counts = {s: len(recorder.ends(s)) for s in wanted}
    assert counts == dict.fromkeys(wanted, 1), (
        f"{recorder.name}: task_end count per session {counts}: {recorder.of_type('task_end')}"
    )
    return {s: recorder.ends(s)[0] for s in wanted}


async def listed_devices(address: str) -> list[str]:
    answer = await api_call(address, "ListDevices", pb.ListDevicesRequest())
    return sorted(device.device_id for device in answer.devices)


async def http_get(url: str) -> Any:
    async with httpx.AsyncClient(timeout=5) as http:
        answer = await http.get(url)
    return answer.json()
