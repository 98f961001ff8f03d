"""Session records in the store: readable after the requester left, after the memory
forgot them, after a restart and after a SIGKILL; command logs; retention."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from aip_grpc import session_api_pb2, session_api_pb2_grpc
from session_service.server import SessionService
from session_service.settings import SessionSettings
from tests.conftest import StackFactory
from tests.processes import GatewayService, Replica
from tests.stack import (
    HOST,
    Client,
    Stack,
    answer_commands,
    api_call,
    cmd,
    plan,
    register_constellation,
    register_device,
    results_for,
    task_frame,
    wait_for,
)

pb = session_api_pb2


async def task_result(url: str, task_name: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        return await client.get(f"/api/task_result/{task_name}")


def answered_timeout_answered() -> str:
    """Three steps; the second one's command times out (its device stays silent)."""
    return json.dumps({"steps": [[cmd("first")], {"actions": [cmd("second")], "timeout": 0.3},
                                 [cmd("third")]],
                       "continue_on_failure": True})


async def run_logged_session(stack: Stack, session_id: str, task_name: str) -> None:
    """A constellation runs the three-step plan on dev1; the device answers steps 1 and 3."""
    device = await register_device(stack.ws_url, "dev1")
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    await constellation.send(task_frame("c1", answered_timeout_answered(),
                                        client_type="constellation", target_id="dev1",
                                        session_id=session_id, task_name=task_name))
    first = await device.recv_type("command")
    await device.send(results_for(first, "dev1", result="one"))
    second = await device.recv_type("command")  # left unanswered: it times out
    third = await device.recv_type("command", timeout=5)
    await device.send(results_for(second, "dev1", result="late"))  # dropped: too late
    await device.send(results_for(third, "dev1", result="three"))
    end = await constellation.recv_type("task_end")
    assert end["status"] == "completed", end
    await device.recv_type("task_end")
    await constellation.close()
    await device.close()


def assert_command_log(info: pb.SessionInfo) -> None:
    assert [c.seq for c in info.commands] == [0, 1, 2]
    assert [json.loads(c.actions_json)[0]["tool_name"] for c in info.commands] == [
        "first", "second", "third"]
    assert [c.status for c in info.commands] == [
        pb.COMMAND_STATUS_ANSWERED, pb.COMMAND_STATUS_TIMEOUT, pb.COMMAND_STATUS_ANSWERED]
    results = [json.loads(c.results_json) for c in info.commands]
    assert results[0][0]["result"] == "one" and results[2][0]["result"] == "three"
    assert results[1][0]["status"] == "failure" and "0.3s" in results[1][0]["error"]
    for command in info.commands:
        sent, received = command.sent_time.ToNanoseconds(), command.received_time.ToNanoseconds()
        assert command.response_id and 0 < sent <= received
    first, second = info.commands[0], info.commands[1]
    assert first.received_time.ToNanoseconds() <= second.sent_time.ToNanoseconds()
    assert json.loads(info.request)["continue_on_failure"] is True


async def test_command_log_of_a_live_session(stack: Stack) -> None:
    await run_logged_session(stack, "log-1", "logged")
    info = await api_call(stack.replica.address, "GetSession", pb.GetSessionRequest(
        session_id="log-1"))
    assert not info.stored
    assert_command_log(info)
    by_name = await api_call(stack.replica.address, "GetSession", pb.GetSessionRequest(
        task_name="logged"))
    assert [c.response_id for c in by_name.commands] == [c.response_id for c in info.commands]
    listed = await api_call(stack.replica.address, "ListSessions", pb.ListSessionsRequest())
    assert not listed.sessions[0].commands  # the log comes with GetSession only


