"""The pieces every load-generator mode is built from (see :mod:`bench.loadgen`).

Sockets opened and registered with bounded parallelism, the announced measured window,
the orchestrator's answers on stdin, and the best-of-runs rule for latencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from bench.common import emit, self_cpu_seconds
from bench.frames import register_frame
from bench.wsclient import WsClient as ClientConnection
from bench.wsclient import connect

now = time.perf_counter


async def open_socket(url: str, local_host: str | None = None) -> ClientConnection:
    async with asyncio.timeout(60):
        return await connect(url, local_host)


async def register(url: str, client_id: str, client_type: str = "device",
                   target_id: str | None = None,
                   local_host: str | None = None) -> ClientConnection:
    ws = await open_socket(url, local_host)
    await ws.send(register_frame(client_id, client_type, target_id))
    async with asyncio.timeout(30):
        answer = orjson.loads(await ws.recv())
    if answer.get("type") != "heartbeat" or answer.get("status") != "ok":
        await ws.close()
        raise RuntimeError(f"registration of {client_id} refused: {answer}")
    return ws


async def bounded(count: int, concurrency: int,
                  make: Callable[[int], Awaitable[Any]]) -> list[Any]:
    """``make(i)`` for i in range(count), at most ``concurrency`` at a time, in order."""
    results: list[Any] = [None] * count
    indexes = iter(range(count))

    async def worker() -> None:
        for index in indexes:
            results[index] = await make(index)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
    return results


async def close_all(sockets: list[ClientConnection]) -> None:
    async def close(ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(3):
                await ws.close()

    await bounded(len(sockets), 500, lambda i: close(sockets[i]))


class Window:
    """The warm-up and measured window, announced to the orchestrator."""

    def __init__(self, warmup: float, window: float) -> None:
        self.warmup = warmup
        self.window = window
        self.open = False
        self.started = 0.0
        self.cpu = 0.0
        self.elapsed = 0.0

    async def run(self, counters: Callable[[], dict[str, int]]) -> dict[str, int]:
        """Warm up, then count; returns the counters' increase inside the window."""
        await asyncio.sleep(self.warmup)
        before = counters()
        self.started = now()
        self.cpu = self_cpu_seconds()
        self.open = True
        emit("window_start")
        await asyncio.sleep(self.window)
        after = counters()
        self.elapsed = now() - self.started
        self.cpu = self_cpu_seconds() - self.cpu
        self.open = False
        emit("window_end")
        return {key: after[key] - before[key] for key in after}

    def client_cpu(self) -> float:
        return self.cpu / self.elapsed if self.elapsed else 0.0


async def stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def best_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the lowest p50: on two cores the scheduler sometimes places client
    and server so that every wake-up crosses cores, which shifts a whole run; taking the
    best of a few short runs (for baselines and figures alike) removes that noise."""
    best = min(runs, key=lambda run: run.get("p50_us", float("inf")))
    return {**best, "runs_p50_us": [run.get("p50_us") for run in runs]}
