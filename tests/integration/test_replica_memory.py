"""A replica's memory under sustained sessions: flat once the ended-session budget is
full, with the sessions it let go still readable from the store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aip_grpc import session_api_pb2
from tests.processes import GatewayService, Replica, wait_known
from tests.stack import (
    Client,
    cmd,
    plan,
    register_constellation,
    register_device,
    results_for,
    task_frame,
)

pb = session_api_pb2
WARM_UP = 600
SESSIONS = 3000
IN_FLIGHT = 8
RESULT = "r" * 8000  # each session's one result: some KB, as screenshots' text would be
#: Growth allowed after warm-up. Keeping every ended session (as --max-records 10000
#: did) costs about 20 KiB each here: 2,400 more sessions would be some 50 MiB.
FLAT_MIB = 15


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def answer_forever(device: Client) -> None:
    while True:
        frame = json.loads(await device.ws.recv())
        if frame.get("type") == "command":
            await device.send(results_for(frame, "dm", result=RESULT))


async def run_sessions(requester: Client, first: int, count: int) -> None:
    """``count`` sessions, ``IN_FLIGHT`` at a time, each until its task_end."""
    started = first
    sent = 0

    async def send_next() -> None:
        nonlocal started, sent
        await requester.send(task_frame("cm", plan([cmd("shot")]), client_type="constellation",
                                        target_id="dm", session_id=f"cm@m-{started}",
                                        task_name=f"m-{started}"))
        started += 1
        sent += 1

    for _ in range(min(IN_FLIGHT, count)):
        await send_next()
    ended = 0
    while ended < count:
        async with asyncio.timeout(10):
            frame: dict[str, Any] = json.loads(await requester.ws.recv())
        if frame.get("type") == "task_end":
            assert frame["status"] == "completed", frame
            ended += 1
            if sent < count:
                await send_next()


async def test_memory_stays_flat_under_sustained_sessions(tmp_path: Path) -> None:
    replica = Replica(store_path=str(tmp_path / "records.sqlite3"), extra=(
        "--ended-memory-bytes", str(2 * 1024 * 1024), "--max-records", "1000000",
        "--max-running-per-device", "0"))
    gateway = GatewayService("g-mem", [replica])
    gateway.args += ["--task-rate", "100000", "--task-burst", "100000"]
    replica.start()
    gateway.start()
    answering: asyncio.Task[None] | None = None
    clients: list[Client] = []
    try:
        await gateway.wait_replicas(1)
        device = await register_device(gateway.ws_url, "dm")
        await wait_known([replica], "dm")
        requester = await register_constellation(gateway.ws_url, "cm", "dm")
        clients += [device, requester]
        answering = asyncio.get_running_loop().create_task(answer_forever(device))

        await run_sessions(requester, 0, WARM_UP)
        warm = rss_mib(replica.pid)
        samples = []
        for first in range(WARM_UP, SESSIONS, 600):
            await run_sessions(requester, first, 600)
            samples.append(rss_mib(replica.pid))
        assert max(samples) - warm < FLAT_MIB, (warm, samples)

        # The first sessions left memory long ago; the store answers for them.
        info = await replica.call("GetSession", pb.GetSessionRequest(session_id="cm@m-0"))
        assert info.stored and info.state == pb.SESSION_STATE_COMPLETED
        assert json.loads(info.commands[0].results_json)[0]["result"] == RESULT
        latest = await replica.call("GetSession", pb.GetSessionRequest(
            session_id=f"cm@m-{SESSIONS - 1}"))
        assert not latest.stored  # the newest are still in memory
    finally:
        if answering is not None:
            answering.cancel()
        for client in clients:
            await client.close()
        gateway.stop()
        replica.stop()
