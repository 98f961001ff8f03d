"""Presence gathered on the link (the gateway's --presence-linger) and waited for by
StartSession (the replica's --device-wait): a device registered a moment ago is found,
one that never comes is refused after the wait, and registrations share link writes."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from aip_grpc import session_api_pb2, session_api_pb2_grpc
from aip_link.batching import BatchQueue
from tests.conftest import StackFactory
from tests.stack import cmd, plan, register_device, results_for, wait_for

pb = session_api_pb2
LINGER = 0.3


async def test_start_session_waits_for_a_device_whose_presence_lingers(
        make_stack: StackFactory) -> None:
    stack = await make_stack(gateway={"presence_linger": LINGER},
                             session={"device_wait": 5.0})
    async with grpc.aio.insecure_channel(stack.replica.address) as channel:
        api = session_api_pb2_grpc.SessionApiStub(channel)
        device = await register_device(stack.ws_url, "dev-late")
        try:
            # The replica has not heard of the device yet: its arrival lingers.
            assert stack.service.presence.device("dev-late") is None
            info = await api.StartSession(pb.StartSessionRequest(
                device_id="dev-late", request=plan([cmd("a")]), session_id="s-late"),
                timeout=5)
            assert info.state == pb.SESSION_STATE_RUNNING
            command = await device.recv_type("command")
            await device.send(results_for(command, "dev-late"))
            assert (await device.recv_type("task_end"))["status"] == "completed"
        finally:
            await device.close()


async def test_a_device_that_never_comes_is_refused_after_the_wait(
        make_stack: StackFactory) -> None:
    stack = await make_stack(session={"device_wait": 0.3})
    async with grpc.aio.insecure_channel(stack.replica.address) as channel:
        api = session_api_pb2_grpc.SessionApiStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await api.StartSession(pb.StartSessionRequest(
                device_id="dev-never", request=plan([cmd("a")])), timeout=5)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        assert time.monotonic() - started >= 0.25
    assert not stack.service.presence._waiting  # nothing left behind


async def test_registrations_within_the_linger_share_link_writes(
        make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    batches: list[int] = []
    next_batch = BatchQueue.next_batch

    async def counted(self: BatchQueue[object]) -> list[object] | None:
        batch = await next_batch(self)
        if batch is not None:
            batches.append(len(batch))
        return batch

    # Counted from the start: a writer already waiting would return its batch uncounted.
    monkeypatch.setattr(BatchQueue, "next_batch", counted)
    stack = await make_stack(gateway={"presence_linger": LINGER})
    await asyncio.sleep(0.1)
    batches.clear()
    devices = [await register_device(stack.ws_url, f"dev-{n}") for n in range(5)]
    try:
        await wait_for(lambda: len(stack.service.presence) == 5, timeout=5)
        # The gateway's five arrivals went out in one or two link messages, not five
        # (the replica's batches, if any, are single pongs).
        assert max(batches) >= 3 and len(batches) <= 3, batches
    finally:
        await asyncio.gather(*(device.close() for device in devices))
