"""The client SDK (aip_client) against the real services: a DeviceClient serving tools
and a ConstellationClient sending it work, over real sockets."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aip_client import (
    ConstellationClient,
    DeviceClient,
    DeviceInfoError,
    RegistrationRefused,
    TaskRefused,
    ToolFailure,
    ToolRegistry,
    builtin_registry,
)
from gateway_service.auth import hash_token
from tests.conftest import StackFactory
from tests.stack import HOST, GatewayProcess, Stack, wait_for
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(60)


#: Naps running now, and the most that ran at once (reset by the tests that read it).
NAPPING: list[int] = []
NAPPING_MOST = [0]


def tools() -> ToolRegistry:
    registry = builtin_registry()

    @registry.tool()
    def add(a: int, b: int) -> int:
        return a + b

    @registry.tool()
    async def echo(text: str = "hi") -> dict[str, str]:
        await asyncio.sleep(0)
        return {"echo": text}

    @registry.tool()
    def explode() -> None:
        raise RuntimeError("kaboom")

    @registry.tool()
    def refuse() -> None:
        raise ToolFailure("not today", result={"why": "policy"})

    @registry.tool()
    async def nap(seconds: float = 0.3) -> str:
        NAPPING.append(1)
        NAPPING_MOST[0] = max(NAPPING_MOST[0], len(NAPPING))
        try:
            await asyncio.sleep(seconds)
        finally:
            NAPPING.pop()
        return f"slept {seconds}"

    @registry.tool()
    def sync_nap(seconds: float = 0.3) -> str:
        time.sleep(seconds)  # in a worker thread: must not block the event loop
        return f"slept {seconds}"

    return registry


def fast_device(url: str, client_id: str, **options: Any) -> DeviceClient:
    options.setdefault("backoff_min", 0.05)
    options.setdefault("backoff_max", 0.3)
    return DeviceClient(url, client_id, tools(), **options)


def call(tool_name: str, call_id: str, **parameters: Any) -> dict[str, Any]:
    return {"tool_name": tool_name, "parameters": parameters, "call_id": call_id}


@pytest.fixture
async def device(stack: Stack) -> AsyncIterator[DeviceClient]:
    client = fast_device(stack.ws_url, "sdk-dev")
    await client.start(timeout=10)
    try:
        yield client
    finally:
        await client.stop()


@pytest.fixture
async def constellation(stack: Stack, device: DeviceClient) -> AsyncIterator[ConstellationClient]:
    async with ConstellationClient(stack.ws_url, "sdk-c", target_id=device.client_id) as client:
        yield client


async def test_device_runs_a_plan_sent_by_a_constellation(
    stack: Stack, device: DeviceClient, constellation: ConstellationClient
) -> None:
    plan = {"steps": [[call("add", "c-add", a=2, b=3), call("echo", "c-echo", text="yo")],
                      [call("get_system_info", "c-info")]]}
    result = await constellation.run_task(plan, task_name="sdk-plan", timeout=10)
    assert result.ok, result
    assert result.status == "completed" and result.error is None
    first, second = result.result
    assert [(r["call_id"], r["status"], r["result"]) for r in first] == [
        ("c-add", "success", 5), ("c-echo", "success", {"echo": "yo"})]
    assert second[0]["call_id"] == "c-info"
    assert second[0]["result"]["hostname"] == socket.gethostname()
    assert all(r["namespace"] is None and r["error"] is None for r in first + second)
    assert device.commands_done == 2


async def test_unknown_and_raising_tools_give_failure_results(
    device: DeviceClient, constellation: ConstellationClient
) -> None:
    unknown = await constellation.run_task([call("no_such_tool", "u1")], timeout=10)
    assert unknown.status == "failed"
    assert "Unknown tool 'no_such_tool'" in (unknown.error or "")
    assert unknown.result[0][0]["status"] == "failure"
    assert unknown.result[0][0]["call_id"] == "u1"

    raising = await constellation.run_task([call("explode", "x1"), call("add", "never")],
                                           timeout=10)
    assert raising.status == "failed"
    assert "RuntimeError: kaboom" in (raising.error or "")
    assert len(raising.result) == 1  # the session stops at the first failing step

    bad_params = await constellation.run_task([call("add", "p1", a=1)], timeout=10)
    assert bad_params.status == "failed" and "Bad parameters" in (bad_params.error or "")

    keep_going = await constellation.run_task(
        {"steps": [[call("refuse", "r1")], [call("explode", "r2")], [call("add", "r3", a=1,
                                                                         b=1)]],
         "continue_on_failure": True}, timeout=10)
    assert keep_going.status == "completed"
    statuses = [(step[0]["call_id"], step[0]["status"]) for step in keep_going.result]
    assert statuses == [("r1", "failure"), ("r2", "failure"), ("r3", "success")]
    assert keep_going.result[0][0]["error"] == "not today"
    assert keep_going.result[0][0]["result"] == {"why": "policy"}

    # The device survived all of it.
    assert device.connected and device.registrations == 1
    assert (await constellation.run_task([call("add", "ok", a=1, b=2)], timeout=10)).ok


async def test_long_tools_do_not_block_heartbeats(stack: Stack) -> None:
    async with fast_device(stack.ws_url, "hb-dev", heartbeat_interval=0.05) as device, \
            ConstellationClient(stack.ws_url, "hb-c", target_id="hb-dev") as constellation:
        before = device.heartbeat_acks
        started = time.monotonic()
        result = await constellation.run_task(
            [call("sync_nap", "s1", seconds=0.6), call("nap", "s2", seconds=0.6)], timeout=10)
        elapsed = time.monotonic() - started
        assert result.ok, result
        assert [step[0]["result"] for step in result.result] == ["slept 0.6", "slept 0.6"]
        # ~24 heartbeat periods passed while the tools ran; most were acknowledged.
        assert device.heartbeat_acks - before >= int(elapsed / 0.05) // 3


async def test_a_command_timeout_fails_the_task_and_the_device_carries_on(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(session={"command_timeout": 0.3})
    async with fast_device(stack.ws_url, "slow-dev") as device, \
            ConstellationClient(stack.ws_url, "slow-c", target_id="slow-dev") as constellation:
        result = await constellation.run_task([call("nap", "n1", seconds=1.0)], timeout=10)
        assert result.status == "failed"
        assert "no result from the device within 0.3s" in (result.error or "")
        assert result.result[0][0]["call_id"] == "n1"
        # The task's end stops the nap on the device (no late answer); it keeps serving.
        await wait_for(lambda: device.work.sessions_cancelled == 1, 5)
        assert device.commands_done == 0
        assert (await constellation.run_task([call("add", "a", a=1, b=1)], timeout=10)).ok
        assert device.registrations == 1


async def test_client_side_task_timeout(
    device: DeviceClient, constellation: ConstellationClient
) -> None:
    handle = await constellation.dispatch([call("nap", "t1", seconds=1.0)])
    with pytest.raises(TimeoutError):
        await handle.wait(0.2)
    result = await handle.wait(10)  # the handle still resolves when the task ends
    assert result.ok
    with pytest.raises(TimeoutError):
        await constellation.run_task([call("nap", "t2", seconds=1.0)], timeout=0.2)


async def _restart_gateway(stack: Stack) -> None:
    """Stop the stack's gateway and start a new one on the same port."""
    old = stack.gw
    assert old is not None
    port = old.port
    await old.stop()
    new = GatewayProcess([stack.replica.address])
    new.sock.close()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    new.sock, new.port = sock, port
    await new.start()
    await new.wait_linked()
    stack.gw = new


