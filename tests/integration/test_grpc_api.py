"""The public gRPC API of the session service, driving devices connected to the gateway."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from aip_grpc import session_api_pb2, session_api_pb2_grpc
from tests.stack import (
    Client,
    Stack,
    answer_commands,
    cmd,
    plan,
    register_constellation,
    register_device,
    results_for,
    task_frame,
    wait_for,
)

pb = session_api_pb2
WATCHING, SENT = pb.UPDATE_KIND_WATCHING, pb.UPDATE_KIND_COMMAND_SENT
RESULTS, ENDED = pb.UPDATE_KIND_RESULTS_RECEIVED, pb.UPDATE_KIND_ENDED


@pytest.fixture
async def channel(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(stack.replica.address) as chan:
        yield chan


@pytest.fixture
def api(channel: grpc.aio.Channel) -> session_api_pb2_grpc.SessionApiStub:
    return session_api_pb2_grpc.SessionApiStub(channel)


async def start(api: session_api_pb2_grpc.SessionApiStub, device_id: str, request: str,
                **fields: str) -> pb.SessionInfo:
    info: pb.SessionInfo = await api.StartSession(
        pb.StartSessionRequest(device_id=device_id, request=request, **fields), timeout=5
    )
    return info


async def test_list_devices_shows_connected_devices(
    stack: Stack, api: session_api_pb2_grpc.SessionApiStub
) -> None:
    device = await register_device(stack.ws_url, "dev1")
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    await wait_for(lambda: len(stack.service.presence) == 2)
    response = await api.ListDevices(pb.ListDevicesRequest(), timeout=5)
    assert [d.device_id for d in response.devices] == ["dev1"]  # not the constellation
    [record] = response.devices
    assert record.platform == "linux"
    assert record.gateway_id == stack.gateway.gateway_id
    assert json.loads(record.device_info_json) == {"os": "Linux", "cpu_count": 2}
    assert record.active_sessions == 0
    await device.close()
    await constellation.close()
    await wait_for(lambda: len(stack.service.presence) == 0)
    response = await api.ListDevices(pb.ListDevicesRequest(), timeout=5)
    assert list(response.devices) == []


async def test_start_session_drives_the_device(
    stack: Stack, api: session_api_pb2_grpc.SessionApiStub
) -> None:
    device = await register_device(stack.ws_url, "dev1")
    info = await start(api, "dev1", plan([cmd("a")], [cmd("b")]), task_name="grpc-job",
                       session_id="g1")
    assert info.session_id == "g1"
    assert info.state == pb.SESSION_STATE_RUNNING
    assert info.device_id == "dev1" and info.requester_id == "backend"
    assert info.requester_kind == "backend"
    assert info.replica_id == stack.replica.settings.replica_id
    listed = await api.ListDevices(pb.ListDevicesRequest(), timeout=5)
    assert listed.devices[0].active_sessions == 1
    commands = await answer_commands(device, "dev1", 2)
    assert [c["actions"][0]["tool_name"] for c in commands] == ["a", "b"]
    assert all(c["session_id"] == "g1" and c["task_name"] == "grpc-job" for c in commands)
    end = await device.recv_type("task_end")
    assert end["status"] == "completed" and end["session_id"] == "g1"
    info = await api.GetSession(pb.GetSessionRequest(session_id="g1"), timeout=5)
    assert info.state == pb.SESSION_STATE_COMPLETED
    assert json.loads(info.result_json) == end["result"]
    assert info.steps_done == 2 and info.steps_total == 2
    await device.close()


async def test_start_session_generates_id_and_sanitizes_task_name(
    stack: Stack, api: session_api_pb2_grpc.SessionApiStub
) -> None:
    device = await register_device(stack.ws_url, "dev1")
    info = await start(api, "dev1", plan([cmd("a")]), task_name="../etc/x")
    assert info.session_id
    assert info.task_name and "/" not in info.task_name and not info.task_name.startswith(".")
    [command] = await answer_commands(device, "dev1", 1)
    assert command["session_id"] == info.session_id
    assert command["task_name"] == info.task_name
    await device.recv_type("task_end")
    await device.close()


async def test_watch_session_streams_until_ended(
    stack: Stack, api: session_api_pb2_grpc.SessionApiStub
) -> None:
    device = await register_device(stack.ws_url, "dev1")
    await start(api, "dev1", plan([cmd("a")], [cmd("b")]), session_id="w1")
    first = await device.recv_type("command")  # the session waits on the device now
    call = api.WatchSession(pb.WatchSessionRequest(session_id="w1"), timeout=10)
    updates: list[pb.SessionUpdate] = []
    stream = call.__aiter__()
    updates.append(await stream.__anext__())
    assert updates[0].kind == WATCHING
    assert updates[0].session.state == pb.SESSION_STATE_RUNNING
    await device.send(results_for(first, "dev1"))
    await answer_commands(device, "dev1", 1)
    async for update in stream:
        updates.append(update)
    kinds = [u.kind for u in updates]
    # Step a was sent before the watch began: it is replayed, then the rest is live.
    assert kinds == [WATCHING, SENT, RESULTS, SENT,
                     RESULTS, ENDED], kinds
    sent = [u for u in updates if u.kind == SENT]
    assert [json.loads(u.detail_json)[0]["tool_name"] for u in sent] == ["a", "b"]
    assert sent[0].response_id == first["response_id"]
    final = updates[-1].session
    assert final.state == pb.SESSION_STATE_COMPLETED
    assert len(json.loads(final.result_json)) == 2
    await device.recv_type("task_end")
    # Watching an ended session answers at once with its final state.
    again = [u async for u in api.WatchSession(pb.WatchSessionRequest(session_id="w1"),
                                               timeout=5)]
    assert [u.kind for u in again] == [ENDED]
    assert again[0].session.state == pb.SESSION_STATE_COMPLETED
    assert all(not s.watchers for s in stack.service.manager.sessions.values())
    await device.close()


async def test_watch_replays_the_steps_before_it(
    stack: Stack, api: session_api_pb2_grpc.SessionApiStub
) -> None:
    device = await register_device(stack.ws_url, "dev1")
    await start(api, "dev1", plan([cmd("a")], [cmd("b")], [cmd("c")]), session_id="w2")
    await answer_commands(device, "dev1", 1)
    second = await device.recv_type("command")  # step b waits on the device
    stream = api.WatchSession(pb.WatchSessionRequest(session_id="w2"), timeout=10).__aiter__()
    seen = [await stream.__anext__() for _ in range(4)]
    assert [u.kind for u in seen] == [WATCHING, SENT, RESULTS,
                                      SENT]
    assert seen[0].session.steps_done == 1
    assert [json.loads(u.detail_json)[0]["tool_name"] for u in (seen[1], seen[3])] == [
        "a", "b"]
    assert seen[3].response_id == second["response_id"]
    await device.send(results_for(second, "dev1"))
    await answer_commands(device, "dev1", 1)
    rest = [u.kind async for u in stream]
    assert rest == [RESULTS, SENT, RESULTS, ENDED], rest


async def test_get_session_by_id_and_by_task_name(
    stack: Stack, api: session_api_pb2_grpc.SessionApiStub
) -> None:
    device = await register_device(stack.ws_url, "dev1")
    await start(api, "dev1", plan([cmd("a")]), session_id="old", task_name="named")
    await answer_commands(device, "dev1", 1)
    await device.recv_type("task_end")
    await start(api, "dev1", plan([cmd("b")]), session_id="new", task_name="named")
    await device.recv_type("command")
    by_id = await api.GetSession(pb.GetSessionRequest(session_id="old"), timeout=5)
    assert by_id.session_id == "old" and by_id.state == pb.SESSION_STATE_COMPLETED
    by_name = await api.GetSession(pb.GetSessionRequest(task_name="named"), timeout=5)
    assert by_name.session_id == "new"  # the latest with that name
    assert by_name.state == pb.SESSION_STATE_RUNNING
    assert by_name.result_json == ""
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await api.GetSession(pb.GetSessionRequest(session_id="nope"), timeout=5)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as missing_name:
        await api.GetSession(pb.GetSessionRequest(task_name="nope"), timeout=5)
    assert missing_name.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as neither:
        await api.GetSession(pb.GetSessionRequest(), timeout=5)
    assert neither.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await device.close()


async def test_list_sessions(stack: Stack, api: session_api_pb2_grpc.SessionApiStub) -> None:
    dev1 = await register_device(stack.ws_url, "dev1")
    dev2 = await register_device(stack.ws_url, "dev2")
    await start(api, "dev1", plan([cmd("a")]), session_id="l1")
    await answer_commands(dev1, "dev1", 1)
    await dev1.recv_type("task_end")
    await start(api, "dev1", plan([cmd("a")]), session_id="l2")
    await start(api, "dev2", plan([cmd("a")]), session_id="l3")
    await dev1.recv_type("command")
    await dev2.recv_type("command")
    every = await api.ListSessions(pb.ListSessionsRequest(), timeout=5)
    assert {s.session_id for s in every.sessions} == {"l1", "l2", "l3"}
    assert every.sessions[0].session_id == "l3"  # newest first
    on_dev1 = await api.ListSessions(pb.ListSessionsRequest(device_id="dev1"), timeout=5)
    assert {s.session_id for s in on_dev1.sessions} == {"l1", "l2"}
    running = await api.ListSessions(pb.ListSessionsRequest(running_only=True), timeout=5)
    assert {s.session_id for s in running.sessions} == {"l2", "l3"}
    limited = await api.ListSessions(pb.ListSessionsRequest(page_size=1), timeout=5)
    assert len(limited.sessions) == 1 and limited.next_page_token
    await dev1.close()
    await dev2.close()


async def test_cancel_session(stack: Stack, api: session_api_pb2_grpc.SessionApiStub) -> None:
    device = await register_device(stack.ws_url, "dev1")
    await start(api, "dev1", plan([cmd("a")], [cmd("b")]), session_id="cx")
    await device.recv_type("command")
    info = await api.CancelSession(pb.CancelSessionRequest(session_id="cx"), timeout=5)
    assert info.state == pb.SESSION_STATE_CANCELLED
    assert info.cancel_reason == "requested"
    assert info.HasField("ended_time")
    end = await device.recv_type("task_end")
    assert end["status"] == "failed" and end["session_id"] == "cx"
    assert end["error"]
    await device.expect_silence(0.3)
    # Cancelling again changes nothing.
    again = await api.CancelSession(pb.CancelSessionRequest(session_id="cx"), timeout=5)
    assert again.state == pb.SESSION_STATE_CANCELLED and again.cancel_reason == "requested"
    await device.expect_silence(0.2)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await api.CancelSession(pb.CancelSessionRequest(session_id="nope"), timeout=5)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    await device.close()


async def test_cancel_a_constellation_session_tells_both(
    stack: Stack, api: session_api_pb2_grpc.SessionApiStub
) -> None:
    device = await register_device(stack.ws_url, "dev1")
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    await constellation.send(task_frame("c1", plan([cmd("a")]), client_type="constellation",
                                        target_id="dev1", session_id="c1@x"))
    await constellation.recv_type("heartbeat")
    await device.recv_type("command")
    info = await api.CancelSession(pb.CancelSessionRequest(session_id="c1@x"), timeout=5)
    assert info.state == pb.SESSION_STATE_CANCELLED
    for client in (constellation, device):
        end = await client.recv_type("task_end")
        assert end["status"] == "failed" and end["session_id"] == "c1@x"
    await wait_for(lambda: not stack.gateway.routes)
    await device.close()
    await constellation.close()


async def test_start_session_on_unknown_device_is_not_found(
    stack: Stack, api: session_api_pb2_grpc.SessionApiStub
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await start(api, "ghost", plan([cmd("a")]))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert stack.service.manager.sessions == {}
    # A constellation is not a device either.
    device = await register_device(stack.ws_url, "dev1")
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    await wait_for(lambda: len(stack.service.presence) == 2)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await start(api, "c1", plan([cmd("a")]))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    await device.close()
    await constellation.close()


async def test_start_session_with_bad_arguments(
    stack: Stack, api: session_api_pb2_grpc.SessionApiStub
) -> None:
    device = await register_device(stack.ws_url, "dev1")
    for request in (pb.StartSessionRequest(request=plan([cmd("a")])),
                    pb.StartSessionRequest(device_id="dev1", request="  ")):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await api.StartSession(request, timeout=5)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await device.expect_silence(0.2)
    await device.close()


async def test_session_id_of_another_requester_already_exists(
    stack: Stack, api: session_api_pb2_grpc.SessionApiStub
) -> None:
    device = await register_device(stack.ws_url, "dev1")
    await start(api, "dev1", plan([cmd("a")]), session_id="owned", requester_id="alice")
    command = await device.recv_type("command")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await start(api, "dev1", plan([cmd("b")]), session_id="owned", requester_id="bob")
    assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS
    # The same requester's retry while it runs gets that session: nothing starts again.
    again = await start(api, "dev1", plan([cmd("b")]), session_id="owned", requester_id="alice")
    assert again.session_id == "owned" and again.state == pb.SESSION_STATE_RUNNING
    await device.send(results_for(command, "dev1"))
    await device.recv_type("task_end")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await start(api, "dev1", plan([cmd("b")]), session_id="owned", requester_id="bob")
    assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS
    info = await api.GetSession(pb.GetSessionRequest(session_id="owned"), timeout=5)
    assert info.requester_id == "alice" and info.state == pb.SESSION_STATE_COMPLETED
    await device.expect_silence(0.2)
    await device.close()


async def test_session_id_of_a_websocket_client_already_exists(
    stack: Stack, api: session_api_pb2_grpc.SessionApiStub
) -> None:
    device: Client = await register_device(stack.ws_url, "dev1")
    await device.send(task_frame("dev1", plan([cmd("a")]), session_id="ws-owned"))
    await device.recv_type("heartbeat")
    await device.recv_type("command")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await start(api, "dev1", plan([cmd("b")]), session_id="ws-owned")
    assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS
    await device.expect_silence(0.2)
    await device.close()


async def test_health_reports_serving(stack: Stack, channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "aip.v1.SessionApi"):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_the_api(stack: Stack, channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(timeout=5)
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    response = await call.read()
    names = {service.name for service in response.list_services_response.service}
    assert "aip.v1.SessionApi" in names
    assert "grpc.health.v1.Health" in names
    await call.write(reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="aip.v1.SessionApi"))
    described = await call.read()
    assert described.file_descriptor_response.file_descriptor_proto
    await call.done_writing()
