"""Load-generating client processes.

Run as ``python -m bench.loadgen '<json config>'``; the orchestrator (:mod:`bench.run`)
starts each one as its own process so that client work never shares the event loop (or
the core) of the server it measures. A load generator talks to the orchestrator in JSON
lines on stdout (``{"event": ...}``): ``ready``, ``window_start``/``window_end`` around the
measured window (the orchestrator samples the servers' CPU time there), ``stage`` when it
waits for the orchestrator (which answers with a line on stdin), and finally ``result``.
Every mode is bounded in time and ends by itself.

Modes (``config["mode"]``):

``ws_latency``
    One client, strictly sequential round trips; the figure is the time between
    consecutive replies (the same clock the device uses for commands, below).
``ws_throughput``
    ``clients`` sockets, each in a closed loop (send, wait for the answer, repeat); counts
    the answers inside a fixed window after a warm-up. With ``register`` the sockets first
    register as AIP devices and send heartbeats (figure 2); otherwise they send an
    AIP-sized frame to an echo server (the baseline).
``ws_connect``
    Opens ``clients`` sockets with ``concurrency`` in flight: connect, send ``register``,
    wait for the confirmation (or the echo). Reports the rate and per-connection latency.
    With ``stages`` it pauses after each stage (connected count) for the orchestrator to
    read memory, then holds the idle sockets open until told to stop.
``grpc_echo``
    A bare grpc.aio bidirectional stream to an echo server: sequential latency, then
    throughput with ``inflight`` messages outstanding on one stream.
``sessions``
    ``devices`` AIP devices that answer every ``command`` at once with ``command_results``
    for each action's call_id; sessions are started through the public gRPC API
    (``StartSession``) on the replicas round-robin by device. ``latency``: one device,
    one session of ``steps`` steps, per-step round trip = time between consecutive
    commands at the device. ``throughput``: one long session per device, restarted when it
    ends, command round trips counted in a fixed window; afterwards the running sessions are
    cancelled and every session must have delivered exactly one ``task_end``. ``memory``:
    silent devices (never answer) and ``sessions`` waiting sessions, for the service's RSS.
``tasks``
    ``devices`` devices and as many constellations (each targeting one device) that loop:
    ``task`` with a ``steps``-step plan, wait for the ``task_end``, repeat. Counts tasks
    completed in the window; checks that every task's ``task_end`` reaches both the
    constellation and the device.

``fleet``
    Tens of thousands of idle registered devices from several loopback source
    addresses: registration rate, idle keep-alive cost, a heartbeat from every device,
    then command round trips to random devices (:mod:`bench.modes_fleet`).

This module is the process's entry point and protocol; the modes live in
:mod:`bench.modes_transport`, :mod:`bench.modes_sessions` and :mod:`bench.modes_tasks`,
built from :mod:`bench.harness` and the frames of :mod:`bench.frames`.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from aip_runtime.fd_limit import raise_fd_limit
from aip_runtime.gc_tuning import tune_gc
from bench.common import emit
from bench.modes_fleet import fleet
from bench.modes_sessions import sessions
from bench.modes_tasks import tasks
from bench.modes_transport import grpc_echo, ws_connect, ws_latency, ws_throughput

MODES: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
    "ws_latency": ws_latency,
    "ws_throughput": ws_throughput,
    "ws_connect": ws_connect,
    "grpc_echo": grpc_echo,
    "sessions": sessions,
    "tasks": tasks,
    "fleet": fleet,
}


async def main_async(cfg: dict[str, Any]) -> None:
    deadline = float(cfg.get("deadline", 300))
    try:
        async with asyncio.timeout(deadline):
            result = await MODES[cfg["mode"]](cfg)
    except Exception as exc:
        emit("result", failed=f"{type(exc).__name__}: {exc}"[:500])
        return
    emit("result", **result)


def main() -> None:
    raise_fd_limit()
    cfg = orjson.loads(sys.argv[1])
    tune_gc()  # thousands of client sockets: the collector would skew the client's share
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_async(cfg))
    else:
        uvloop.run(main_async(cfg))


if __name__ == "__main__":
    main()
