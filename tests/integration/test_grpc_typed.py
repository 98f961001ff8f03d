"""The typed public API: enum kinds, timestamps, pages and filters, rich errors and
idempotency keys, over a real replica and gateway."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from aip_grpc import session_api_pb2, session_api_pb2_grpc
from tests.conftest import StackFactory
from tests.stack import Stack, answer_commands, cmd, plan, register_device

pb = session_api_pb2
Stub = session_api_pb2_grpc.SessionApiStub


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(stack.replica.address) as channel:
        yield Stub(channel)


def details(error: grpc.aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo,
                                                   list[tuple[str, str]]]:
    """The ErrorInfo and the BadRequest's (field, description) pairs of an error."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no rich status"
    info, violations = error_details_pb2.ErrorInfo(), []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [(v.field, v.description) for v in bad.field_violations]
    return info, violations


async def test_watch_kinds_are_enums_and_times_are_timestamps(stack: Stack, api: Stub) -> None:
    device = await register_device(stack.ws_url, "dev1")
    before = time.time_ns()
    info = await api.StartSession(pb.StartSessionRequest(
        device_id="dev1", request=plan([cmd("a")]), session_id="t1"), timeout=5)
    assert before <= info.created_time.ToNanoseconds() <= time.time_ns()
    assert not info.HasField("ended_time")
    stream = api.WatchSession(pb.WatchSessionRequest(session_id="t1"), timeout=10)
    updates = [await stream.__aiter__().__anext__()]
    assert updates[0].kind == pb.UPDATE_KIND_WATCHING  # the first update of a watch
    await answer_commands(device, "dev1", 1)
    updates += [update async for update in stream]
    assert [pb.UpdateKind.Name(u.kind) for u in updates] == [
        "UPDATE_KIND_WATCHING", "UPDATE_KIND_COMMAND_SENT", "UPDATE_KIND_RESULTS_RECEIVED",
        "UPDATE_KIND_ENDED"]
    final = updates[-1].session
    assert final.ended_time.ToNanoseconds() >= final.created_time.ToNanoseconds()
    detailed = await api.GetSession(pb.GetSessionRequest(session_id="t1"), timeout=5)
    [command] = detailed.commands
    assert command.status == pb.COMMAND_STATUS_ANSWERED
    assert (final.created_time.ToNanoseconds() <= command.sent_time.ToNanoseconds()
            <= command.received_time.ToNanoseconds() <= final.ended_time.ToNanoseconds())
    await device.close()


@pytest.mark.parametrize("request_text", [
    "{not json", '{"steps": []}', '[{"parameters": {}}]', '{"steps": [[{"tool_name": "a", '
    '"tool_type": "shell"}]]}', '[{"actions": [{"tool_name": "a"}], "timeout": -1}]'])
async def test_a_malformed_plan_is_invalid_argument_and_nothing_starts(
    stack: Stack, api: Stub, request_text: str
) -> None:
    device = await register_device(stack.ws_url, "dev1")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.StartSession(pb.StartSessionRequest(
            device_id="dev1", request=request_text, session_id="bad"), timeout=5)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = details(error.value)
    assert (info.domain, info.reason) == ("aip.v1", "INVALID_REQUEST")
    [(field, description)] = violations
    assert field == "request" and "not a valid plan" in description
    await device.expect_silence(0.3)  # no command was sent
    listed = await api.ListSessions(pb.ListSessionsRequest(),
                                    timeout=5)
    assert list(listed.sessions) == []  # and nothing was recorded
    await device.close()


