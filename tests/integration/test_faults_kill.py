"""Fault injection: a session replica or a gateway process killed with SIGKILL mid-task
and restarted.

After each kill every task ends exactly once for its requester (``task_end`` frames are
collected for a quiet period after the expected ones arrived, so a duplicate is caught),
the session records are complete, and nothing is left in any registry.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from aip_grpc import session_api_pb2
from tests.integration.faults_support import Recorder, ended_once, http_get, until
from tests.processes import Cluster, Replica, wait_known
from tests.stack import (
    cmd,
    plan,
    register_constellation,
    register_device,
    results_for,
    task_frame,
)

pb = session_api_pb2


def stored_sessions(path: str) -> dict[str, tuple[str, int]]:
    """session_id -> (state, number of commands) as committed in a store file."""
    try:
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT session_id, state FROM sessions").fetchall()
            commands = dict(db.execute(
                "SELECT session_id, count(*) FROM commands GROUP BY session_id").fetchall())
    except sqlite3.OperationalError:  # not created yet
        return {}
    return {session_id: (state, commands.get(session_id, 0)) for session_id, state in rows}


def durable_cluster(tmp_path: Path, gateways: int, replicas: int) -> Cluster:
    cluster = Cluster(gateways=gateways, replicas=replicas, grace=1.0)
    for n, replica in enumerate(cluster.replicas):
        # Several sessions per device at once: the kill hits more than one.
        replica.args += ["--store-path", str(tmp_path / f"replica-{n}.sqlite3"),
                         "--max-running-per-device", "0"]
    return cluster


@pytest.fixture
async def two_by_two(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Two gateways and two replicas as processes, each replica with a store file."""
    cluster = durable_cluster(tmp_path, 2, 2)
    try:
        yield await cluster.start()
    finally:
        cluster.stop()


def store_path(replica: Replica) -> str:
    last = max(n for n, arg in enumerate(replica.args) if arg == "--store-path")
    return replica.args[last + 1]


# ------------------------------------------------------------------------ replica kill -9


async def test_replica_killed_mid_task_and_restarted(two_by_two: Cluster) -> None:
    cluster = two_by_two
    g1, g2 = cluster.gateways
    d1 = Recorder(await register_device(g1.ws_url, "d1"), "d1")
    d2 = Recorder(await register_device(g2.ws_url, "d2"), "d2")
    await wait_known(cluster.replicas, "d1")
    await wait_known(cluster.replicas, "d2")
    c1 = Recorder(await register_constellation(g1.ws_url, "c1", "d2"), "c1")
    c2 = Recorder(await register_constellation(g2.ws_url, "c2", "d1"), "c2")
    requesters = {"c1": c1, "c2": c2}
    devices = {"d1": d1, "d2": d2}
    target = {"c1": "d2", "c2": "d1"}
    owner: dict[str, str] = {}  # session_id -> requester
    for n in range(3):
        for name, client in requesters.items():
            session_id = f"{name}@t-{n}"
            await client.send(task_frame(name, plan([cmd("only")]), client_type="constellation",
                                         target_id=target[name], session_id=session_id,
                                         task_name=f"job-{name}-{n}"))
            await client.ack(session_id)
            owner[session_id] = name
    held = {s: await devices[target[r]].command(s) for s, r in owner.items()}

    placement = {r.address: {s.session_id for s in await r.running_sessions()}
                 for r in cluster.replicas}
    assert set().union(*placement.values()) == set(owner), placement
    victim = max(cluster.replicas, key=lambda r: len(placement[r.address]))
    survivor = next(r for r in cluster.replicas if r is not victim)
    lost = placement[victim.address]
    kept = set(owner) - lost
    # The victim's store has committed the lost sessions and their commands.
    path = store_path(victim)
    await until(lambda: all(stored_sessions(path).get(s) == ("running", 1) for s in lost), 5,
                "the lost sessions are committed to the store")

    victim.kill()

    # Each requester: exactly one task_end, failed and naming the replica, per lost session.
    for name, client in requesters.items():
        mine = {s for s in lost if owner[s] == name}
        ends = await ended_once(client, mine, timeout=10)
        for session_id, end in ends.items():
            assert end["status"] == "failed", end
            assert victim.address in (end["error"] or ""), end
            assert end["session_id"] == session_id
    # The devices hear of the end of their lost constellation sessions once too.
    for name, device in devices.items():
        on_it = {s for s in lost if target[owner[s]] == name}
        await ended_once(device, on_it, quiet=0)

    # The survivors complete.
    for session_id in kept:
        device = target[owner[session_id]]
        await devices[device].send(results_for(held[session_id], device))
    for name, client in requesters.items():
        ends = await ended_once(client, {s for s in kept if owner[s] == name})
        assert all(end["status"] == "completed" for end in ends.values()), ends

    # The restarted replica reads the lost sessions back as failed (replica_restarted).
    victim.start()
    for gateway in cluster.gateways:
        await gateway.wait_replicas(2)
    for session_id in lost:
        info = await victim.call("GetSession", pb.GetSessionRequest(session_id=session_id))
        assert info.stored and info.state == pb.SESSION_STATE_FAILED, info
        assert info.cancel_reason == "replica_restarted", info
        assert "replica_restarted" in info.error
        assert info.ended_time.ToNanoseconds() >= info.created_time.ToNanoseconds() > 0
        assert (info.device_id, info.requester_id) == (target[owner[session_id]],
                                                       owner[session_id])
        assert [c.status for c in info.commands] == [
            pb.COMMAND_STATUS_UNANSWERED], info.commands
    for session_id in kept:
        info = await survivor.call("GetSession", pb.GetSessionRequest(session_id=session_id))
        assert info.state == pb.SESSION_STATE_COMPLETED, info
        assert [c.status for c in info.commands] == [pb.COMMAND_STATUS_ANSWERED]
    if lost:
        some = sorted(lost)[0]
        name, n = owner[some], some.rsplit("-", 1)[1]
        answer = await http_get(f"http://127.0.0.1:{g1.port}/api/task_result/job-{name}-{n}")
        assert answer["status"] == "done" and "replica_restarted" in answer["error"], answer
    assert await victim.running_sessions() == []

    # Still exactly one task_end per session, whatever the restart did.
    for name, client in requesters.items():
        counts = {s: len(client.ends(s)) for s in owner if owner[s] == name}
        assert set(counts.values()) == {1}, (name, counts)
    for recorder in [*requesters.values(), *devices.values()]:
        await recorder.close()
    await cluster.assert_empty()