async def test_device_reconnects_and_re_registers_after_the_gateway_restarts(
    stack: Stack,
) -> None:
    async with fast_device(stack.ws_url, "re-dev") as device:
        url = stack.ws_url
        assert device.registrations == 1
        await _restart_gateway(stack)
        assert stack.ws_url == url
        await wait_for(lambda: device.registrations >= 2 and device.connected, 15)
        await wait_for(lambda: stack.gateway.registry.is_device_connected("re-dev"), 5)
        async with ConstellationClient(url, "re-c", target_id="re-dev") as constellation:
            result = await constellation.run_task([call("add", "after", a=20, b=22)],
                                                  timeout=10)
        assert result.ok and result.result[0][0]["result"] == 42


async def test_device_keeps_retrying_while_the_server_is_down(stack: Stack) -> None:
    async with fast_device(stack.ws_url, "down-dev") as device:
        assert stack.gw is not None
        port = stack.gw.port
        await stack.gw.stop()
        await wait_for(lambda: not device.connected, 5)
        await asyncio.sleep(0.8)  # several failed attempts with backoff
        assert device.last_error is not None
        new = GatewayProcess([stack.replica.address])
        new.sock.close()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        new.sock, new.port = sock, port
        await new.start()
        stack.gw = new
        await wait_for(lambda: device.connected and device.registrations == 2, 10)


@pytest.mark.parametrize("limit", [0, 1])
async def test_several_concurrent_tasks_from_one_constellation(
    make_stack: StackFactory, limit: int,
) -> None:
    """Six tasks at once on one device: each gets its own result; with no limit they
    run on the device together, with the default one-driver rule one after the other."""
    stack = await make_stack(session={"max_running_per_device": limit})
    async with fast_device(stack.ws_url, "sdk-dev") as device, \
            ConstellationClient(stack.ws_url, "sdk-c", target_id=device.client_id) as client:
        NAPPING_MOST[0] = 0
        results = await asyncio.gather(*(
            client.run_task([call("nap", f"c{n}", seconds=0.3),
                             call("add", f"a{n}", a=n, b=n)],
                            task_name=f"conc-{n}", timeout=20)
            for n in range(6)
        ))
    assert NAPPING_MOST[0] > 1 if limit == 0 else NAPPING_MOST[0] == 1
    for n, result in enumerate(results):
        assert result.ok, result
        assert result.result[1][0] == {"status": "success", "error": None, "result": 2 * n,
                                       "namespace": None, "call_id": f"a{n}"}
    assert len({result.session_id for result in results}) == 6


