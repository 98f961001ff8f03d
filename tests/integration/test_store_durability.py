"""Records you can trust, with real processes: an acked session has a record even when
its replica is SIGKILLed 20 ms after the ack, and a store that cannot write turns the
replica NOT_SERVING, is counted and logged, refuses new sessions, lets running sessions
end for their requesters, and comes back once the disk does.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sqlite3
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aip_grpc import session_api_pb2, session_api_pb2_grpc
from tests.integration.faults_support import Recorder, ended_once, until
from tests.processes import GatewayService, Replica, free_port, wait_known
from tests.stack import (
    HOST,
    cmd,
    plan,
    register_constellation,
    register_device,
    results_for,
    task_frame,
)

pb = session_api_pb2
BURST = 25  # sessions through the gateway's link, and as many through the public API


async def health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=3)
    status: int = answer.status
    return status


async def wait_health(address: str, status: int, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while await health(address) != status:
        assert asyncio.get_running_loop().time() < deadline, f"health never {status}"
        await asyncio.sleep(0.05)


def stored_ids(path: str) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT session_id FROM sessions")}


@pytest.mark.parametrize("commit_interval", ["0.05", "0.5"])
async def test_every_acked_session_has_a_record_after_a_kill_20ms_later(
    tmp_path: Path, commit_interval: str,
) -> None:
    """With the default commit interval, as in production, and with a long one, under
    which a creation committed after its ack would be lost every time."""
    path = str(tmp_path / "records.sqlite3")
    replica = Replica(grace=0.5, store_path=path, extra=(
        "--max-running-per-device", "0", "--store-commit-interval", commit_interval))
    gateway = GatewayService("g-durable", [replica])
    replica.start()
    gateway.start()
    recorders: list[Recorder] = []
    try:
        await gateway.wait_replicas(1)
        device = Recorder(await register_device(gateway.ws_url, "dd"), "dd")
        recorders.append(device)
        await wait_known([replica], "dd")
        requester = Recorder(await register_constellation(gateway.ws_url, "cd", "dd"), "cd")
        recorders.append(requester)
        linked = [f"cd@burst-{n}" for n in range(BURST)]
        backend = [f"api-burst-{n}" for n in range(BURST)]
        async with grpc.aio.insecure_channel(replica.address) as channel:
            api = session_api_pb2_grpc.SessionApiStub(channel)
            await api.StartSession(pb.StartSessionRequest(  # warms the path up
                device_id="dd", request=plan([cmd("held")]), session_id="warm-up"), timeout=5)
            # Both bursts at once, so that every ack falls in one commit interval.
            answers = asyncio.gather(*(api.StartSession(pb.StartSessionRequest(
                device_id="dd", request=plan([cmd("held")]), session_id=session_id),
                timeout=5) for session_id in backend))
            await asyncio.gather(*(requester.send(task_frame(
                "cd", plan([cmd("held")]), client_type="constellation", target_id="dd",
                session_id=session_id, task_name=f"burst-{n}"))
                for n, session_id in enumerate(linked)))
            assert [answer.session_id for answer in await answers] == backend
            acked = {f["session_id"] for f in requester.of_type("heartbeat")}
            while not acked >= set(linked):
                await asyncio.sleep(0.002)
                acked = {f["session_id"] for f in requester.of_type("heartbeat")}
            await asyncio.sleep(0.02)
            replica.kill()

        assert stored_ids(path) >= {*linked, *backend}
        replica.start()
        await gateway.wait_replicas(1)
        for session_id in [*linked, *backend]:
            info = await replica.call("GetSession", pb.GetSessionRequest(session_id=session_id))
            assert info.stored and info.state == pb.SESSION_STATE_FAILED, info
            assert info.cancel_reason == "replica_restarted", info
            assert info.device_id == "dd" and json_steps(info.request) == 1
        listed = await replica.call("ListSessions", pb.ListSessionsRequest(
            page_size=500))
        assert {s.session_id for s in listed.sessions} >= {*linked, *backend}
    finally:
        for recorder in recorders:
            await recorder.close()
        gateway.stop()
        replica.stop()


def json_steps(request: str) -> int:
    return len(json.loads(request)["steps"])


async def metric(port: int, name: str) -> float:
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"http://{HOST}:{port}/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def limit_file_size(pid: int, size: int) -> None:
    """Lower or raise the file-size limit of a running process (writes beyond it fail
    with EFBIG; CPython ignores SIGXFSZ)."""
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (size, hard))


async def test_a_store_that_cannot_write_is_unhealthy_but_ends_its_sessions(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "records.sqlite3")
    metrics_port = free_port()
    replica = Replica(grace=0.5, store_path=path, capture=True, extra=(
        "--metrics-port", str(metrics_port), "--max-running-per-device", "0"))
    gateway = GatewayService("g-full", [replica])
    replica.start()
    gateway.start()
    recorders: list[Recorder] = []
    try:
        await gateway.wait_replicas(1)
        device = Recorder(await register_device(gateway.ws_url, "df"), "df")
        requester = Recorder(await register_constellation(gateway.ws_url, "cf", "df"), "cf")
        recorders += [device, requester]
        await wait_known([replica], "df")
        running = ["cf@a", "cf@b", "cf@c"]
        for session_id in running:
            await requester.send(task_frame("cf", plan([cmd("one")], [cmd("two")]),
                                            client_type="constellation", target_id="df",
                                            session_id=session_id, task_name=session_id[3:]))
            await requester.ack(session_id)
        for session_id in running:
            await device.send(results_for(await device.command(session_id), "df"))
        held: dict[str, Any] = {s: await device.command(s) for s in running}
        assert await health(replica.address) == health_pb2.HealthCheckResponse.SERVING
        assert await metric(metrics_port, "aip_session_store_healthy") == 1
        errors_before = await metric(metrics_port, "aip_session_store_write_errors_total")

        limit_file_size(replica.pid, 0)  # from now on no file of the replica can grow
        await device.send(results_for(held["cf@a"], "df"))
        await wait_health(replica.address, health_pb2.HealthCheckResponse.NOT_SERVING)
        assert await metric(metrics_port, "aip_session_store_healthy") == 0
        assert await metric(metrics_port, "aip_session_store_write_errors_total") > errors_before
        await until(lambda: any("writes fail, records are being lost" in line
                                for line in replica.log), 5, "the failure is logged")
        # The running session still ends for its requester, and the next one too.
        assert (await ended_once(requester, ["cf@a"], quiet=0))["cf@a"]["status"] == "completed"
        await device.send(results_for(held["cf@b"], "df", status="failure"))
        assert (await ended_once(requester, ["cf@b"], quiet=0))["cf@b"]["status"] == "failed"
        # New sessions are refused: their ack would promise a record.
        try:
            await replica.call("StartSession", pb.StartSessionRequest(
                device_id="df", request=plan([cmd()]), session_id="api-refused"))
            raise AssertionError("started without a record")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            assert "session store" in (exc.details() or "")
        await requester.send(task_frame("cf", plan([cmd()]), client_type="constellation",
                                        target_id="df", session_id="cf@refused",
                                        task_name="refused"))
        await until(lambda: bool(requester.of_type("error", "cf@refused")), 5,
                    "the linked task is refused")
        assert "session store" in requester.of_type("error", "cf@refused")[0]["error"]
        assert not requester.of_type("heartbeat", "cf@refused")
        failing_lines = [line for line in replica.log if "session store" in line]
        assert len(failing_lines) <= 3, failing_lines  # not one line per write

        limit_file_size(replica.pid, resource.RLIM_INFINITY)  # the disk is back
        await wait_health(replica.address, health_pb2.HealthCheckResponse.SERVING)
        assert await metric(metrics_port, "aip_session_store_healthy") == 1
        await until(lambda: any("writes work again" in line for line in replica.log), 5,
                    "the recovery is logged")
        await device.send(results_for(held["cf@c"], "df"))
        assert (await ended_once(requester, ["cf@c"], quiet=0))["cf@c"]["status"] == "completed"
        answer = await replica.call("StartSession", pb.StartSessionRequest(
            device_id="df", request=plan([cmd()]), session_id="api-after"))
        assert answer.state == pb.SESSION_STATE_RUNNING
        assert "api-after" in stored_ids(path) and "api-refused" not in stored_ids(path)
        await device.send(results_for(await device.command("api-after"), "df"))
        # Exactly one task_end per session the requester started, whatever the store did.
        await ended_once(requester, running)
    finally:
        for recorder in recorders:
            await recorder.close()
        gateway.stop()
        replica.stop()


async def test_a_task_refused_by_a_replica_that_cannot_record_runs_on_another(
    tmp_path: Path,
) -> None:
    failing = Replica(grace=0.5, store_path=str(tmp_path / "a.sqlite3"))
    working_path = str(tmp_path / "b.sqlite3")
    working = Replica(grace=0.5, store_path=working_path)
    gateway = GatewayService("g-two", [failing, working])
    for process in (failing, working, gateway):
        process.start()
    recorders: list[Recorder] = []
    try:
        await gateway.wait_replicas(2)
        device = Recorder(await register_device(gateway.ws_url, "d2"), "d2")
        requester = Recorder(await register_constellation(gateway.ws_url, "c2", "d2"), "c2")
        recorders += [device, requester]
        await wait_known([failing, working], "d2")
        limit_file_size(failing.pid, 0)
        # The gateway places each task on the replica with the fewest sessions, which is
        # the failing one every time: each refusal sends the task on to the other.
        tasks = [f"c2@t{n}" for n in range(4)]
        for session_id in tasks:
            await requester.send(task_frame("c2", plan([cmd()]), client_type="constellation",
                                            target_id="d2", session_id=session_id,
                                            task_name=session_id[3:]))
            await requester.ack(session_id)
            await device.send(results_for(await device.command(session_id), "d2"))
        ends = await ended_once(requester, tasks)
        assert {end["status"] for end in ends.values()} == {"completed"}
        assert not requester.of_type("error")
        assert set(tasks) <= stored_ids(working_path)
        await wait_health(failing.address, health_pb2.HealthCheckResponse.NOT_SERVING)
    finally:
        for recorder in recorders:
            await recorder.close()
        gateway.stop()
        for replica in (failing, working):
            replica.stop()
