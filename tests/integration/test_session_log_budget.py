"""A running session answered with big results keeps only the newest in memory, and its
record still shows every command's results (the store has them)."""

from __future__ import annotations

import json

from aip_grpc import session_api_pb2
from tests.conftest import StackFactory
from tests.stack import (
    Client,
    Stack,
    api_call,
    cmd,
    plan,
    register_device,
    results_for,
    wait_for,
)

pb = session_api_pb2
RESULT = 100_000
BUDGET = 300_000
STEPS = 8


async def start_plan(make_stack: StackFactory, session_id: str) -> tuple[Stack, Client]:
    """A stack with a small log budget, its device, and a plan of ``STEPS`` steps started
    on it through the API."""
    stack = await make_stack(session={"session_log_bytes": BUDGET})
    device = await register_device(stack.ws_url, "dev1")
    await wait_for(lambda: stack.replica.service.presence.get("dev1") is not None)
    await api_call(stack.replica.address, "StartSession", pb.StartSessionRequest(
        device_id="dev1", session_id=session_id, request=plan(*[[cmd()]] * STEPS)))
    return stack, device


async def test_old_results_leave_memory_and_come_back_from_the_store(
    make_stack: StackFactory,
) -> None:
    stack, device = await start_plan(make_stack, "big-log")
    address = stack.replica.address
    for step in range(STEPS - 1):
        command = await device.recv_type("command")
        await device.send(results_for(command, "dev1", result=f"{step:03}" + "x" * RESULT))
    await device.recv_type("command")  # the last step waits: the session still runs
    session = stack.replica.service.manager.sessions["big-log"]
    assert session.running
    held = [entry for entry in session.commands if not entry.released]
    assert session.released >= STEPS - 1 - BUDGET // RESULT
    assert sum(entry.size for entry in held) == session.log_bytes
    assert session.log_bytes - session.commands[-2].size <= BUDGET
    assert session.commands[0].results is None

    store = stack.replica.service.store
    assert store is not None and store.flush(10)
    info = await api_call(address, "GetSession", pb.GetSessionRequest(session_id="big-log"))
    answered = list(info.commands)[: STEPS - 1]
    for step, command in enumerate(answered):
        (result,) = json.loads(command.results_json)
        assert result["result"].startswith(f"{step:03}"), step
        assert len(result["result"]) == RESULT + 3


async def test_a_finished_plan_keeps_its_newest_results_whole_and_elides_the_oldest(
    make_stack: StackFactory,
) -> None:
    """The plan agent's result (every step's results) stays within the same budget: a
    long plan of screenshots would otherwise hold them all until its end."""
    stack, device = await start_plan(make_stack, "long-plan")
    address = stack.replica.address
    for step in range(STEPS):
        command = await device.recv_type("command")
        await device.send(results_for(command, "dev1", result=f"{step:03}" + "x" * RESULT))
    await wait_for(lambda: not stack.replica.service.manager.sessions["long-plan"].running,
                   what="the session's end")

    info = await api_call(address, "GetSession", pb.GetSessionRequest(session_id="long-plan"))
    steps = json.loads(info.result_json)
    assert len(steps) == STEPS
    whole = [n for n, (action,) in enumerate(steps) if isinstance(action["result"], str)]
    # The newest steps, as many as the budget holds, and never none.
    assert whole == list(range(STEPS - len(whole), STEPS)) and 1 <= len(whole) <= 3
    for n, (action,) in enumerate(steps):
        if n in whole:
            assert action["result"].startswith(f"{n:03}")
        else:
            assert action["status"] == "success" and action["call_id"]
            assert action["result"]["elided"] is True
            assert action["result"]["bytes"] >= RESULT
    # The record still has every command's results.
    store = stack.replica.service.store
    assert store is not None and store.flush(10)
    info = await api_call(address, "GetSession", pb.GetSessionRequest(session_id="long-plan"))
    for n, command in enumerate(info.commands):
        (result,) = json.loads(command.results_json)
        assert result["result"].startswith(f"{n:03}") and len(result["result"]) == RESULT + 3
