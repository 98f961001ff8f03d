"""Two gateways and three session replicas, each its own process, killed and restarted.

Every task must end with exactly one ``task_end`` to its requester, and nothing may be
left in any registry afterwards.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aip_grpc import session_api_pb2
from tests.processes import Cluster, wait_known
from tests.stack import (
    Client,
    cmd,
    plan,
    register_constellation,
    register_device,
    results_for,
    task_frame,
)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    running = Cluster(gateways=2, replicas=3, grace=1.0)
    try:
        yield await running.start()
    finally:
        running.stop()


async def task_ends(client: Client, seconds: float, expect: int | None = None,
                    quiet: float = 0.3) -> list[dict[str, Any]]:
    """The task_end frames the client receives within ``seconds``.

    With ``expect``, stops once that many arrived and then listens ``quiet`` seconds
    more, so that a duplicate would still be caught.
    """
    ends = []
    deadline = asyncio.get_running_loop().time() + seconds
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        if expect is not None and len(ends) >= expect:
            left = min(left, quiet)
        try:
            frame = await client.recv(left)
        except TimeoutError:
            break
        if frame["type"] == "task_end":
            ends.append(frame)
    return ends


async def test_constellation_drives_a_device_on_another_gateway(cluster: Cluster) -> None:
    g1, g2 = cluster.gateways
    device = await register_device(g2.ws_url, "dev-b")
    await wait_known(cluster.replicas, "dev-b")
    constellation = await register_constellation(g1.ws_url, "c-a", "dev-b")
    await constellation.send({"type": "device_info_request", "client_type": "constellation",
                              "client_id": "c-a", "target_id": "dev-b", "request_id": "q1"})
    info = await constellation.recv()
    assert info["type"] == "device_info_response" and info["response_id"] == "q1"
    assert info["result"] == {"os": "Linux", "cpu_count": 2}

    await constellation.send(task_frame("c-a", plan([cmd("a")], [cmd("b")]),
                                        client_type="constellation", target_id="dev-b",
                                        session_id="c-a@t-1"))
    assert (await constellation.recv())["session_id"] == "c-a@t-1"
    for _ in range(2):
        command = await device.recv_type("command")
        await device.send(results_for(command, "dev-b"))
    end = await constellation.recv_type("task_end")
    assert end["status"] == "completed" and end["session_id"] == "c-a@t-1"
    assert (await device.recv_type("task_end"))["session_id"] == "c-a@t-1"
    await constellation.expect_silence(0.3)

    await device.close()
    await constellation.close()
    await cluster.assert_empty()


async def test_replica_killed_mid_task(cluster: Cluster) -> None:
    g1, g2 = cluster.gateways
    d1 = await register_device(g1.ws_url, "d1")
    d2 = await register_device(g2.ws_url, "d2")
    await wait_known(cluster.replicas, "d1")
    await wait_known(cluster.replicas, "d2")
    c1 = await register_constellation(g1.ws_url, "c1", "d2")
    c2 = await register_constellation(g2.ws_url, "c2", "d1")
    two_steps = plan([cmd("first")], [cmd("second")])
    requesters = {"c1": c1, "c2": c2}
    devices = {"d1": d1, "d2": d2}
    route = {"c1": "d2", "c2": "d1"}
    sessions: dict[str, str] = {}  # session_id -> requester id
    for n in range(3):
        for requester, target in route.items():
            session_id = f"{requester}@t-{n}"
            await requesters[requester].send(task_frame(
                requester, two_steps, client_type="constellation", target_id=target,
                session_id=session_id,
            ))
            assert (await requesters[requester].recv())["session_id"] == session_id
            sessions[session_id] = requester
    held: dict[str, dict[str, Any]] = {}
    for device in devices.values():
        for _ in range(3):
            command = await device.recv_type("command")
            held[command["session_id"]] = command
    assert set(held) == set(sessions)

    placement = {r.address: [s.session_id for s in await r.running_sessions()]
                 for r in cluster.replicas}
    victim = max(cluster.replicas, key=lambda r: len(placement[r.address]))
    lost = set(placement[victim.address])
    assert lost, placement
    victim.kill()

    ends: dict[str, list[dict[str, Any]]] = {}
    for requester, client in requesters.items():
        mine = {s for s, r in sessions.items() if r == requester and s in lost}
        got = []
        while len(got) < len(mine):
            got.append(await client.recv_type("task_end", timeout=10))
        ends[requester] = got
    failed = [end for got in ends.values() for end in got]
    assert {end["session_id"] for end in failed} == lost
    assert all(end["status"] == "failed" for end in failed)
    assert all(victim.address in end["error"] for end in failed)

    # Devices stay connected; the surviving sessions finish.
    for session_id, command in held.items():
        if session_id not in lost:
            target = route[sessions[session_id]]
            await devices[target].send(results_for(command, target))
    answered: Counter[str] = Counter()

    async def serve(name: str, device: Client) -> None:
        while True:
            frame = await device.recv(timeout=60)
            if frame["type"] == "command":
                answered[frame["session_id"]] += 1
                await device.send(results_for(frame, name))

    servers = [asyncio.create_task(serve(n, d)) for n, d in devices.items()]
    try:
        for requester, client in requesters.items():
            survivors = {s for s, r in sessions.items() if r == requester and s not in lost}
            got = await task_ends(client, 10.0, expect=len(survivors))
            counts = Counter(end["session_id"] for end in got)
            assert counts == Counter(dict.fromkeys(survivors, 1)), (requester, got)
            assert all(end["status"] == "completed" for end in got)

        # New tasks succeed on the survivors, and the restarted replica takes work again.
        victim.start()
        for gateway in cluster.gateways:
            await gateway.wait_replicas(3)
        for n in range(3):
            await c1.send(task_frame("c1", plan([cmd("x")]), client_type="constellation",
                                     target_id="d2", session_id=f"c1@again-{n}"))
        got = await task_ends(c1, 10.0, expect=3)
        assert sorted(end["session_id"] for end in got) == [f"c1@again-{n}" for n in range(3)]
        assert all(end["status"] == "completed" for end in got)
        taken = await victim.call("ListSessions", session_api_pb2.ListSessionsRequest())
        assert any(s.session_id.startswith("c1@again-") for s in taken.sessions)
    finally:
        for server in servers:
            server.cancel()
    for client in [*requesters.values(), *devices.values()]:
        await client.close()
    await cluster.assert_empty()


async def test_no_replica_reachable(cluster: Cluster) -> None:
    g1 = cluster.gateways[0]
    device = await register_device(g1.ws_url, "lonely")
    constellation = await register_constellation(g1.ws_url, "c-lonely", "lonely")
    for replica in cluster.replicas:
        replica.kill()
    await g1.wait_replicas(0)
    await constellation.send(task_frame("c-lonely", plan([cmd()]), client_type="constellation",
                                        target_id="lonely", session_id="s-none"))
    error = await constellation.recv(timeout=2)
    assert error["type"] == "error" and "No session service replica" in error["error"]
    assert error["session_id"] == "s-none"
    await device.send({"type": "heartbeat", "client_id": "lonely"})
    assert (await device.recv())["type"] == "heartbeat"
    await constellation.send({"type": "device_info_request", "client_type": "constellation",
                              "client_id": "c-lonely", "target_id": "lonely",
                              "request_id": "q"})
    info = await constellation.recv()
    assert info["type"] == "device_info_response" and info["status"] == "ok"
    await device.close()
    await constellation.close()


async def test_gateway_killed_cancels_its_devices_sessions(cluster: Cluster) -> None:
    g1, g2 = cluster.gateways
    device = await register_device(g2.ws_url, "doomed")
    await wait_known(cluster.replicas, "doomed")
    constellation = await register_constellation(g1.ws_url, "c-watch", "doomed")
    await constellation.send(task_frame("c-watch", plan([cmd()]), client_type="constellation",
                                        target_id="doomed", session_id="s-doomed"))
    assert (await constellation.recv())["session_id"] == "s-doomed"
    await device.recv_type("command")
    g2.kill()
    ends = await task_ends(constellation, 10.0, expect=1)
    assert len(ends) == 1, ends
    assert ends[0]["status"] == "failed" and "device_disconnected" in ends[0]["error"]
    await constellation.close()
    await cluster.assert_empty()
