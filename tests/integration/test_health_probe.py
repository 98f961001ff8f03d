"""The container health check (``session_service.api_health.probe``) against a real
replica: SERVING while it runs, not once it drains, and not when nothing listens."""

from __future__ import annotations

import asyncio

from session_service.api_health import probe
from tests.processes import free_port
from tests.stack import HOST, SessionReplica


async def test_probe_follows_the_replica_health() -> None:
    replica = SessionReplica(drain_timeout=5.0)
    await replica.start()
    try:
        assert await asyncio.to_thread(probe, replica.address, 3.0) == 0
        stopping = asyncio.get_running_loop().create_task(replica.service.stop(grace=0.5))
        await asyncio.sleep(0.2)  # draining: health is NOT_SERVING at once
        assert await asyncio.to_thread(probe, replica.address, 3.0) == 1
        await stopping
    finally:
        await replica.stop()


async def test_probe_fails_when_nothing_listens() -> None:
    assert await asyncio.to_thread(probe, f"{HOST}:{free_port()}", 1.0) == 1