async def test_record_outlives_the_requester_and_the_memory(make_stack: StackFactory) -> None:
    stack = await make_stack(session={"store_path": ":memory:", "max_records": 1})
    await run_logged_session(stack, "gone-1", "job-gone")  # the requester has left
    # Another session ends: the memory keeps one ended session, so gone-1 lives only in
    # the store from now on.
    device = await register_device(stack.ws_url, "dev2")
    await api_call(stack.replica.address, "StartSession", pb.StartSessionRequest(
        device_id="dev2", request=plan([cmd()]), session_id="other"))
    await answer_commands(device, "dev2", 1)
    await wait_for(lambda: "gone-1" not in stack.service.manager.sessions)
    assert stack.service.store is not None
    await asyncio.to_thread(stack.service.store.flush)

    info = await api_call(stack.replica.address, "GetSession", pb.GetSessionRequest(
        session_id="gone-1"))
    assert info.stored and info.state == pb.SESSION_STATE_COMPLETED
    assert (info.task_name, info.device_id, info.requester_id, info.requester_kind) == (
        "job-gone", "dev1", "c1", "constellation")
    assert info.replica_id == stack.service.settings.replica_id and info.HasField("ended_time")
    assert [step[0]["result"] for step in json.loads(info.result_json)] == [
        "one", None, "three"]
    assert_command_log(info)

    answer = await task_result(stack.http_url, "job-gone")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "done" and body["session_id"] == "gone-1"
    assert body["result"][2][0]["result"] == "three"
    listed = await api_call(stack.replica.address, "ListSessions", pb.ListSessionsRequest())
    assert [s.session_id for s in listed.sessions] == ["other", "gone-1"]
    watched = [update async for update in _watch(stack.replica.address, "gone-1")]
    assert [u.kind for u in watched] == [pb.UPDATE_KIND_ENDED] and watched[0].session.stored
    cancelled = await api_call(stack.replica.address, "CancelSession", pb.CancelSessionRequest(
        session_id="gone-1"))
    assert cancelled.state == pb.SESSION_STATE_COMPLETED  # nothing to cancel any more
    await device.close()


async def _watch(address: str, session_id: str) -> Any:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = session_api_pb2_grpc.SessionApiStub(channel)
        async for update in stub.WatchSession(pb.WatchSessionRequest(session_id=session_id),
                                              timeout=5):
            yield update


async def test_records_survive_a_restart_of_the_session_service(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    path = str(tmp_path / "records.sqlite3")
    stack = await make_stack(session={"store_path": path, "replica_id": "replica-a"})
    await run_logged_session(stack, "before-restart", "job-restart")
    port = stack.replica.port
    await stack.replica.stop()
    await wait_for(lambda: not stack.gateway.healthy_links())

    again = SessionService(SessionSettings(host=HOST, port=port, store_path=path,
                                           replica_id="replica-a"))
    await again.start()
    try:
        assert stack.gw is not None
        await stack.gw.wait_linked()
        address = f"{HOST}:{port}"
        info = await api_call(address, "GetSession", pb.GetSessionRequest(
            session_id="before-restart"))
        assert info.stored and info.state == pb.SESSION_STATE_COMPLETED
        assert_command_log(info)
        by_name = await api_call(address, "GetSession",
                                 pb.GetSessionRequest(task_name="job-restart"))
        assert by_name.session_id == "before-restart"
        answer = await task_result(stack.http_url, "job-restart")
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "done"
        assert answer.json()["result"][0][0]["result"] == "one"
        # The same replica id lists its history; so does any other replica.
        listed = await api_call(address, "ListSessions", pb.ListSessionsRequest())
        assert [s.session_id for s in listed.sessions] == ["before-restart"]
    finally:
        await again.stop(grace=0.5)

    other = SessionService(SessionSettings(host=HOST, port=0, store_path=path,
                                           replica_id="replica-b"))
    other_port = await other.start()
    try:
        address = f"{HOST}:{other_port}"
        mine = await api_call(address, "ListSessions",
                              pb.ListSessionsRequest(replica_id="replica-b"))
        assert list(mine.sessions) == []
        every = await api_call(address, "ListSessions", pb.ListSessionsRequest())
        assert [s.session_id for s in every.sessions] == ["before-restart"]
        assert every.sessions[0].replica_id == "replica-a"
        theirs = await api_call(address, "ListSessions",
                                pb.ListSessionsRequest(replica_id="replica-a"))
        assert [s.session_id for s in theirs.sessions] == ["before-restart"]
    finally:
        await other.stop(grace=0.5)


async def test_retention_prunes_old_records(make_stack: StackFactory, tmp_path: Path) -> None:
    path = str(tmp_path / "records.sqlite3")
    stack = await make_stack(session={"store_path": path, "record_retention": 1.0})
    device = await register_device(stack.ws_url, "dev1")
    await api_call(stack.replica.address, "StartSession", pb.StartSessionRequest(
        device_id="dev1", request=plan([cmd()]), session_id="short-lived", task_name="brief"))
    await answer_commands(device, "dev1", 1)
    await device.recv_type("task_end")
    info = await api_call(stack.replica.address, "GetSession", pb.GetSessionRequest(
        session_id="short-lived"))
    assert info.state == pb.SESSION_STATE_COMPLETED

    async def forgotten() -> bool:
        try:
            await api_call(stack.replica.address, "GetSession", pb.GetSessionRequest(
                session_id="short-lived"))
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND
            return True
        return False

    deadline = asyncio.get_running_loop().time() + 5
    while not await forgotten():
        assert asyncio.get_running_loop().time() < deadline, "record never pruned"
        await asyncio.sleep(0.1)
    assert (await task_result(stack.http_url, "brief")).status_code == 404
    assert stack.service.store is not None
    await asyncio.to_thread(stack.service.store.flush)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM sessions").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM commands").fetchone() == (0,)
    await device.close()


