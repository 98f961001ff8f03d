"""The ``sessions`` load-generator mode: AIP devices serving sessions started over gRPC.

:class:`Device` and :class:`SessionBench` are also the device side of the ``tasks`` mode
(:mod:`bench.modes_tasks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import Awaitable
from typing import Any

import grpc
import orjson

from bench.common import emit, latency_summary
from bench.frames import (
    REFERENCE_TOOLS,
    plan_request,
    reference_request,
    results_frame,
    screenshot,
)
from bench.harness import (
    Window,
    best_run,
    bounded,
    close_all,
    now,
    register,
    stdin_reader,
)
from bench.wsclient import WsClient as ClientConnection


class Device:
    """One AIP device that answers every command at once (unless ``silent``)."""

    def __init__(self, ws: ClientConnection, client_id: str, bench: SessionBench) -> None:
        self.ws = ws
        self.client_id = client_id
        self.bench = bench
        self.session: str | None = None
        self.serial = 0

    async def run(self) -> None:
        bench = self.bench
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                frame = orjson.loads(raw)
                kind = frame.get("type")
                if kind == "command":
                    if not bench.silent:
                        await self.ws.send(results_frame(frame, self.client_id,
                                                         bench.result, bench.listed))
                    bench.commands += 1
                    if bench.record:
                        bench.stamps.append(now())
                elif kind == "task_end":
                    bench.task_end(self, frame)
                elif kind == "error":
                    bench.errors.append(f"{self.client_id}: {frame.get('error')}"[:200])


class SessionBench:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.silent = cfg.get("kind") == "memory"
        self.record = cfg.get("kind") == "latency"
        self.commands = 0
        self.stamps: list[float] = []
        self.errors: list[str] = []
        self.started: set[str] = set()
        self.ended: dict[str, str] = {}
        self.cancelled: set[str] = set()
        self.duplicate_ends = 0
        self.restart = False
        self.tasks: set[asyncio.Task[Any]] = set()
        self.all_ended = asyncio.Event()
        self.stubs: list[Any] = []
        # Session ids must not repeat across the load generators of one stack: asking
        # again for an id one already holds returns that (ended) session, not a new one.
        self.run_id = os.urandom(3).hex()
        #: With ``reference``, sessions shaped as the reference agent's (list_tools, then
        #: ``steps`` commands), and the device lists its tools.
        self.reference = bool(cfg.get("reference"))
        self.request = (reference_request(int(cfg["steps"])) if self.reference
                        else plan_request(int(cfg["steps"]), cfg.get("step_timeout")))
        self.listed = REFERENCE_TOOLS if self.reference else None
        self.completed = 0
        #: Every action's result: "ok", or a screenshot of ``result_bytes`` characters.
        self.result = screenshot(int(cfg["result_bytes"])) if cfg.get("result_bytes") else "ok"

    def task_end(self, device: Device, frame: dict[str, Any]) -> None:
        session_id = str(frame.get("session_id"))
        if session_id in self.ended:
            self.duplicate_ends += 1
            return
        self.ended[session_id] = str(frame.get("status"))
        if frame.get("status") == "completed":
            self.completed += 1
        if frame.get("status") != "completed" and session_id not in self.cancelled:
            self.errors.append(f"{session_id}: task_end {frame.get('status')}: "
                               f"{frame.get('error')}"[:200])
        if device.session == session_id:
            device.session = None
            if self.restart:
                self.spawn(self.start(device))
        if len(self.ended) >= len(self.started) and not self.restart:
            self.all_ended.set()

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def stub_for(self, device: Device) -> Any:
        index = int(device.client_id.rsplit("-", 1)[1])
        return self.stubs[index % len(self.stubs)]

    async def start(self, device: Device) -> None:
        from aip_grpc import session_api_pb2

        device.serial += 1
        session_id = f"{device.client_id}-{self.run_id}-s{device.serial}"
        device.session = session_id
        self.started.add(session_id)
        self.all_ended.clear()
        try:
            await self.stub_for(device).StartSession(session_api_pb2.StartSessionRequest(
                device_id=device.client_id, request=self.request, task_name="bench",
                session_id=session_id, requester_id="bench"), timeout=30)
        except grpc.aio.AioRpcError as exc:
            self.started.discard(session_id)
            device.session = None
            self.errors.append(f"StartSession {session_id}: {exc.code()} {exc.details()}")

    async def cancel_running(self, devices: list[Device]) -> None:
        from aip_grpc import session_api_pb2

        async def cancel(device: Device) -> None:
            session_id = device.session
            if session_id is None or session_id in self.ended:
                return
            self.cancelled.add(session_id)
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self.stub_for(device).CancelSession(
                    session_api_pb2.CancelSessionRequest(session_id=session_id,
                                                         reason="requested"), timeout=30)

        await asyncio.gather(*(cancel(device) for device in devices))


async def wait_devices(stubs: list[Any], count: int, timeout: float = 60) -> None:
    """Wait until every replica lists ``count`` devices (presence has reached them)."""
    from aip_grpc import session_api_pb2

    deadline = now() + timeout
    for stub in stubs:
        while True:
            listed = await stub.ListDevices(session_api_pb2.ListDevicesRequest(), timeout=30)
            if len(listed.devices) >= count:
                break
            if now() > deadline:
                raise TimeoutError(f"replica lists {len(listed.devices)}/{count} devices")
            await asyncio.sleep(0.05)


async def sessions(cfg: dict[str, Any]) -> dict[str, Any]:
    from aip_grpc import session_api_pb2, session_api_pb2_grpc
    from aip_link.channel import CHANNEL_OPTIONS

    bench = SessionBench(cfg)
    kind = cfg["kind"]
    count = int(cfg["devices"])
    url = cfg["url"]
    ids = [f"bench-dev-{i}" for i in range(count)]
    sockets = await bounded(count, 100, lambda i: register(url, ids[i]))
    devices = [Device(ws, ids[i], bench) for i, ws in enumerate(sockets)]
    readers = [asyncio.create_task(device.run()) for device in devices]
    channels = [grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
                for address in cfg["session_addresses"]]
    bench.stubs = [session_api_pb2_grpc.SessionApiStub(channel) for channel in channels]
    await wait_devices(bench.stubs, count)
    result: dict[str, Any] = {"kind": kind, "devices": count, "steps": int(cfg["steps"])}
    try:
        if kind == "latency":
            emit("ready")
            runs = []
            for _ in range(int(cfg.get("repeat", 3))):
                bench.stamps.clear()
                await bench.start(devices[0])
                session_id = devices[0].session
                async with asyncio.timeout(float(cfg.get("timeout", 120))):
                    await bench.all_ended.wait()
                skip = int(cfg.get("skip", 100))
                run = latency_summary([b - a for a, b in itertools.pairwise(bench.stamps[skip:])])
                info = await bench.stubs[0].GetSession(
                    session_api_pb2.GetSessionRequest(session_id=session_id))
                took_ns = info.ended_time.ToNanoseconds() - info.created_time.ToNanoseconds()
                run["mean_us_from_session_duration"] = (
                    took_ns / max(info.steps_done, 1) / 1e3)
                runs.append(run)
                await asyncio.sleep(0.2)
            result["latency"] = best_run(runs)
            result["mean_us_from_session_duration"] = result["latency"][
                "mean_us_from_session_duration"]
        elif kind == "throughput":
            emit("ready")
            bench.restart = True
            await asyncio.gather(*(bench.start(device) for device in devices))
            window = Window(float(cfg["warmup"]), float(cfg["window"]))
            counted = await window.run(lambda: {"commands": bench.commands,
                                                "sessions": bench.completed})
            bench.restart = False
            async with asyncio.timeout(30):
                await asyncio.gather(*bench.tasks, return_exceptions=True)
            await bench.cancel_running(devices)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    await bench.all_ended.wait()
            per = "sessions" if bench.reference else "commands"
            result.update(rate=counted[per] / window.elapsed, counted=per,
                          commands=counted["commands"], window_s=window.elapsed,
                          sessions_in_window=counted["sessions"],
                          client_cpu=window.client_cpu(),
                          sessions_completed=sum(
                              1 for s in bench.ended.values() if s == "completed"))
        elif kind == "memory":
            reader = await stdin_reader()
            emit("stage", stage="devices_ready")
            async with asyncio.timeout(600):
                await reader.readline()
            wanted = int(cfg["sessions"])
            per_device = [devices[i % count] for i in range(wanted)]

            async def start_one(index: int) -> None:
                device = per_device[index]
                device.serial = index  # unique ids; several sessions per silent device
                await bench.start(device)

            await bounded(wanted, 50, start_one)
            # Wait until every session's command has reached its device.
            deadline = now() + 60
            while bench.commands < len(bench.started) and now() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            emit("stage", stage="sessions_started", sessions=len(bench.started),
                 commands_seen=bench.commands)
            async with asyncio.timeout(600):
                await reader.readline()
            result["sessions"] = len(bench.started)
            bench.started.clear()  # ended by the disconnects below, not awaited
    finally:
        await close_all(sockets)
        for reader_task in readers:
            reader_task.cancel()
        for channel in channels:
            await channel.close()
    if kind != "memory":
        lost = sorted(bench.started - set(bench.ended))
        result.update(sessions_started=len(bench.started), task_ends=len(bench.ended),
                      lost_task_end=len(lost), lost_samples=lost[:5],
                      duplicate_task_end=bench.duplicate_ends)
    result.update(errors=len(bench.errors), error_samples=bench.errors[:5])
    return result
