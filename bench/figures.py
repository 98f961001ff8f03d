"""The seven figures, each on a freshly started stack (how each is measured: :mod:`bench.run`).

Every figure records its rows, set against its same-run baseline and the issue's target,
on the run's :class:`bench.suite.Bench`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bench import profile
from bench.common import rss_kib
from bench.measure_baselines import idle_memory
from bench.procs import Proc, run_loadgen
from bench.report import Row, check, cpu_words
from bench.suite import Bench, Stack


async def figure_1(bench: Bench) -> None:
    opts = bench.opts
    async with bench.stack() as stack:
        lat = await bench.load("fig1_latency", {
            "mode": "sessions", "kind": "latency", "url": stack.ws_url,
            "session_addresses": stack.addresses, "devices": 1,
            "steps": opts.latency_steps})
        bench.say(f"  full path, 1 session: p50 {lat['latency']['p50_us']:.0f} us, "
                  f"p99 {lat['latency']['p99_us']:.0f} us (session duration / steps: "
                  f"{lat['mean_us_from_session_duration']:.0f} us)")
        thr = await bench.load("fig1_throughput", throughput_cfg(bench, stack),
                               sample=stack.sample)
        bench.throughput_1 = thr["rate"]
        bench.say(f"  full path, {opts.devices} sessions: {thr['rate']:,.0f} round trips/s")
        if opts.profile:
            await profile_run(bench, stack)
    # The floor is the minimal chain (B5): the same processes and hops, no AIP work.
    chain = bench.base["chain"]["latency"]
    echo = bench.base["ws_latency"]
    p50, p99 = lat["latency"]["p50_us"], lat["latency"]["p99_us"]
    bench.rows.append(Row(
        "1", "command round trip p50, 1 session", p50, "us", chain["p50_us"],
        "WS->gRPC chain p50", "<= 1.2x chain", check(p50 / chain["p50_us"], at_most=1.2),
        note=f"{p50 / echo['p50_us']:.1f}x the bare WS echo"))
    bench.rows.append(Row(
        "1", "command round trip p99, 1 session", p99, "us", chain["p99_us"],
        "WS->gRPC chain p99", "<= 1.5x chain", check(p99 / chain["p99_us"], at_most=1.5)))
    chain_rate = bench.base["chain"]["rate"]
    bench.rows.append(Row(
        "1", f"command round trips/s, {opts.devices} sessions", thr["rate"], "/s",
        chain_rate, "WS->gRPC chain, 100 clients", ">= 0.6x chain",
        check(thr["rate"] / chain_rate, at_least=0.6),
        cpu_us=bench.cpu_per_op("fig1_throughput", thr["rate"]),
        note=f"chain CPU us/msg: {cpu_words(bench.base['chain']['cpu_us'])}"))


def throughput_cfg(bench: Bench, stack: Stack) -> dict[str, Any]:
    return {"mode": "sessions", "kind": "throughput", "url": stack.ws_url,
            "session_addresses": stack.addresses, "devices": bench.opts.devices,
            "steps": bench.opts.throughput_steps}


async def profile_run(bench: Bench, stack: Stack) -> None:
    out_dir = bench.opts.out.parent
    spies: list[tuple[str, Proc | None, Path]] = []

    async def window(edge: str) -> None:
        if edge == "start":
            for proc in (stack.gateway, *stack.sessions):
                path = out_dir / f"profile-{proc.name}.txt"
                spies.append((proc.name, await profile.start(
                    bench.launcher, proc, bench.opts.window, path), path))

    bench.say("  profiling both services under the same load (py-spy) ...")
    load = await run_loadgen(bench.launcher, {**throughput_cfg(bench, stack),
                                              "warmup": bench.opts.warmup,
                                              "window": bench.opts.window},
                             on_window=window)
    bench.details["profile_run"] = {**load.result, "note": "perturbed by py-spy"}
    for name, spy, path in spies:
        await profile.finish(spy)
        summary = profile.summarize(path)
        bench.details.setdefault("profiles", {})[name] = summary
        bench.say(f"  hot spots, {name} ({summary.get('samples', 0)} busy samples):")
        for entry in summary.get("self", [])[:10]:
            bench.say(f"    self {entry['percent']:5.1f}%  {entry['function']}")


async def figure_2(bench: Bench) -> None:
    clients = bench.opts.heartbeat_devices
    async with bench.stack() as stack:
        r = await bench.load("fig2_heartbeats", {
            "mode": "ws_throughput", "url": stack.ws_url, "clients": clients,
            "register": True}, sample=stack.sample)
    bench.say(f"  heartbeat acks, {clients} devices: {r['rate']:,.0f}/s")
    # Throughput here is bound by the load generator: the target is CPU per operation.
    base = bench.base["ws_thr1000"]
    cpu = bench.cpu_per_op("fig2_heartbeats", r["rate"])
    echo_cpu = base["cpu_us"].get("echo")
    ratio = cpu["gateway"] / echo_cpu if echo_cpu and "gateway" in cpu else None
    bench.rows.append(Row("2", f"heartbeat acks/s, {clients:,} devices", r["rate"], "/s",
                          base["rate"], f"WS echo, {clients} clients", cpu_us=cpu))
    bench.rows.append(Row("2", "gateway CPU us per heartbeat ack", cpu.get("gateway"), "us",
                          echo_cpu, "echo CPU us per echo", "<= 1.2x echo",
                          check(ratio, at_most=1.2)))


async def figure_3(bench: Bench) -> None:
    count = bench.opts.registrations
    async with bench.stack() as stack:
        r = await bench.load("fig3_registrations", {
            "mode": "ws_connect", "url": stack.ws_url, "clients": count,
            "concurrency": 100}, sample=stack.sample)
    stage = r["stages"][0]
    bench.say(f"  registrations, {count} clients: {stage['rate']:,.0f}/s")
    base = bench.base["ws_connect"]
    bench.rows.append(Row("3", f"registrations/s, {count:,} clients", stage["rate"], "/s",
                          base["rate"], "echo connect+round trip", ">= 0.95x echo",
                          check(stage["rate"] / base["rate"], at_least=0.95),
                          cpu_us=bench.cpu_per_op("fig3_registrations", stage["rate"]),
                          note=f"p50 {stage['latency']['p50_us'] / 1000:.1f} ms; echo CPU "
                          f"us/connection: {cpu_words(base['cpu_us'])}"))


async def figure_4(bench: Bench) -> None:
    async with bench.stack() as stack:
        per = await idle_memory(bench, "fig4_gateway_memory", stack.ws_url, stack.gateway,
                                echo=False)
    bench.say("  gateway: " + ", ".join(f"{n}: {kib:.1f} KiB/device"
                                        for n, kib in per.items()))
    base = bench.base.get("ws_memory", {})
    largest = max(per) if per else 0
    for n, kib in per.items():
        target = "<= 16 KiB @ 10,000" if n == largest else ""
        passed = check(kib, at_most=16.0) if n == largest else None
        note = "" if n >= 10000 or n != largest else "target is set at 10,000 devices"
        bench.rows.append(Row("4", f"gateway KiB per idle device @ {n:,}", kib, "KiB",
                              base.get(n), "uvicorn echo", target, passed, note))
    sessions = bench.opts.memory_sessions
    async with bench.stack(session_flags=("--command-timeout", "600")) as stack:
        marks: dict[str, int] = {}

        async def stage(event: dict[str, Any]) -> None:
            await asyncio.sleep(1.0)
            marks[event["stage"]] = rss_kib(stack.sessions[0].pid)

        r = await bench.load("fig4_session_memory", {
            "mode": "sessions", "kind": "memory", "url": stack.ws_url,
            "session_addresses": stack.addresses, "devices": bench.opts.devices,
            "sessions": sessions, "steps": 1, "step_timeout": 600},
            on_stage=stage, timeout=600)
    started = int(r.get("sessions", 0))
    kib = (marks["sessions_started"] - marks["devices_ready"]) / max(started, 1)
    bench.details["fig4_session_memory"]["rss_kib"] = marks
    bench.say(f"  session service: {kib:.1f} KiB per active session ({started} sessions)")
    bench.rows.append(Row("4", f"session service KiB per active session @ {started:,}",
                          kib, "KiB"))


async def figure_5(bench: Bench) -> None:
    if bench.throughput_1 is None:
        async with bench.stack() as stack:
            r = await bench.load("fig5_throughput_1_replica", throughput_cfg(bench, stack),
                                 sample=stack.sample)
            bench.throughput_1 = r["rate"]
    async with bench.stack(replicas=2) as stack:
        r = await bench.load("fig5_throughput_2_replicas", throughput_cfg(bench, stack),
                             sample=stack.sample)
    bench.say(f"  2 replicas: {r['rate']:,.0f} round trips/s "
              f"(1 replica: {bench.throughput_1:,.0f}/s)")
    bench.rows.append(Row("5", f"command round trips/s, 2 replicas, {bench.opts.devices} "
                          "sessions", r["rate"], "/s", bench.throughput_1,
                          "same, 1 replica",
                          cpu_us=bench.cpu_per_op("fig5_throughput_2_replicas", r["rate"])))


async def figure_6(bench: Bench) -> None:
    async with bench.stack() as stack:
        r = await bench.load("fig6_tasks", {
            "mode": "tasks", "url": stack.ws_url, "session_addresses": stack.addresses,
            "devices": bench.opts.devices, "steps": 3}, sample=stack.sample)
    bench.say(f"  tasks, 3-step plan, {bench.opts.devices} devices: {r['rate']:,.0f}/s "
              f"(p50 {r['latency'].get('p50_us', 0) / 1000:.1f} ms per task)")
    bench.rows.append(Row("6", f"tasks/s end to end, 3-step plan, {bench.opts.devices} "
                          "devices", r["rate"], "/s", bench.base["ws_thr100"]["rate"],
                          "WS echo, 100 clients", cpu_us=bench.cpu_per_op("fig6_tasks", r["rate"]),
                          note="a task is ~6 WebSocket round trips"))


async def figure_7(bench: Bench) -> None:
    opts = bench.opts
    megabytes = opts.big_result_bytes / 1e6
    async with bench.stack() as stack:
        r = await bench.load("fig7_big_results", {
            "mode": "sessions", "kind": "throughput", "url": stack.ws_url,
            "session_addresses": stack.addresses, "devices": opts.big_devices,
            "steps": opts.throughput_steps, "result_bytes": opts.big_result_bytes},
            sample=stack.sample)
    cpu = bench.details["fig7_big_results"].get("cpu") or {}
    per_result = {name: share / max(r["rate"], 1e-9) * 1e3 for name, share in cpu.items()}
    bench.say(f"  {megabytes:g} MB results, {opts.big_devices} devices: {r['rate']:,.1f}/s "
              f"({r['rate'] * megabytes:,.0f} MB/s); CPU ms per result: " + ", ".join(
                  f"{name} {ms:.1f}" for name, ms in per_result.items()))
    echo = bench.base["ws_big"]["rate"]
    bench.rows.append(Row(
        "7", f"{megabytes:g} MB results/s through the full path, {opts.big_devices} devices",
        r["rate"], "/s", echo, f"bare WS echo of {megabytes:g} MB frames", ">= 0.5x echo",
        check(r["rate"] / echo, at_least=0.5), cpu_us={n: ms * 1e3 for n, ms in per_result.items()},
        note=f"echo CPU us/frame: {cpu_words(bench.base['ws_big']['cpu_us'])}"))
