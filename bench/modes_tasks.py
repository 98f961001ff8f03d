"""The ``tasks`` load-generator mode: constellations looping tasks end to end.

Each constellation targets its own device (a :class:`bench.modes_sessions.Device`), so
every task's ``task_end`` can be checked at both ends.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import grpc
import orjson

from bench.common import emit, latency_summary
from bench.frames import plan_request
from bench.harness import Window, bounded, close_all, now, register
from bench.modes_sessions import Device, SessionBench, wait_devices


async def tasks(cfg: dict[str, Any]) -> dict[str, Any]:
    from aip_grpc import session_api_pb2_grpc
    from aip_link.channel import CHANNEL_OPTIONS

    bench = SessionBench({"steps": 1, "kind": "tasks"})
    count, steps, url = int(cfg["devices"]), int(cfg["steps"]), cfg["url"]
    request = plan_request(steps)
    dev_ids = [f"bench-dev-{i}" for i in range(count)]
    dev_sockets = await bounded(count, 100, lambda i: register(url, dev_ids[i]))
    devices = [Device(ws, dev_ids[i], bench) for i, ws in enumerate(dev_sockets)]
    readers = [asyncio.create_task(device.run()) for device in devices]
    async with grpc.aio.insecure_channel(cfg["session_addresses"][0],
                                         options=CHANNEL_OPTIONS) as channel:
        await wait_devices([session_api_pb2_grpc.SessionApiStub(channel)], count)
    con_sockets = await bounded(
        count, 100, lambda i: register(url, f"bench-con-{i}", "constellation", dev_ids[i]))
    state = {"completed": 0, "failed": 0, "lost": 0, "submitted": 0}
    samples: list[float] = []
    errors: list[str] = []
    window = Window(float(cfg["warmup"]), float(cfg["window"]))
    stop = False

    async def constellation(index: int) -> None:
        ws, client_id = con_sockets[index], f"bench-con-{index}"
        for serial in itertools.count():
            if stop:
                return
            session_id = f"{client_id}@t-{serial}"
            started = now()
            await ws.send(orjson.dumps({
                "type": "task", "status": "continue", "client_type": "constellation",
                "client_id": client_id, "target_id": dev_ids[index],
                "session_id": session_id, "task_name": f"galaxy/bench/t-{serial}",
                "request": request, "timestamp": "2026-01-01T00:00:00+00:00",
            }))
            state["submitted"] += 1
            acked = False
            while True:
                try:
                    async with asyncio.timeout(30):
                        frame = orjson.loads(await ws.recv())
                except TimeoutError:
                    state["lost"] += 1
                    errors.append(f"{session_id}: no task_end within 30s (acked={acked})")
                    return
                kind = frame.get("type")
                if kind == "heartbeat" and frame.get("session_id") == session_id:
                    acked = True
                elif kind == "task_end" and frame.get("session_id") == session_id:
                    break
                elif kind == "error":
                    errors.append(f"{session_id}: {frame.get('error')}"[:200])
            if frame.get("status") == "completed" and acked:
                state["completed"] += 1
                if window.open:
                    samples.append(now() - started)
            else:
                state["failed"] += 1
                errors.append(f"{session_id}: {frame.get('status')} {frame.get('error')} "
                              f"acked={acked}"[:200])

    emit("ready")
    loops = [asyncio.create_task(constellation(i)) for i in range(count)]
    counted = await window.run(lambda: dict(state))
    stop = True
    async with asyncio.timeout(60):
        await asyncio.gather(*loops)
    # Constellation tasks end at the device too: wait for those task_end frames.
    done = state["completed"] + state["failed"]
    deadline = now() + 10
    while len(bench.ended) < done and now() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    await close_all(con_sockets + dev_sockets)
    for reader_task in readers:
        reader_task.cancel()
    errors.extend(bench.errors)
    return {
        "devices": count, "steps": steps,
        "rate": counted["completed"] / window.elapsed,
        "tasks": counted["completed"], "window_s": window.elapsed,
        "latency": latency_summary(samples),
        "submitted": state["submitted"], "completed": state["completed"],
        "tasks_failed": state["failed"],
        "lost_task_end": state["lost"] + max(0, done - len(bench.ended)),
        "device_task_ends": len(bench.ended), "duplicate_task_end": bench.duplicate_ends,
        "commands": bench.commands,
        "errors": len(errors),
        "error_samples": errors[:5], "client_cpu": window.client_cpu(),
    }
