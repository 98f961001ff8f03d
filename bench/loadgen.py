"""Load-generating client processes.

Run as ``python -m bench.loadgen '<json config>'``; the orchestrator (:mod:`bench.run`)
starts each one as its own process so that client work never shares the event loop (or
the core) of the server it measures. A load generator talks to the orchestrator in JSON
lines on stdout (``{"event": ...}``): ``ready``, ``window_start``/``window_end`` around the
measured window (the orchestrator samples the servers' CPU time there), ``stage`` when it
waits for the orchestrator (which answers with a line on stdin), and finally ``result``.
Every mode is bounded in time and ends by itself.

Modes (``config["mode"]``):

``ws_latency``
    One client, strictly sequential round trips; the figure is the time between
    consecutive replies (the same clock the device uses for commands, below).
``ws_throughput``
    ``clients`` sockets, each in a closed loop (send, wait for the answer, repeat); counts
    the answers inside a fixed window after a warm-up. With ``register`` the sockets first
    register as AIP devices and send heartbeats (figure 2); otherwise they send an
    AIP-sized frame to an echo server (the baseline).
``ws_connect``
    Opens ``clients`` sockets with ``concurrency`` in flight: connect, send ``register``,
    wait for the confirmation (or the echo). Reports the rate and per-connection latency.
    With ``stages`` it pauses after each stage (connected count) for the orchestrator to
    read memory, then holds the idle sockets open until told to stop.
``grpc_echo``
    A bare grpc.aio bidirectional stream to an echo server: sequential latency, then
    throughput with ``inflight`` messages outstanding on one stream.
``sessions``
    ``devices`` AIP devices that answer every ``command`` at once with ``command_results``
    for each action's call_id; sessions are started through the public gRPC API
    (``StartSession``) on the replicas round-robin by device. ``latency``: one device,
    one session of ``steps`` steps, per-step round trip = time between consecutive
    commands at the device. ``throughput``: one long session per device, restarted when it
    ends, command round trips counted in a fixed window; afterwards the running sessions are
    cancelled and every session must have delivered exactly one ``task_end``. ``memory``:
    silent devices (never answer) and ``sessions`` waiting sessions, for the service's RSS.
``tasks``
    ``devices`` devices and as many constellations (each targeting one device) that loop:
    ``task`` with a ``steps``-step plan, wait for the ``task_end``, repeat. Counts tasks
    completed in the window; checks that every task's ``task_end`` reaches both the
    constellation and the device.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import orjson

from aip_runtime.gc_tuning import tune_gc
from bench.common import (
    ECHO_METHOD,
    PLAN_COMMAND,
    emit,
    latency_summary,
    raise_nofile_limit,
    self_cpu_seconds,
)
from bench.wsclient import WsClient as ClientConnection
from bench.wsclient import connect

now = time.perf_counter

# ---------------------------------------------------------------- frames


def register_frame(client_id: str, client_type: str = "device",
                   target_id: str | None = None) -> bytes:
    """A register frame as the reference clients send it: every field, most null."""
    return orjson.dumps({
        "type": "register", "status": "ok", "client_type": client_type,
        "client_id": client_id, "session_id": None, "task_name": None,
        "target_id": target_id, "request": None, "action_results": None,
        "timestamp": "2026-01-01T00:00:00+00:00", "request_id": None,
        "prev_response_id": None, "error": None,
        "metadata": {"platform": "linux",
                     "system_info": {"os": "Linux", "cpu_count": 2, "memory_gb": 8}},
    })


def heartbeat_frame(client_id: str) -> bytes:
    return orjson.dumps({
        "type": "heartbeat", "status": "ok", "client_type": "device",
        "client_id": client_id, "session_id": None, "task_name": None,
        "target_id": None, "request": None, "action_results": None,
        "timestamp": "2026-01-01T00:00:00+00:00", "request_id": None,
        "prev_response_id": None, "error": None, "metadata": None,
    })


def results_frame(command: dict[str, Any], client_id: str) -> bytes:
    """The ``command_results`` a device answers ``command`` with (all successes)."""
    return orjson.dumps({
        "type": "command_results",
        "status": command.get("status") or "continue",
        "client_type": "device",
        "client_id": client_id,
        "session_id": command.get("session_id"),
        "task_name": command.get("task_name"),
        "prev_response_id": command.get("response_id"),
        "timestamp": "2026-01-01T00:00:00+00:00",
        "action_results": [
            {"status": "success", "error": None, "result": "ok", "namespace": None,
             "call_id": action.get("call_id")}
            for action in command.get("actions") or ()
        ],
    })


#: What the echo baselines send: a device's answer to a one-action command, as big as
#: the frames of figure 1.
ECHO_PAYLOAD = results_frame({
    "status": "continue", "session_id": str(uuid.uuid4()), "task_name": "bench-task",
    "response_id": str(uuid.uuid4()), "actions": [{"call_id": uuid.uuid4().hex[:12]}],
}, "bench-dev-0")


def plan_request(steps: int, timeout: float | None = None) -> str:
    plan: dict[str, Any] = {"steps": [[PLAN_COMMAND]] * steps}
    if timeout is not None:
        plan["timeout"] = timeout
    return orjson.dumps(plan).decode()


async def open_socket(url: str) -> ClientConnection:
    return await asyncio.wait_for(connect(url), 60)


async def register(url: str, client_id: str, client_type: str = "device",
                   target_id: str | None = None) -> ClientConnection:
    ws = await open_socket(url)
    await ws.send(register_frame(client_id, client_type, target_id))
    answer = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
    if answer.get("type") != "heartbeat" or answer.get("status") != "ok":
        await ws.close()
        raise RuntimeError(f"registration of {client_id} refused: {answer}")
    return ws


async def bounded(count: int, concurrency: int,
                  make: Callable[[int], Awaitable[Any]]) -> list[Any]:
    """``make(i)`` for i in range(count), at most ``concurrency`` at a time, in order."""
    results: list[Any] = [None] * count
    indexes = iter(range(count))

    async def worker() -> None:
        for index in indexes:
            results[index] = await make(index)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
    return results


async def close_all(sockets: list[ClientConnection]) -> None:
    async def close(ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 3)

    await bounded(len(sockets), 500, lambda i: close(sockets[i]))


class Window:
    """The warm-up and measured window, announced to the orchestrator."""

    def __init__(self, warmup: float, window: float) -> None:
        self.warmup = warmup
        self.window = window
        self.open = False
        self.started = 0.0
        self.cpu = 0.0
        self.elapsed = 0.0

    async def run(self, counters: Callable[[], dict[str, int]]) -> dict[str, int]:
        """Warm up, then count; returns the counters' increase inside the window."""
        await asyncio.sleep(self.warmup)
        before = counters()
        self.started = now()
        self.cpu = self_cpu_seconds()
        self.open = True
        emit("window_start")
        await asyncio.sleep(self.window)
        after = counters()
        self.elapsed = now() - self.started
        self.cpu = self_cpu_seconds() - self.cpu
        self.open = False
        emit("window_end")
        return {key: after[key] - before[key] for key in after}

    def client_cpu(self) -> float:
        return self.cpu / self.elapsed if self.elapsed else 0.0


