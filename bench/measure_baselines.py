"""The same-run baselines every figure is set against (servers in :mod:`bench.baselines`).

Measured on the same machine in the same run as the figures, so that a ratio to the
baseline stays meaningful whatever else the machine is doing; how each one is measured
is described in :mod:`bench.run`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.common import HOST, rss_kib
from bench.procs import Proc
from bench.report import Row
from bench.suite import Bench


async def baselines(bench: Bench, needed: set[str]) -> None:
    opts = bench.opts
    if needed & {"ws_latency", "ws_thr100", "ws_thr1000", "ws_connect", "ws_big"}:
        echo = await bench.launcher.baseline("ws")
        url = f"ws://{HOST}:{echo.port}/ws"
        sample = {"echo": echo.pid}
        if "ws_latency" in needed:
            r = await bench.load("baseline_ws_latency", {
                "mode": "ws_latency", "url": url, "count": opts.latency_steps})
            bench.base["ws_latency"] = r["latency"]
            bench.say(f"  WS echo, 1 client: p50 {r['latency']['p50_us']:.0f} us, "
                      f"p99 {r['latency']['p99_us']:.0f} us")
        for clients in (100, opts.heartbeat_devices):
            key = "ws_thr100" if clients == 100 else "ws_thr1000"
            if key not in needed:
                continue
            r = await bench.load(f"baseline_ws_throughput_{clients}", {
                "mode": "ws_throughput", "url": url, "clients": clients}, sample=sample)
            r["cpu_us"] = bench.cpu_per_op(f"baseline_ws_throughput_{clients}", r["rate"])
            bench.base[key] = r
            bench.say(f"  WS echo, {clients} clients: {r['rate']:,.0f} msg/s")
        if "ws_connect" in needed:
            r = await bench.load("baseline_ws_connect", {
                "mode": "ws_connect", "url": url, "clients": opts.registrations,
                "concurrency": 100, "echo": True}, sample=sample)
            rate = r["stages"][0]["rate"]
            bench.base["ws_connect"] = {**r["stages"][0], "cpu_us": bench.cpu_per_op(
                "baseline_ws_connect", rate)}
            bench.say(f"  WS echo, connect + 1 round trip: "
                      f"{r['stages'][0]['rate']:,.0f}/s")
        if "ws_big" in needed:
            r = await bench.load("baseline_ws_big", {
                "mode": "ws_throughput", "url": url, "clients": opts.big_devices,
                "payload_bytes": opts.big_result_bytes}, sample=sample)
            r["cpu_us"] = bench.cpu_per_op("baseline_ws_big", r["rate"])
            bench.base["ws_big"] = r
            bench.say(f"  WS echo of {opts.big_result_bytes / 1e6:g} MB frames, "
                      f"{opts.big_devices} clients: {r['rate']:,.1f} msg/s")
        await echo.stop()
    if "grpc" in needed or "chain" in needed:
        grpc_echo = await bench.launcher.baseline("grpc")
        address = f"{HOST}:{grpc_echo.port}"
        if "grpc" in needed:
            r = await bench.load("baseline_grpc_echo", {
                "mode": "grpc_echo", "address": address, "count": opts.latency_steps,
                "inflight": 100}, sample={"grpc_echo": grpc_echo.pid})
            r["cpu_us"] = bench.cpu_per_op("baseline_grpc_echo", r["rate"])
            bench.base["grpc"] = r
            bench.say(f"  gRPC echo: p50 {r['latency']['p50_us']:.0f} us; "
                      f"{r['rate']:,.0f} msg/s with 100 in flight on one stream")
        if "chain" in needed:
            chain = await bench.launcher.baseline("chain", "--grpc", address)
            url = f"ws://{HOST}:{chain.port}/ws"
            sample = {"chain_ws": chain.pid, "grpc_echo": grpc_echo.pid}
            lat = await bench.load("baseline_chain_latency", {
                "mode": "ws_latency", "url": url, "count": opts.latency_steps})
            thr = await bench.load("baseline_chain_throughput", {
                "mode": "ws_throughput", "url": url, "clients": 100}, sample=sample)
            bench.base["chain"] = {"latency": lat["latency"], "rate": thr["rate"],
                                   "cpu_us": bench.cpu_per_op("baseline_chain_throughput",
                                                              thr["rate"])}
            bench.say(f"  WS->gRPC chain: p50 {lat['latency']['p50_us']:.0f} us; "
                      f"{thr['rate']:,.0f} msg/s with 100 clients")
            await chain.stop()
        await grpc_echo.stop()
    if "ws_memory" in needed:
        for kind in ("ws", "websockets"):
            server = await bench.launcher.baseline(kind)
            per = await idle_memory(bench, f"baseline_{kind}_memory",
                                    f"ws://{HOST}:{server.port}/ws", server, echo=True)
            bench.base[f"{kind}_memory"] = per
            bench.say(f"  idle {kind} echo: " + ", ".join(
                f"{n}: {kib:.1f} KiB/conn" for n, kib in per.items()))
            await server.stop()
    baseline_rows(bench)


def baseline_rows(bench: Bench) -> None:
    b = bench.base
    if "ws_latency" in b:
        bench.rows.append(Row("B1", "bare WS echo round trip p50 / p99, 1 client",
                              b["ws_latency"]["p50_us"], "us",
                              note=f"p99 {b['ws_latency']['p99_us']:.0f} us"))
    for key, clients in (("ws_thr100", 100), ("ws_thr1000", bench.opts.heartbeat_devices)):
        if key in b:
            bench.rows.append(Row("B2", f"bare WS echo msg/s, {clients} clients",
                                  b[key]["rate"], "/s", cpu_us=b[key]["cpu_us"]))
    if "ws_connect" in b:
        bench.rows.append(Row("B3", "bare WS echo connect + 1 round trip /s",
                              b["ws_connect"]["rate"], "/s", cpu_us=b["ws_connect"]["cpu_us"]))
    if "ws_big" in b:
        bench.rows.append(Row("B7", f"bare WS echo of {bench.opts.big_result_bytes / 1e6:g} "
                              f"MB frames msg/s, {bench.opts.big_devices} clients",
                              b["ws_big"]["rate"], "/s", cpu_us=b["ws_big"]["cpu_us"]))
    if "grpc" in b:
        bench.rows.append(Row("B4", "bare grpc.aio bidi echo p50, 1 stream",
                              b["grpc"]["latency"]["p50_us"], "us"))
        bench.rows.append(Row("B4", "bare grpc.aio echo msg/s, 100 in flight",
                              b["grpc"]["rate"], "/s", cpu_us=b["grpc"]["cpu_us"]))
    if "chain" in b:
        bench.rows.append(Row("B5", "WS->FastAPI->gRPC->echo chain p50",
                              b["chain"]["latency"]["p50_us"], "us",
                              note=f"p99 {b['chain']['latency']['p99_us']:.0f} us"))
        bench.rows.append(Row("B5", "WS->gRPC chain msg/s, 100 clients",
                              b["chain"]["rate"], "/s", cpu_us=b["chain"]["cpu_us"]))
    for kind, label in (("ws_memory", "uvicorn"), ("websockets_memory", "websockets")):
        for n, kib in b.get(kind, {}).items():
            bench.rows.append(Row("B6", f"idle {label} echo KiB/conn @ {n:,}", kib, "KiB"))


async def idle_memory(bench: Bench, name: str, url: str, server: Proc, *,
                      echo: bool) -> dict[int, float]:
    """RSS growth of ``server`` per idle socket at each of the memory stages."""
    await asyncio.sleep(0.5)
    before = rss_kib(server.pid)
    per: dict[int, float] = {}

    async def stage(event: dict[str, Any]) -> None:
        await asyncio.sleep(1.0)
        connected = int(event["connected"])
        per[connected] = (rss_kib(server.pid) - before) / max(connected, 1)

    await bench.load(name, {
        "mode": "ws_connect", "url": url, "clients": max(bench.opts.memory_devices),
        "stages": list(bench.opts.memory_devices), "concurrency": 200, "echo": echo,
        "prefix": "bench-idle"}, on_stage=stage, timeout=600)
    bench.details[name]["rss_before_kib"] = before
    bench.details[name]["kib_per_connection"] = per
    return per
