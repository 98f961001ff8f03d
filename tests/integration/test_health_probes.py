"""The gateway's probes as an orchestrator sees them: liveness while the process serves,
readiness only while a replica link is up."""

from __future__ import annotations

import asyncio

import httpx

from gateway_service.http_api import readiness_problem
from tests.processes import GatewayService, Replica


async def probe(gateway: GatewayService, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as http:
        return await http.get(f"http://127.0.0.1:{gateway.port}/api/health/{path}")


async def wait_status(gateway: GatewayService, path: str, status: int,
                      timeout: float = 30) -> httpx.Response:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            answer = await probe(gateway, path)
            if answer.status_code == status:
                return answer
        except httpx.TransportError:
            pass
        assert asyncio.get_running_loop().time() < deadline, f"{path} never {status}"
        await asyncio.sleep(0.1)


async def test_ready_follows_the_replica_links() -> None:
    replica = Replica()
    gateway = GatewayService("g-probe", [replica])
    gateway.start()  # its replica is not there yet
    try:
        live = await wait_status(gateway, "live", 200)
        assert live.json() == {"status": "alive"}
        not_ready = await probe(gateway, "ready")
        assert not_ready.status_code == 503
        assert not_ready.json() == {"status": "not_ready",
                                    "reason": "no session-service replica link is up"}
        replica.start()
        assert (await wait_status(gateway, "ready", 200)).json() == {"status": "ready"}
        replica.kill()
        await wait_status(gateway, "ready", 503)
        assert (await probe(gateway, "live")).status_code == 200
    finally:
        gateway.stop()
        replica.stop()


def test_readiness_rule() -> None:
    assert readiness_problem(draining=False, healthy_links=2) is None
    assert readiness_problem(draining=True, healthy_links=2) == "draining"
    assert readiness_problem(draining=False, healthy_links=0) is not None