async def test_device_info_request_and_push(stack: Stack) -> None:
    facts = {"version": 1}

    def metadata() -> dict[str, Any]:
        return {"platform": "linux", "system_info": {"os": "Linux", **facts}}

    async with DeviceClient(stack.ws_url, "info-dev", tools(), metadata=metadata) as device, \
            ConstellationClient(stack.ws_url, "info-c", target_id="info-dev") as client:
        assert await client.device_info() == {"os": "Linux", "version": 1}
        facts["version"] = 2
        assert await device.push_device_info()
        await wait_for(lambda: stack.gateway.registry.device("info-dev") is not None
                       and stack.gateway.registry.device("info-dev").device_info.get(  # type: ignore[union-attr]
                           "version") == 2, 5)
        assert await client.device_info() == {"os": "Linux", "version": 2}
        with pytest.raises(DeviceInfoError):
            await client.device_info("someone-else")


async def test_default_metadata_names_the_platform_and_system(
    device: DeviceClient, constellation: ConstellationClient
) -> None:
    info = await constellation.device_info()
    assert info["platform"] == "linux"
    assert info["hostname"] == socket.gethostname()
    assert info["cpu_count"] >= 1


async def test_refusals(stack: Stack, device: DeviceClient) -> None:
    with pytest.raises(RegistrationRefused, match="not connected"):
        await ConstellationClient(stack.ws_url, "r-c", target_id="ghost").connect()
    async with ConstellationClient(stack.ws_url, "r-c2", target_id=device.client_id) as client:
        with pytest.raises(TaskRefused, match="ghost"):
            await client.run_task([call("add", "x", a=1, b=1)], target_id="ghost", timeout=5)
        # The connection stays usable after a refusal.
        assert (await client.run_task([call("add", "y", a=1, b=1)], timeout=10)).ok


async def test_a_newer_connection_with_the_token_takes_over(
    make_stack: StackFactory,
) -> None:
    # Without a token for the id, a live holder keeps it (tests/integration/test_takeover.py).
    stack = await make_stack(gateway={"tokens": f"twin device {hash_token('twin-secret')};"
                                                f"twin-c constellation {hash_token('c')}"})
    first = fast_device(stack.ws_url, "twin", stop_on_takeover=True, token="twin-secret")
    await first.start(timeout=10)
    assert first._runner is not None
    async with fast_device(stack.ws_url, "twin", token="twin-secret") as second:
        async with asyncio.timeout(5):
            await first._runner  # the first one stopped on takeover
        assert not first.connected and second.connected
        async with ConstellationClient(stack.ws_url, "twin-c", target_id="twin",
                                       token="c") as client:
            assert (await client.run_task([call("echo", "e")], timeout=10)).ok
        assert second.commands_done == 1 and first.commands_done == 0
    await first.stop()


async def test_pending_tasks_fail_when_the_connection_drops(
    stack: Stack, device: DeviceClient
) -> None:
    client = ConstellationClient(stack.ws_url, "drop-c", target_id=device.client_id)
    await client.connect()
    handle = await client.dispatch([call("nap", "d", seconds=2.0)])
    assert client._ws is not None
    await client._ws.close()
    with pytest.raises(ConnectionError):
        await handle.wait(5)
    await client.close()


async def test_a_dropped_connection_stops_the_work_of_its_sessions(stack: Stack) -> None:
    """The server cancels a device's sessions when its connection goes; the device stops
    their running tool calls too, instead of sending their results after reconnecting."""
    proxy = await TcpProxy("127.0.0.1", stack.gw.port).start()
    events: list[str] = []
    registry = tools()

    @registry.tool()
    async def long_nap() -> str:
        events.append("start")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        return "woke"

    device = DeviceClient(f"ws://{proxy.address}/ws", "drop-dev", registry,
                          backoff_min=0.05, backoff_max=0.3)
    await device.start(timeout=10)
    try:
        async with ConstellationClient(stack.ws_url, "drop-c", target_id="drop-dev") as c:
            running = asyncio.get_running_loop().create_task(c.run_task(
                {"steps": [[call("long_nap", "n1")]]}, task_name="drop", timeout=20))
            await wait_for(lambda: events == ["start"], 10)
            proxy.cut()
            async with asyncio.timeout(15):
                result = await running
            assert result.status == "failed"
            await wait_for(lambda: events == ["start", "cancelled"], 5)
            proxy.restore()
            await wait_for(lambda: device.connected, 10)
            assert device.commands_done == 0
    finally:
        await device.stop()
        await proxy.stop()
