"""The seed's cancellation table and disconnection cleanup, over real sockets.

| device disconnects        | device_disconnected        | constellation gets task_end failed |
| constellation disconnects | constellation_disconnected | device gets task_end failed        |

After each case nothing may be left behind: no registry entry, no route, no running
session, no presence record, no per-connection task.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aip_grpc import session_api_pb2
from tests.stack import (
    Client,
    Stack,
    answer_commands,
    cmd,
    get_session,
    no_running_sessions,
    plan,
    register_constellation,
    register_device,
    results_for,
    task_frame,
    wait_for,
)


def everything_released(stack: Stack) -> bool:
    gateway = stack.gateway
    return (
        len(gateway.registry) == 0
        and gateway.routes == {}
        and not gateway.sessions.pending
        and len(stack.service.presence) == 0
        and no_running_sessions(stack)
    )


async def assert_released(stack: Stack, timeout: float = 5.0) -> None:
    await wait_for(lambda: everything_released(stack), timeout)


async def start_constellation_task(stack: Stack, session_id: str,
                                   steps: int = 2) -> tuple[Client, Client, dict[str, Any]]:
    """dev1 + c1, a task from c1 on dev1, and the first command dev1 received."""
    device = await register_device(stack.ws_url, "dev1")
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    await constellation.send(task_frame(
        "c1", plan(*([cmd(f"s{i}")] for i in range(steps))), client_type="constellation",
        target_id="dev1", session_id=session_id, task_name="galaxy/x/t-1",
    ))
    ack = await constellation.recv()
    assert ack["type"] == "heartbeat" and ack["session_id"] == session_id
    command = await device.recv_type("command")
    assert session_id in stack.gateway.routes
    assert stack.service.manager.sessions[session_id].running
    return device, constellation, command


async def test_device_disconnect_mid_task_fails_constellation_task(stack: Stack) -> None:
    device, constellation, _ = await start_constellation_task(stack, "c1@t-dd")
    await device.close()
    end = await constellation.recv_type("task_end", timeout=3)
    assert end["status"] == "failed", end
    assert end["session_id"] == "c1@t-dd"
    assert "device_disconnected" in (end["error"] or ""), end
    session = stack.service.manager.sessions["c1@t-dd"]
    assert session.cancel_reason == "device_disconnected"
    info = await get_session(stack.replica.address, "c1@t-dd")
    assert info.state == session_api_pb2.SESSION_STATE_CANCELLED
    assert info.cancel_reason == "device_disconnected"
    # Only one task_end, and the constellation stays connected and usable.
    await constellation.expect_silence(0.3)
    assert stack.gateway.registry.get("c1") is not None
    assert stack.gateway.routes == {}
    assert no_running_sessions(stack)
    await constellation.close()
    await assert_released(stack)


async def test_constellation_disconnect_mid_task_tells_the_device(stack: Stack) -> None:
    device, constellation, _ = await start_constellation_task(stack, "c1@t-cd")
    await constellation.close()
    await wait_for(lambda: not stack.service.manager.sessions["c1@t-cd"].running)
    session = stack.service.manager.sessions["c1@t-cd"]
    assert session.cancel_reason == "constellation_disconnected"
    # The device hears one task_end, so it can stop the work, and no further command.
    end = await device.recv_type("task_end", timeout=3)
    assert end["status"] == "failed" and end["session_id"] == "c1@t-cd", end
    assert "constellation_disconnected" in (end["error"] or ""), end
    await device.expect_silence(0.5)
    info = await get_session(stack.replica.address, "c1@t-cd")
    assert info.state == session_api_pb2.SESSION_STATE_CANCELLED
    assert info.cancel_reason == "constellation_disconnected"
    assert stack.gateway.routes == {}
    assert len(stack.gateway.registry) == 1 and stack.gateway.registry.get("dev1") is not None
    assert not stack.gateway.registry.get("dev1").sessions  # type: ignore[union-attr]
    await device.close()
    await assert_released(stack)


async def test_late_results_after_constellation_left_are_dropped(stack: Stack) -> None:
    device, constellation, command = await start_constellation_task(stack, "c1@t-late")
    await constellation.close()
    await wait_for(lambda: not stack.service.manager.sessions["c1@t-late"].running)
    assert (await device.recv_type("task_end", timeout=3))["session_id"] == "c1@t-late"
    await device.send(results_for(command, "dev1"))
    await device.expect_silence(0.3)
    info = await get_session(stack.replica.address, "c1@t-late")
    assert info.state == session_api_pb2.SESSION_STATE_CANCELLED
    assert info.steps_done == 0
    await device.close()
    await assert_released(stack)


async def test_device_self_task_then_disconnect(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    await device.send(task_frame("dev1", plan([cmd("a")], [cmd("b")]), session_id="self-1"))
    ack = await device.recv()
    assert ack["session_id"] == "self-1"
    await device.recv_type("command")
    await device.close()
    await wait_for(lambda: not stack.service.manager.sessions["self-1"].running)
    info = await get_session(stack.replica.address, "self-1")
    assert info.state == session_api_pb2.SESSION_STATE_CANCELLED
    assert info.cancel_reason == "device_disconnected"
    await assert_released(stack)


async def test_device_disconnect_while_a_command_is_pending_frees_dispatcher(
    stack: Stack,
) -> None:
    device, constellation, _ = await start_constellation_task(stack, "c1@t-disp", steps=1)
    dispatcher = stack.service.manager.sessions["c1@t-disp"].dispatcher
    assert dispatcher is not None and len(dispatcher) == 1
    await device.close()
    await constellation.recv_type("task_end", timeout=3)
    assert len(dispatcher) == 0
    await constellation.close()
    await assert_released(stack)


async def test_device_reconnect_takes_over_and_cancels_old_sessions(stack: Stack) -> None:
    device, constellation, _ = await start_constellation_task(stack, "c1@t-re")
    # The old connection went quiet (a device that lost its network): it answers no
    # ping, so the reconnect takes over after the probe.
    device.ws.transport.pause_reading()
    newer = await register_device(stack.ws_url, "dev1")
    end = await constellation.recv_type("task_end", timeout=3)
    assert end["status"] == "failed" and "device_disconnected" in (end["error"] or "")
    # The newer connection is the one registered, and it is usable.
    await wait_for(lambda: stack.gateway.registry.get("dev1") is not None
                   and not stack.gateway.routes)
    await constellation.send(task_frame("c1", plan([cmd("again")]),
                                        client_type="constellation", target_id="dev1",
                                        session_id="c1@t-re2"))
    await constellation.recv_type("heartbeat")
    await answer_commands(newer, "dev1", 1)
    end = await constellation.recv_type("task_end")
    assert end["status"] == "completed"
    for client in (device, newer, constellation):
        await client.close()
    await assert_released(stack)


# ---------------------------------------------------------------- leaks


async def _connect_many(stack: Stack, ids: list[str], batch: int = 100) -> list[Client]:
    clients: list[Client] = []
    for start in range(0, len(ids), batch):
        clients.extend(await asyncio.gather(
            *(register_device(stack.ws_url, client_id) for client_id in ids[start:start + batch])
        ))
    return clients


async def _close_many(clients: list[Client], batch: int = 100) -> None:
    for start in range(0, len(clients), batch):
        await asyncio.gather(*(client.close() for client in clients[start:start + batch]))


def _task_count() -> int:
    return len(asyncio.all_tasks())


async def test_thousand_clients_connect_and_leave_without_leaks(stack: Stack) -> None:
    baseline = _task_count()
    ids = [f"leak-{i}" for i in range(1000)]
    clients = await _connect_many(stack, ids)
    assert len(stack.gateway.registry) == 1000
    await wait_for(lambda: len(stack.service.presence) == 1000, 10)
    await _close_many(clients)
    await assert_released(stack, 15)
    assert len(stack.gateway.registry) == 0
    assert stack.gateway.routes == {}
    assert len(stack.service.presence) == 0
    assert stack.service.manager.sessions == {}
    # No per-connection task is left running (outbox flushers, handlers, sockets).
    await wait_for(lambda: _task_count() <= baseline + 2, 10)


async def test_clients_that_ran_a_task_leave_without_leaks(stack: Stack) -> None:
    baseline = _task_count()
    ids = [f"busy-{i}" for i in range(300)]
    clients = await _connect_many(stack, ids)
    workers = list(zip(ids[:50], clients[:50], strict=True))

    async def run(client_id: str, client: Client) -> dict[str, Any]:
        await client.send(task_frame(client_id, plan([cmd("a")]), session_id=f"{client_id}-s"))
        ack = await client.recv()
        assert ack["type"] == "heartbeat" and ack["session_id"] == f"{client_id}-s"
        await answer_commands(client, client_id, 1)
        return await client.recv_type("task_end")

    ends = await asyncio.gather(*(run(cid, c) for cid, c in workers))
    assert all(end["status"] == "completed" for end in ends)
    # A few more start a task and leave in the middle of it.
    quitters = list(zip(ids[50:70], clients[50:70], strict=True))
    for client_id, client in quitters:
        await client.send(task_frame(client_id, plan([cmd("a")]), session_id=f"{client_id}-q"))
    for _, client in quitters:
        await client.recv_type("command")
    await _close_many(clients)
    await assert_released(stack, 15)
    manager = stack.service.manager
    for client_id, _ in workers:
        assert manager.sessions[f"{client_id}-s"].state == "completed"
    for client_id, _ in quitters:
        assert manager.sessions[f"{client_id}-q"].cancel_reason == "device_disconnected"
    assert all(not s.watchers for s in manager.sessions.values())
    assert all(s.dispatcher is None or len(s.dispatcher) == 0
               for s in manager.sessions.values())
    await wait_for(lambda: _task_count() <= baseline + 2, 10)
