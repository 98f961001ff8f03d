"""A gateway process's memory over tens of thousands of short connections stays flat.

Each cycle is what a flapping device costs: connect, upgrade, register, read the
confirmation, close properly; or the same refused (no valid token), as a scan of the port
would. 50 clients run cycles side by side so that the gateway sees overlapping
connections the way it does in production. After a warm-up (pymalloc arenas, caches,
the first collections), the resident set must not grow with the number of cycles.

Why it stays flat: a closed connection is freed by reference counting alone, none of its
parts caught in a reference cycle that only the (rarely run, see
:mod:`aip_runtime.gc_tuning`) collector would free; the in-process test checks that
directly, with the collector off.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections import Counter
from pathlib import Path

import pytest

from gateway_service.auth import hash_token
from tests.processes import GatewayService, Replica
from tests.raw_ws import register_and_leave
from tests.stack import HOST, Client, Stack, register_device, register_frame, wait_for

log = logging.getLogger(__name__)

needs_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")

WORKERS = 50
WARM_UP = 2_000
CYCLES = 10_000
#: Growth allowed over the level after the warm-up.
TOLERANCE = 0.10
TOKEN = "memory-secret"


async def run_cycles(gateway: GatewayService, total: int, *, refused: bool) -> None:
    """``total`` cycles by :data:`WORKERS` clients; every one ends the expected way."""
    path = "/ws" if refused else f"/ws?token={TOKEN}"

    async def worker(n: int) -> None:
        for cycle in range(total // WORKERS):
            client_id = f"x{n}-{cycle}" if refused else f"w{n}"
            outcome = await register_and_leave(HOST, gateway.port,
                                               register_frame(client_id), path)
            assert outcome == ("refused" if refused else "registered")

    await asyncio.gather(*(worker(n) for n in range(WORKERS)))


@needs_proc
@pytest.mark.timeout(300)
async def test_rss_stays_flat_over_connection_cycles() -> None:
    tokens = "; ".join(f"w{n} device {hash_token(TOKEN)}" for n in range(WORKERS))
    replica = Replica()
    gateway = GatewayService("g-memory", [replica], env={"AIP_GATEWAY_TOKENS": tokens})
    replica.start()
    gateway.start()
    try:
        await gateway.wait_replicas(1)
        started = gateway.rss()
        await run_cycles(gateway, WARM_UP, refused=False)
        await run_cycles(gateway, WARM_UP, refused=True)
        await asyncio.sleep(0.5)
        warm = gateway.rss()
        await run_cycles(gateway, CYCLES, refused=False)
        await asyncio.sleep(0.5)
        after_registered = gateway.rss()
        await run_cycles(gateway, CYCLES, refused=True)
        await asyncio.sleep(0.5)
        after_refused = gateway.rss()
        mib = 1 << 20
        log.warning("gateway RSS: %.1f MiB at start, %.1f after warm-up, %.1f after %d "
                    "registered cycles, %.1f after %d refused cycles", started / mib,
                    warm / mib, after_registered / mib, CYCLES, after_refused / mib, CYCLES)
        assert after_registered <= warm * (1 + TOLERANCE)
        assert after_refused <= warm * (1 + TOLERANCE)
    finally:
        gateway.stop()
        replica.stop()


#: What one connection is made of on the gateway's side; none may be left to the garbage
#: collector once the connection is closed.
CONNECTION_PARTS = {"GatewayHttpProtocol", "GatewayWebSocketProtocol", "ServerProtocol",
                    "HttpRequestParser", "WebSocket", "Connection", "Outbox", "Request",
                    "Queue", "generator"}


@pytest.mark.parametrize("refused", [False, True])
async def test_a_closed_connection_leaves_no_cyclic_garbage(
        make_stack: object, refused: bool) -> None:
    """With the collector off, closed connections must be freed by reference counting
    alone: nothing of them may turn up in what a collection finds afterwards."""
    gateway = {"tokens": f"someone device {hash_token(TOKEN)}"} if refused else {}
    stack: Stack = await make_stack(gateway=gateway)  # type: ignore[operator]

    async def cycles(count: int) -> None:
        for n in range(count):
            if refused:
                client = await Client.connect(stack.ws_url)
                await client.send(register_frame(f"dev{n}"))
                await client.recv()
            else:
                client = await register_device(stack.ws_url, f"dev{n}")
            await client.close()
        await wait_for(lambda: not stack.gw.server.server_state.connections  # type: ignore[union-attr]
                       and not len(stack.gateway.registry))
        await asyncio.sleep(0.1)  # the handlers' last steps

    await cycles(3)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        await cycles(20)
        gc.collect()
        left = Counter(type(o).__name__ for o in gc.garbage
                       if type(o).__module__.split(".")[0] in
                       {"gateway_service", "uvicorn", "websockets", "starlette", "httptools"})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not set(left) & CONNECTION_PARTS, left