def _stored_state(path: str, session_id: str) -> tuple[str, int] | None:
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT state FROM sessions WHERE session_id = ?",
                         (session_id,)).fetchone()
        commands = db.execute("SELECT count(*) FROM commands WHERE session_id = ?",
                              (session_id,)).fetchone()[0]
    return None if row is None else (row[0], commands)


async def test_a_session_running_when_its_replica_is_killed_is_failed_at_the_next_start(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "records.sqlite3")
    replica = Replica(grace=0.5)
    replica.args += ["--store-path", path]
    gateway = GatewayService("g-kill", [replica])
    replica.start()
    gateway.start()
    device: Client | None = None
    try:
        await gateway.wait_replicas(1)
        device = await register_device(gateway.ws_url, "dk")
        for _ in range(100):
            if await replica.devices() == ["dk"]:
                break
            await asyncio.sleep(0.05)
        await replica.call("StartSession", pb.StartSessionRequest(
            device_id="dk", request=plan([cmd("a")], [cmd("b")]), session_id="sk",
            task_name="killed-mid-task"))
        first = await device.recv_type("command")
        await device.send(results_for(first, "dk"))
        await device.recv_type("command")  # the second command waits for its results
        for _ in range(100):
            if await asyncio.to_thread(_stored_state, path, "sk") == ("running", 2):
                break
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(_stored_state, path, "sk") == ("running", 2)

        replica.kill()
        end = await device.recv_type("task_end")  # from the gateway: the replica is lost
        assert end["status"] == "failed"
        await gateway.wait_replicas(0)
        replica.start()
        await gateway.wait_replicas(1)

        info = await replica.call("GetSession", pb.GetSessionRequest(session_id="sk"))
        assert info.stored and info.state == pb.SESSION_STATE_FAILED
        assert info.cancel_reason == "replica_restarted"
        assert "replica_restarted" in info.error
        assert info.ended_time.ToNanoseconds() >= info.created_time.ToNanoseconds()
        assert [c.status for c in info.commands] == [
            pb.COMMAND_STATUS_ANSWERED, pb.COMMAND_STATUS_UNANSWERED]
        answer = await task_result(f"http://{HOST}:{gateway.port}", "killed-mid-task")
        assert answer.json()["status"] == "done"
        assert "replica_restarted" in answer.json()["error"]
        assert await replica.running_sessions() == []
    finally:
        if device is not None:
            await device.close()
        gateway.stop()
        replica.stop()


@pytest.mark.parametrize("store_path", ["", ":memory:"])
async def test_the_store_can_be_disabled_or_in_memory(
    make_stack: StackFactory, store_path: str
) -> None:
    stack = await make_stack(session={"store_path": store_path})
    assert (stack.service.store is None) == (store_path == "")
    device = await register_device(stack.ws_url, "dev1")
    await api_call(stack.replica.address, "StartSession", pb.StartSessionRequest(
        device_id="dev1", request=plan([cmd()]), session_id="s"))
    await answer_commands(device, "dev1", 1)
    await device.recv_type("task_end")
    info = await api_call(stack.replica.address, "GetSession", pb.GetSessionRequest(session_id="s"))
    assert info.state == pb.SESSION_STATE_COMPLETED and len(info.commands) == 1
    await device.close()