async def test_every_bad_field_is_named(stack: Stack, api: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.StartSession(pb.StartSessionRequest(idempotency_key="k" * 129), timeout=5)
    _, violations = details(error.value)
    assert [field for field, _ in violations] == ["device_id", "request", "idempotency_key"]


async def test_refusals_carry_a_reason(stack: Stack, api: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.StartSession(pb.StartSessionRequest(
            device_id="nobody", request=plan([cmd("a")])), timeout=5)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert details(error.value)[0].reason == "DEVICE_NOT_CONNECTED"
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await api.GetSession(pb.GetSessionRequest(session_id="nope"), timeout=5)
    assert details(missing.value)[0].reason == "SESSION_NOT_FOUND"
    device = await register_device(stack.ws_url, "dev1")
    await api.StartSession(pb.StartSessionRequest(
        device_id="dev1", request=plan([cmd("a")]), session_id="mine", requester_id="a"),
        timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as taken:
        await api.StartSession(pb.StartSessionRequest(
            device_id="dev1", request=plan([cmd("a")]), session_id="mine", requester_id="b"),
            timeout=5)
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(taken.value)[0].reason == "SESSION_EXISTS"
    await device.close()


async def test_an_idempotency_key_returns_the_first_session(stack: Stack, api: Stub) -> None:
    device = await register_device(stack.ws_url, "dev1")

    async def start(key: str, requester: str, tool: str = "a") -> pb.SessionInfo:
        info: pb.SessionInfo = await api.StartSession(pb.StartSessionRequest(
            device_id="dev1", request=plan([cmd(tool)]), requester_id=requester,
            idempotency_key=key), timeout=5)
        return info

    first, again = await asyncio.gather(start("k1", "alice"), start("k1", "alice", "b"))
    assert first.session_id == again.session_id
    [command] = await answer_commands(device, "dev1", 1)
    assert command["actions"][0]["tool_name"] in ("a", "b")
    await device.recv_type("task_end")
    await device.expect_silence(0.3)  # one session only
    after_end = await start("k1", "alice")
    assert after_end.session_id == first.session_id
    assert after_end.state == pb.SESSION_STATE_COMPLETED
    other = await start("k1", "bob")  # the key is the requester's own
    assert other.session_id != first.session_id
    await answer_commands(device, "dev1", 1)
    await device.close()


async def test_pages_and_filters_over_250_sessions(make_stack: StackFactory) -> None:
    stack = await make_stack(session={"max_running_per_device": 0})
    devices = [await register_device(stack.ws_url, f"dev{n}") for n in range(5)]
    async with grpc.aio.insecure_channel(stack.replica.address) as channel:
        api = Stub(channel)
        for batch in range(5):
            await asyncio.gather(*(api.StartSession(pb.StartSessionRequest(
                device_id=f"dev{n % 5}", request=plan([cmd("a")]), session_id=f"s{n:03}",
                requester_id=f"r{n % 2}", task_name=f"task-{n % 10}"), timeout=10)
                for n in range(batch * 50, batch * 50 + 50)))
        for n in range(0, 250, 25):  # ten cancelled, the rest running
            await api.CancelSession(pb.CancelSessionRequest(session_id=f"s{n:03}"), timeout=5)

        async def pages(size: int, **filters: object) -> list[list[pb.SessionInfo]]:
            got, token = [], ""
            while True:
                answer = await api.ListSessions(pb.ListSessionsRequest(
                    page_size=size, page_token=token, **filters), timeout=10)  # type: ignore[arg-type]
                got.append(list(answer.sessions))
                token = answer.next_page_token
                if not token:
                    return got

        every = await pages(100)
        assert [len(page) for page in every] == [100, 100, 50]
        listed = [info for page in every for info in page]
        assert len({info.session_id for info in listed}) == 250
        keys = [(info.created_time.ToNanoseconds(), info.session_id) for info in listed]
        assert keys == sorted(keys, reverse=True)  # newest first, one stable order
        on_dev1 = [s for page in await pages(20, device_id="dev1") for s in page]
        assert {s.session_id for s in on_dev1} == {f"s{n:03}" for n in range(1, 250, 5)}
        by_r0 = [s for page in await pages(100, requester_id="r0") for s in page]
        assert len(by_r0) == 125 and {s.requester_id for s in by_r0} == {"r0"}
        named = [s for page in await pages(100, task_name="task-3") for s in page]
        assert {s.session_id for s in named} == {f"s{n:03}" for n in range(3, 250, 10)}
        cancelled = [s for page in await pages(
            100, state=pb.SESSION_STATE_CANCELLED) for s in page]
        assert {s.session_id for s in cancelled} == {f"s{n:03}" for n in range(0, 250, 25)}
        running = [s for page in await pages(100, running_only=True) for s in page]
        assert len(running) == 240
        both = [s for page in await pages(7, device_id="dev0", requester_id="r1",
                                            state=pb.SESSION_STATE_RUNNING) for s in page]
        assert {s.session_id for s in both} == {
            f"s{n:03}" for n in range(250) if n % 5 == 0 and n % 2 == 1 and n % 25}
        first = await api.ListSessions(pb.ListSessionsRequest(page_size=10), timeout=5)
        for wrong in (pb.ListSessionsRequest(page_token=first.next_page_token,
                                             device_id="dev1"),
                      pb.ListSessionsRequest(page_token="not-a-token")):
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await api.ListSessions(wrong, timeout=5)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert details(error.value)[1][0][0] == "page_token"
    for device in devices:
        await device.close()