async def stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


# ---------------------------------------------------------------- WebSocket modes


def best_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the lowest p50: on two cores the scheduler sometimes places client
    and server so that every wake-up crosses cores, which shifts a whole run; taking the
    best of a few short runs (for baselines and figures alike) removes that noise."""
    best = min(runs, key=lambda run: run.get("p50_us", float("inf")))
    return {**best, "runs_p50_us": [run.get("p50_us") for run in runs]}


async def ws_latency(cfg: dict[str, Any]) -> dict[str, Any]:
    count, skip = int(cfg["count"]), int(cfg.get("skip", 100))
    ws = await open_socket(cfg["url"])
    emit("ready")
    errors = 0
    runs = []
    for _ in range(int(cfg.get("repeat", 3))):
        stamps: list[float] = []
        for _ in range(count + skip + 1):
            await ws.send(ECHO_PAYLOAD)
            reply = orjson.loads(await ws.recv())
            stamps.append(now())
            if reply.get("type") != "command_results":
                errors += 1
        runs.append(latency_summary([b - a for a, b in itertools.pairwise(stamps[skip:])]))
        await asyncio.sleep(0.2)
    await ws.close()
    return {"latency": best_run(runs), "errors": errors}


async def ws_throughput(cfg: dict[str, Any]) -> dict[str, Any]:
    url, clients, registered = cfg["url"], int(cfg["clients"]), bool(cfg.get("register"))
    ids = [f"bench-hb-{i}" for i in range(clients)]
    if registered:
        sockets = await bounded(clients, 100, lambda i: register(url, ids[i]))
    else:
        sockets = await bounded(clients, 100, lambda i: open_socket(url))
    window = Window(float(cfg["warmup"]), float(cfg["window"]))
    state = {"answers": 0, "errors": 0}
    samples: list[float] = []
    stop = False

    async def loop(index: int) -> None:
        ws = sockets[index]
        payload = heartbeat_frame(ids[index]) if registered else ECHO_PAYLOAD
        expected = "heartbeat" if registered else "command_results"
        while not stop:
            started = now()
            await ws.send(payload)
            reply = orjson.loads(await ws.recv())
            if reply.get("type") != expected or (registered and reply.get("status") != "ok"):
                state["errors"] += 1
                continue
            state["answers"] += 1
            if window.open:
                samples.append(now() - started)

    emit("ready", clients=clients)
    loops = [asyncio.create_task(loop(i)) for i in range(clients)]
    counted = await window.run(lambda: dict(state))
    stop = True
    await asyncio.wait_for(asyncio.gather(*loops), 30)
    await close_all(sockets)
    return {
        "clients": clients,
        "rate": counted["answers"] / window.elapsed,
        "answers": counted["answers"],
        "window_s": window.elapsed,
        "latency": latency_summary(samples),
        "errors": state["errors"],
        "client_cpu": window.client_cpu(),
    }


async def ws_connect(cfg: dict[str, Any]) -> dict[str, Any]:
    url, clients = cfg["url"], int(cfg["clients"])
    concurrency = int(cfg.get("concurrency", 100))
    echo = bool(cfg.get("echo"))
    stages = [int(n) for n in cfg.get("stages") or [clients]]
    latencies: list[float] = []
    errors: list[str] = []
    prefix = cfg.get("prefix", "bench-reg")

    async def one(index: int) -> ClientConnection | None:
        client_id = f"{prefix}-{index}"
        started = now()
        try:
            if echo:
                ws = await open_socket(url)
                await ws.send(register_frame(client_id))
                reply = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
                if reply.get("type") != "register":
                    raise RuntimeError(f"unexpected echo {reply}")
            else:
                ws = await register(url, client_id)
        except Exception as exc:
            errors.append(repr(exc)[:200])
            return None
        latencies.append(now() - started)
        return ws

    sockets: list[ClientConnection] = []
    reader = await stdin_reader() if len(cfg.get("stages") or ()) else None
    emit("ready")
    stage_results = []
    done = 0
    for target in stages:
        latencies.clear()
        started = now()
        opened = await bounded(target - done, concurrency, lambda i, base=done: one(base + i))
        elapsed = now() - started
        sockets.extend(ws for ws in opened if ws is not None)
        stage = {"connected": len(sockets), "new": target - done, "elapsed_s": elapsed,
                 "rate": (target - done) / elapsed, "latency": latency_summary(latencies),
                 "errors": len(errors)}
        stage_results.append(stage)
        done = target
        if reader is not None:
            emit("stage", **stage)
            await asyncio.wait_for(reader.readline(), 600)
    await close_all(sockets)
    return {"stages": stage_results, "errors": len(errors), "error_samples": errors[:5]}


# ---------------------------------------------------------------- gRPC echo


async def grpc_echo(cfg: dict[str, Any]) -> dict[str, Any]:
    from aip_link.channel import CHANNEL_OPTIONS

    payload = ECHO_PAYLOAD
    async with grpc.aio.insecure_channel(cfg["address"], options=CHANNEL_OPTIONS) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        method = channel.stream_stream(ECHO_METHOD)
        # Latency: one stream, one message at a time.
        call = method()
        stamps: list[float] = []
        count, skip = int(cfg["count"]), int(cfg.get("skip", 100))
        for _ in range(count + skip + 1):
            await call.write(payload)
            await call.read()
            stamps.append(now())
        await call.done_writing()
        latency = latency_summary([b - a for a, b in itertools.pairwise(stamps[skip:])])
        # Throughput: `inflight` messages outstanding on one stream.
        call = method()
        inflight = int(cfg.get("inflight", 100))
        state = {"answers": 0}
        stop = False
        window = Window(float(cfg["warmup"]), float(cfg["window"]))
        emit("ready")

        async def pump() -> None:
            for _ in range(inflight):
                await call.write(payload)
            outstanding = inflight
            while outstanding:
                await call.read()
                state["answers"] += 1
                outstanding -= 1
                if not stop:
                    await call.write(payload)
                    outstanding += 1

        pumping = asyncio.create_task(pump())
        counted = await window.run(lambda: dict(state))
        stop = True
        await asyncio.wait_for(pumping, 30)
        await call.done_writing()
    return {"latency": latency, "rate": counted["answers"] / window.elapsed,
            "inflight": inflight, "errors": 0, "client_cpu": window.client_cpu()}


# ---------------------------------------------------------------- sessions


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
                        await self.ws.send(results_frame(frame, self.client_id))
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
        self.request = plan_request(int(cfg["steps"]), cfg.get("step_timeout"))

    def task_end(self, device: Device, frame: dict[str, Any]) -> None:
        session_id = str(frame.get("session_id"))
        if session_id in self.ended:
            self.duplicate_ends += 1
            return
        self.ended[session_id] = str(frame.get("status"))
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
        session_id = f"{device.client_id}-s{device.serial}"
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
                await asyncio.wait_for(bench.all_ended.wait(), float(cfg.get("timeout", 120)))
                skip = int(cfg.get("skip", 100))
                run = latency_summary([b - a for a, b in itertools.pairwise(bench.stamps[skip:])])
                info = await bench.stubs[0].GetSession(
                    session_api_pb2.GetSessionRequest(session_id=session_id))
                run["mean_us_from_session_duration"] = (
                    (info.ended_at - info.created_at) / max(info.steps_done, 1) * 1e6)
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
            counted = await window.run(lambda: {"commands": bench.commands})
            bench.restart = False
            await asyncio.wait_for(asyncio.gather(*bench.tasks, return_exceptions=True), 30)
            await bench.cancel_running(devices)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(bench.all_ended.wait(), 30)
            result.update(rate=counted["commands"] / window.elapsed,
                          commands=counted["commands"], window_s=window.elapsed,
                          client_cpu=window.client_cpu(),
                          sessions_completed=sum(
                              1 for s in bench.ended.values() if s == "completed"))
        elif kind == "memory":
            reader = await stdin_reader()
            emit("stage", stage="devices_ready")
            await asyncio.wait_for(reader.readline(), 600)
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
            await asyncio.wait_for(reader.readline(), 600)
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


# ---------------------------------------------------------------- tasks end to end


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
                    frame = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
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
    await asyncio.wait_for(asyncio.gather(*loops), 60)
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


MODES: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
    "ws_latency": ws_latency,
    "ws_throughput": ws_throughput,
    "ws_connect": ws_connect,
    "grpc_echo": grpc_echo,
    "sessions": sessions,
    "tasks": tasks,
}


async def main_async(cfg: dict[str, Any]) -> None:
    deadline = float(cfg.get("deadline", 300))
    try:
        result = await asyncio.wait_for(MODES[cfg["mode"]](cfg), deadline)
    except Exception as exc:
        emit("result", failed=f"{type(exc).__name__}: {exc}"[:500])
        return
    emit("result", **result)


def main() -> None:
    raise_nofile_limit()
    cfg = orjson.loads(sys.argv[1])
    tune_gc()  # thousands of client sockets: the collector would skew the client's share
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_async(cfg))
    else:
        uvloop.run(main_async(cfg))


if __name__ == "__main__":
    main()
