"""Load-generator modes that drive one transport: WebSocket and bare gRPC streams.

``ws_latency``, ``ws_throughput`` and ``ws_connect`` serve both the echo baselines and the
gateway figures (heartbeats, registrations, idle memory); ``grpc_echo`` is the gRPC
baseline. What each measures is described in :mod:`bench.loadgen`.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import grpc
import orjson

from bench.common import ECHO_METHOD, emit, latency_summary
from bench.frames import ECHO_PAYLOAD, big_echo_payload, heartbeat_frame, register_frame
from bench.harness import (
    Window,
    best_run,
    bounded,
    close_all,
    now,
    open_socket,
    register,
    stdin_reader,
)
from bench.wsclient import WsClient as ClientConnection

# ---------------------------------------------------------------- WebSocket modes


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

    echo = big_echo_payload(int(cfg["payload_bytes"])) if cfg.get("payload_bytes") else (
        ECHO_PAYLOAD)

    async def loop(index: int) -> None:
        ws = sockets[index]
        payload = heartbeat_frame(ids[index]) if registered else echo
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
    async with asyncio.timeout(30):
        await asyncio.gather(*loops)
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
                async with asyncio.timeout(30):
                    reply = orjson.loads(await ws.recv())
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

        async def nth(i: int, base: int = done) -> ClientConnection | None:
            return await one(base + i)

        # A single stage is the measured window: the server's CPU is sampled around it.
        timed = reader is None
        if timed:
            emit("window_start")
        opened = await bounded(target - done, concurrency, nth)
        elapsed = now() - started
        if timed:
            emit("window_end")
        sockets.extend(ws for ws in opened if ws is not None)
        stage = {"connected": len(sockets), "new": target - done, "elapsed_s": elapsed,
                 "rate": (target - done) / elapsed, "latency": latency_summary(latencies),
                 "errors": len(errors)}
        stage_results.append(stage)
        done = target
        if reader is not None:
            emit("stage", **stage)
            async with asyncio.timeout(600):
                await reader.readline()
    await close_all(sockets)
    return {"stages": stage_results, "errors": len(errors), "error_samples": errors[:5]}


# ---------------------------------------------------------------- gRPC echo


async def grpc_echo(cfg: dict[str, Any]) -> dict[str, Any]:
    from aip_link.channel import CHANNEL_OPTIONS

    payload = ECHO_PAYLOAD
    async with grpc.aio.insecure_channel(cfg["address"], options=CHANNEL_OPTIONS) as channel:
        async with asyncio.timeout(30):
            await channel.channel_ready()
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
        async with asyncio.timeout(30):
            await pumping
        await call.done_writing()
    return {"latency": latency, "rate": counted["answers"] / window.elapsed,
            "inflight": inflight, "errors": 0, "client_cpu": window.client_cpu()}