# ------------------------------------------------------------------------ gateway kill -9


async def find_session(cluster: Cluster, session_id: str) -> pb.SessionInfo:
    for replica in cluster.replicas:
        try:
            return await replica.call("GetSession", pb.GetSessionRequest(session_id=session_id))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
    raise AssertionError(f"no replica knows session {session_id}")


async def test_gateway_killed_mid_task_and_restarted(two_by_two: Cluster) -> None:
    cluster = two_by_two
    g1, g2 = cluster.gateways
    device = Recorder(await register_device(g2.ws_url, "dg"), "dg")
    await wait_known(cluster.replicas, "dg")
    constellation = Recorder(await register_constellation(g1.ws_url, "cg", "dg"), "cg")
    await constellation.send(task_frame("cg", plan([cmd("a")], [cmd("b")]),
                                        client_type="constellation", target_id="dg",
                                        session_id="cg@doomed", task_name="doomed"))
    await constellation.ack("cg@doomed")
    await device.command("cg@doomed")

    g2.kill()
    device.abort()
    ends = await ended_once(constellation, ["cg@doomed"], timeout=10)
    end = ends["cg@doomed"]
    assert end["status"] == "failed" and "device_disconnected" in (end["error"] or ""), end
    info = await find_session(cluster, "cg@doomed")
    assert info.state == pb.SESSION_STATE_CANCELLED, info
    assert info.cancel_reason == "device_disconnected"
    assert [c.status for c in info.commands] == [pb.COMMAND_STATUS_SENT] or [
        c.status for c in info.commands] == [pb.COMMAND_STATUS_UNANSWERED], info.commands
    assert info.ended_time.ToNanoseconds() >= info.created_time.ToNanoseconds() > 0

    # The gateway comes back on the same port; the device registers again; work resumes.
    g2.start()
    await g2.wait_replicas(2)
    again = Recorder(await register_device(g2.ws_url, "dg"), "dg-again")
    await wait_known(cluster.replicas, "dg")
    await constellation.send(task_frame("cg", plan([cmd("again")]),
                                        client_type="constellation", target_id="dg",
                                        session_id="cg@after", task_name="after"))
    await constellation.ack("cg@after")
    command = await again.command("cg@after")
    await again.send(results_for(command, "dg"))
    ends = await ended_once(constellation, ["cg@after"])
    assert ends["cg@after"]["status"] == "completed", ends
    assert len(constellation.ends("cg@doomed")) == 1
    info = await find_session(cluster, "cg@after")
    assert info.state == pb.SESSION_STATE_COMPLETED
    assert [c.status for c in info.commands] == [pb.COMMAND_STATUS_ANSWERED]

    for recorder in (constellation, again, device):
        await recorder.close()
    await cluster.assert_empty()
