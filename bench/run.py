"""The benchmark suite: real services and load-generating client processes on loopback.

``python -m bench`` (``make bench``) first measures the baselines, then each figure on a
freshly started stack (``aip-session`` and ``aip-gateway`` from the venv, each its own
process, on free loopback ports, ``--log-level warning``), and prints one table with
every figure next to its same-run baseline, as a ratio, with the issue's targets; the
same data, with CPU use and latency details, goes to ``bench-results/latest.json``.

How each figure is measured
---------------------------
Baselines: a bare WebSocket echo on the gateway's own uvicorn+FastAPI configuration, a
bare grpc.aio bidirectional echo stream, and the minimal WS -> FastAPI -> grpc.aio ->
second process -> back chain (see :mod:`bench.baselines`). Clients are the same lean
client (:mod:`bench.wsclient`) in separate processes (:mod:`bench.loadgen`).

1. Command round trip. Devices register over WebSocket and answer every ``command``
   at once with ``command_results`` for each action's ``call_id``; sessions are started
   through the public gRPC API (``StartSession``) with a plan of one command per step.
   Latency: one device, one session of ``--latency-steps`` steps run in sequence. The
   device timestamps every command it receives; the time between consecutive commands is
   exactly one full cycle of the path (device answer -> gateway -> link -> session
   service unblocks the step, the plan agent builds the next command -> link -> gateway
   -> device), i.e. one command round trip as the session service sees it, shifted in
   phase. The bare echo is timed the same way (time between consecutive replies of a
   client that answers each reply at once), so both include the same client work. The
   first 100 steps are warm-up; the session's own duration / steps is recorded as a
   cross-check (``mean_us_from_session_duration``). The same p50 is also set against the
   minimal chain's (baseline B5), which crosses the same processes and hops with no AIP
   work: the share of the round trip that is this project's own. Both latencies are the
   best of three runs (lowest p50; all three are in the JSON): on two cores a whole run
   sometimes lands with every wake-up crossing cores, which shifts it by tens of
   microseconds.
   Throughput: ``--devices`` devices, one long session each (restarted when it ends),
   command round trips counted at the devices over a fixed window after a warm-up; the
   sessions still running are then cancelled and every session must deliver exactly
   one ``task_end``.
2. Heartbeats: ``--heartbeat-devices`` registered devices each in a closed loop
   (heartbeat, wait for the ack); acks per second over the window. Baseline: the echo
   with as many clients in the same loop.
3. Registrations: ``--registrations`` clients, 100 in flight: connect, ``register``, wait
   for the confirmation; clients / wall time. Baseline: connect + one echo round trip.
4. Memory: gateway VmRSS (from /proc) before and after registering N idle devices, per
   device, at each of ``--memory-devices``; baseline the bare uvicorn echo and the bare
   ``websockets`` server with N idle sockets. Session service: VmRSS per active session
   for ``--memory-sessions`` sessions waiting on silent devices (command timeout 600 s).
5. Scaling: figure 1's throughput with two session replicas (each its own process,
   sessions spread over them by device) against one.
6. Tasks end to end: ``--devices`` devices and as many constellations, each looping a
   ``task`` with a 3-step plan and waiting for its ``task_end``; tasks per second, and
   every task's ``task_end`` must reach the constellation and the device.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import profile, report
from bench.common import HOST, raise_nofile_limit, rss_kib
from bench.procs import ROOT, Launcher, LoadResult, Proc, run_loadgen
from bench.report import Row, check

FIGURES = ("1", "2", "3", "4", "5", "6")
NEEDS = {  # which baselines each figure is compared with
    "1": {"ws_latency", "ws_thr100", "grpc", "chain"},
    "2": {"ws_thr1000"},
    "3": {"ws_connect"},
    "4": {"ws_memory"},
    "5": set(),
    "6": {"ws_thr100"},
}


@dataclass
class Options:
    quick: bool = False
    only: tuple[str, ...] = FIGURES
    warmup: float = 2.0
    window: float = 8.0
    latency_steps: int = 2000
    throughput_steps: int = 2000
    devices: int = 100
    heartbeat_devices: int = 1000
    registrations: int = 1000
    memory_devices: tuple[int, ...] = (1000, 5000, 10000)
    memory_sessions: int = 2000
    profile: bool = False
    out: Path = ROOT / "bench-results" / "latest.json"


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the AIP gateway and session service against same-run "
        "baselines (make bench).")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and short windows: a smoke run under a minute")
    parser.add_argument("--only", default="",
                        help="comma-separated figures to run (1-6), e.g. --only 1,4")
    parser.add_argument("--warmup", type=float, help="seconds before each window")
    parser.add_argument("--window", type=float, help="seconds of each measured window")
    parser.add_argument("--latency-steps", type=int, help="steps of the figure-1 session")
    parser.add_argument("--throughput-steps", type=int,
                        help="steps of each throughput session (restarted when done)")
    parser.add_argument("--devices", type=int, help="devices for figures 1, 5 and 6")
    parser.add_argument("--heartbeat-devices", type=int, help="devices for figure 2")
    parser.add_argument("--registrations", type=int, help="clients for figure 3")
    parser.add_argument("--memory-devices", help="idle device counts for figure 4")
    parser.add_argument("--memory-sessions", type=int, help="waiting sessions, figure 4")
    parser.add_argument("--profile", action="store_true",
                        help="also profile both services with py-spy under the figure-1 "
                        "throughput load (an extra, unrecorded run)")
    parser.add_argument("--out", type=Path, help="JSON output (bench-results/latest.json)")
    args = parser.parse_args(argv)
    opts = Options()
    if args.quick:
        opts = Options(quick=True, warmup=1.0, window=3.0, latency_steps=500,
                       throughput_steps=500, memory_devices=(1000,), memory_sessions=500)
    if args.only:
        wanted = tuple(part.strip() for part in args.only.split(",") if part.strip())
        unknown = [f for f in wanted if f not in FIGURES]
        if unknown:
            parser.error(f"unknown figure(s) {unknown}; choose from {', '.join(FIGURES)}")
        opts.only = wanted
    for name in ("warmup", "window", "latency_steps", "throughput_steps", "devices",
                 "heartbeat_devices", "registrations", "memory_sessions", "out"):
        value = getattr(args, name)
        if value is not None:
            setattr(opts, name, value)
    if args.memory_devices:
        opts.memory_devices = tuple(int(n) for n in args.memory_devices.split(","))
    opts.profile = args.profile
    return opts


@dataclass
class Stack:
    gateway: Proc
    sessions: list[Proc]

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.gateway.port}/ws"

    @property
    def addresses(self) -> list[str]:
        return [f"{HOST}:{proc.port}" for proc in self.sessions]

    @property
    def sample(self) -> dict[str, int]:
        pids = {"gateway": self.gateway.pid}
        for n, proc in enumerate(self.sessions):
            pids["session" if len(self.sessions) == 1 else f"session{n + 1}"] = proc.pid
        return pids


@dataclass
class Bench:
    opts: Options
    launcher: Launcher
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    base: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    errors: int = 0
    lost: int = 0
    log_errors: int = 0
    throughput_1: float | None = None

    # ------------------------------------------------------------------ plumbing

    def say(self, text: str) -> None:
        print(text, flush=True)

    def account(self, name: str, load: LoadResult) -> dict[str, Any]:
        """Record a load generator's result; count its errors and lost task_end."""
        result = load.result
        self.details[name] = {**result, "cpu": load.cpu}
        if "failed" in result:
            self.errors += 1
            self.problems.append(f"{name}: {result['failed']}")
            raise RuntimeError(f"{name}: {result['failed']}")
        errors = int(result.get("errors", 0))
        lost = int(result.get("lost_task_end", 0)) + int(result.get("duplicate_task_end", 0))
        self.errors += errors
        self.lost += lost
        if errors or lost:
            self.problems.append(f"{name}: {errors} error(s), {lost} lost/duplicate "
                                 f"task_end: {result.get('error_samples') or ''}")
        return result

    async def load(self, name: str, cfg: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        cfg.setdefault("warmup", self.opts.warmup)
        cfg.setdefault("window", self.opts.window)
        load = await run_loadgen(self.launcher, cfg, **kwargs)
        result = self.account(name, load)
        if load.cpu:
            cpu = ", ".join(f"{k} {v:.0%}" for k, v in load.cpu.items())
            client = result.get("client_cpu")
            client_text = f", load generator {client:.0%}" if client is not None else ""
            self.say(f"    cpu in window: {cpu}{client_text}")
        return result

    def scan_logs(self, procs: list[Proc]) -> None:
        """Errors the services logged count as errors of the run."""
        for proc in procs:
            text = proc.log_path.read_text(errors="replace") if proc.log_path.exists() else ""
            bad = [line for line in text.splitlines()
                   if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")]
            warnings = sum(1 for line in text.splitlines() if " WARNING " in line)
            self.details.setdefault("service_logs", {})[proc.log_path.name] = {
                "errors": len(bad), "warnings": warnings, "samples": bad[:5]}
            if bad:
                self.log_errors += len(bad)
                self.problems.append(f"{proc.log_path.name}: {len(bad)} error line(s): "
                                     f"{bad[0][:200]}")

    @contextlib.asynccontextmanager
    async def stack(self, replicas: int = 1, session_flags: tuple[str, ...] = (),
                    gateway_flags: tuple[str, ...] = ()) -> AsyncIterator[Stack]:
        sessions: list[Proc] = []
        gateway: Proc | None = None
        try:
            for _ in range(replicas):
                sessions.append(await self.launcher.session_service(*session_flags))
            gateway = await self.launcher.gateway(sessions, *gateway_flags)
            yield Stack(gateway, sessions)
        finally:
            if gateway is not None:
                await gateway.stop()
            for proc in sessions:
                await proc.stop()
            self.scan_logs([p for p in (gateway, *sessions) if p is not None])

    # ------------------------------------------------------------------ baselines

    async def baselines(self, needed: set[str]) -> None:
        opts = self.opts
        if needed & {"ws_latency", "ws_thr100", "ws_thr1000", "ws_connect"}:
            echo = await self.launcher.baseline("ws")
            url = f"ws://{HOST}:{echo.port}/ws"
            sample = {"echo": echo.pid}
            if "ws_latency" in needed:
                r = await self.load("baseline_ws_latency", {
                    "mode": "ws_latency", "url": url, "count": opts.latency_steps})
                self.base["ws_latency"] = r["latency"]
                self.say(f"  WS echo, 1 client: p50 {r['latency']['p50_us']:.0f} us, "
                         f"p99 {r['latency']['p99_us']:.0f} us")
            for clients in (100, opts.heartbeat_devices):
                key = "ws_thr100" if clients == 100 else "ws_thr1000"
                if key not in needed:
                    continue
                r = await self.load(f"baseline_ws_throughput_{clients}", {
                    "mode": "ws_throughput", "url": url, "clients": clients}, sample=sample)
                self.base[key] = r
                self.say(f"  WS echo, {clients} clients: {r['rate']:,.0f} msg/s")
            if "ws_connect" in needed:
                r = await self.load("baseline_ws_connect", {
                    "mode": "ws_connect", "url": url, "clients": opts.registrations,
                    "concurrency": 100, "echo": True})
                self.base["ws_connect"] = r["stages"][0]
                self.say(f"  WS echo, connect + 1 round trip: "
                         f"{r['stages'][0]['rate']:,.0f}/s")
            await echo.stop()
        if "grpc" in needed or "chain" in needed:
            grpc_echo = await self.launcher.baseline("grpc")
            address = f"{HOST}:{grpc_echo.port}"
            if "grpc" in needed:
                r = await self.load("baseline_grpc_echo", {
                    "mode": "grpc_echo", "address": address, "count": opts.latency_steps,
                    "inflight": 100}, sample={"grpc_echo": grpc_echo.pid})
                self.base["grpc"] = r
                self.say(f"  gRPC echo: p50 {r['latency']['p50_us']:.0f} us; "
                         f"{r['rate']:,.0f} msg/s with 100 in flight on one stream")
            if "chain" in needed:
                chain = await self.launcher.baseline("chain", "--grpc", address)
                url = f"ws://{HOST}:{chain.port}/ws"
                sample = {"chain_ws": chain.pid, "grpc_echo": grpc_echo.pid}
                lat = await self.load("baseline_chain_latency", {
                    "mode": "ws_latency", "url": url, "count": opts.latency_steps})
                thr = await self.load("baseline_chain_throughput", {
                    "mode": "ws_throughput", "url": url, "clients": 100}, sample=sample)
                self.base["chain"] = {"latency": lat["latency"], "rate": thr["rate"]}
                self.say(f"  WS->gRPC chain: p50 {lat['latency']['p50_us']:.0f} us; "
                         f"{thr['rate']:,.0f} msg/s with 100 clients")
                await chain.stop()
            await grpc_echo.stop()
        if "ws_memory" in needed:
            for kind in ("ws", "websockets"):
                server = await self.launcher.baseline(kind)
                per = await self.idle_memory(f"baseline_{kind}_memory",
                                             f"ws://{HOST}:{server.port}/ws", server, echo=True)
                self.base[f"{kind}_memory"] = per
                self.say(f"  idle {kind} echo: " + ", ".join(
                    f"{n}: {kib:.1f} KiB/conn" for n, kib in per.items()))
                await server.stop()
        self.baseline_rows()

    def baseline_rows(self) -> None:
        b = self.base
        if "ws_latency" in b:
            self.rows.append(Row("B1", "bare WS echo round trip p50 / p99, 1 client",
                                 b["ws_latency"]["p50_us"], "us",
                                 note=f"p99 {b['ws_latency']['p99_us']:.0f} us"))
        for key, clients in (("ws_thr100", 100), ("ws_thr1000", self.opts.heartbeat_devices)):
            if key in b:
                self.rows.append(Row("B2", f"bare WS echo msg/s, {clients} clients",
                                     b[key]["rate"], "/s"))
        if "ws_connect" in b:
            self.rows.append(Row("B3", "bare WS echo connect + 1 round trip /s",
                                 b["ws_connect"]["rate"], "/s"))
        if "grpc" in b:
            self.rows.append(Row("B4", "bare grpc.aio bidi echo p50, 1 stream",
                                 b["grpc"]["latency"]["p50_us"], "us"))
            self.rows.append(Row("B4", "bare grpc.aio echo msg/s, 100 in flight",
                                 b["grpc"]["rate"], "/s"))
        if "chain" in b:
            self.rows.append(Row("B5", "WS->FastAPI->gRPC->echo chain p50",
                                 b["chain"]["latency"]["p50_us"], "us"))
            self.rows.append(Row("B5", "WS->gRPC chain msg/s, 100 clients",
                                 b["chain"]["rate"], "/s"))
        for kind, label in (("ws_memory", "uvicorn"), ("websockets_memory", "websockets")):
            for n, kib in b.get(kind, {}).items():
                self.rows.append(Row("B6", f"idle {label} echo KiB/conn @ {n:,}", kib, "KiB"))

    async def idle_memory(self, name: str, url: str, server: Proc, *,
                          echo: bool) -> dict[int, float]:
        """RSS growth of ``server`` per idle socket at each of the memory stages."""
        await asyncio.sleep(0.5)
        before = rss_kib(server.pid)
        per: dict[int, float] = {}

        async def stage(event: dict[str, Any]) -> None:
            await asyncio.sleep(1.0)
            connected = int(event["connected"])
            per[connected] = (rss_kib(server.pid) - before) / max(connected, 1)

        await self.load(name, {
            "mode": "ws_connect", "url": url, "clients": max(self.opts.memory_devices),
            "stages": list(self.opts.memory_devices), "concurrency": 200, "echo": echo,
            "prefix": "bench-idle"}, on_stage=stage, timeout=600)
        self.details[name]["rss_before_kib"] = before
        self.details[name]["kib_per_connection"] = per
        return per

    # ------------------------------------------------------------------ figures

    async def figure_1(self) -> None:
        opts = self.opts
        async with self.stack() as stack:
            lat = await self.load("fig1_latency", {
                "mode": "sessions", "kind": "latency", "url": stack.ws_url,
                "session_addresses": stack.addresses, "devices": 1,
                "steps": opts.latency_steps})
            self.say(f"  full path, 1 session: p50 {lat['latency']['p50_us']:.0f} us, "
                     f"p99 {lat['latency']['p99_us']:.0f} us (session duration / steps: "
                     f"{lat['mean_us_from_session_duration']:.0f} us)")
            thr = await self.load("fig1_throughput", self.throughput_cfg(stack),
                                  sample=stack.sample)
            self.throughput_1 = thr["rate"]
            self.say(f"  full path, {opts.devices} sessions: {thr['rate']:,.0f} round trips/s")
            if opts.profile:
                await self.profile_run(stack)
        echo = self.base["ws_latency"]
        self.rows.append(Row(
            "1", "command round trip p50, 1 session", lat["latency"]["p50_us"], "us",
            echo["p50_us"], "WS echo p50", "<= 3x WS echo p50",
            check(lat["latency"]["p50_us"] / echo["p50_us"], at_most=3.0)))
        chain = self.base["chain"]["latency"]
        self.rows.append(Row(
            "1", "command round trip p50 against the minimal chain", lat["latency"]["p50_us"],
            "us", chain["p50_us"], "WS->gRPC chain p50",
            note="the chain has the same hops and no AIP work"))
        self.rows.append(Row(
            "1", "command round trip p99, 1 session", lat["latency"]["p99_us"], "us",
            echo["p99_us"], "WS echo p99"))
        self.rows.append(Row(
            "1", f"command round trips/s, {opts.devices} sessions", thr["rate"], "/s",
            self.base["ws_thr100"]["rate"], "WS echo, 100 clients", ">= 9,000/s",
            check(thr["rate"], at_least=9000),
            note=f"vs chain {thr['rate'] / self.base['chain']['rate']:.2f}x"))

    def throughput_cfg(self, stack: Stack) -> dict[str, Any]:
        return {"mode": "sessions", "kind": "throughput", "url": stack.ws_url,
                "session_addresses": stack.addresses, "devices": self.opts.devices,
                "steps": self.opts.throughput_steps}

    async def profile_run(self, stack: Stack) -> None:
        out_dir = self.opts.out.parent
        spies: list[tuple[str, Proc | None, Path]] = []

        async def window(edge: str) -> None:
            if edge == "start":
                for proc in (stack.gateway, *stack.sessions):
                    path = out_dir / f"profile-{proc.name}.txt"
                    spies.append((proc.name, await profile.start(
                        self.launcher, proc, self.opts.window, path), path))

        self.say("  profiling both services under the same load (py-spy) ...")
        load = await run_loadgen(self.launcher, {**self.throughput_cfg(stack),
                                                 "warmup": self.opts.warmup,
                                                 "window": self.opts.window},
                                 on_window=window)
        self.details["profile_run"] = {**load.result, "note": "perturbed by py-spy"}
        for name, spy, path in spies:
            await profile.finish(spy)
            summary = profile.summarize(path)
            self.details.setdefault("profiles", {})[name] = summary
            self.say(f"  hot spots, {name} ({summary.get('samples', 0)} busy samples):")
            for entry in summary.get("self", [])[:10]:
                self.say(f"    self {entry['percent']:5.1f}%  {entry['function']}")

    async def figure_2(self) -> None:
        clients = self.opts.heartbeat_devices
        async with self.stack() as stack:
            r = await self.load("fig2_heartbeats", {
                "mode": "ws_throughput", "url": stack.ws_url, "clients": clients,
                "register": True}, sample=stack.sample)
        self.say(f"  heartbeat acks, {clients} devices: {r['rate']:,.0f}/s")
        base = self.base["ws_thr1000"]["rate"]
        self.rows.append(Row("2", f"heartbeat acks/s, {clients:,} devices", r["rate"], "/s",
                             base, f"WS echo, {clients} clients", ">= 0.70x echo",
                             check(r["rate"] / base, at_least=0.70)))

    async def figure_3(self) -> None:
        count = self.opts.registrations
        async with self.stack() as stack:
            r = await self.load("fig3_registrations", {
                "mode": "ws_connect", "url": stack.ws_url, "clients": count,
                "concurrency": 100}, sample=stack.sample)
        stage = r["stages"][0]
        self.say(f"  registrations, {count} clients: {stage['rate']:,.0f}/s")
        self.rows.append(Row("3", f"registrations/s, {count:,} clients", stage["rate"], "/s",
                             self.base["ws_connect"]["rate"], "echo connect+round trip",
                             ">= 2,000/s", check(stage["rate"], at_least=2000),
                             note=f"p50 {stage['latency']['p50_us'] / 1000:.1f} ms"))

    async def figure_4(self) -> None:
        async with self.stack() as stack:
            per = await self.idle_memory("fig4_gateway_memory", stack.ws_url, stack.gateway,
                                         echo=False)
        self.say("  gateway: " + ", ".join(f"{n}: {kib:.1f} KiB/device"
                                           for n, kib in per.items()))
        base = self.base.get("ws_memory", {})
        largest = max(per) if per else 0
        for n, kib in per.items():
            target = "<= 24 KiB @ 10,000" if n == largest else ""
            passed = check(kib, at_most=24.0) if n == largest else None
            note = "" if n >= 10000 or n != largest else "target is set at 10,000 devices"
            self.rows.append(Row("4", f"gateway KiB per idle device @ {n:,}", kib, "KiB",
                                 base.get(n), "uvicorn echo", target, passed, note))
        sessions = self.opts.memory_sessions
        async with self.stack(session_flags=("--command-timeout", "600")) as stack:
            marks: dict[str, int] = {}

            async def stage(event: dict[str, Any]) -> None:
                await asyncio.sleep(1.0)
                marks[event["stage"]] = rss_kib(stack.sessions[0].pid)

            r = await self.load("fig4_session_memory", {
                "mode": "sessions", "kind": "memory", "url": stack.ws_url,
                "session_addresses": stack.addresses, "devices": self.opts.devices,
                "sessions": sessions, "steps": 1, "step_timeout": 600},
                on_stage=stage, timeout=600)
        started = int(r.get("sessions", 0))
        kib = (marks["sessions_started"] - marks["devices_ready"]) / max(started, 1)
        self.details["fig4_session_memory"]["rss_kib"] = marks
        self.say(f"  session service: {kib:.1f} KiB per active session ({started} sessions)")
        self.rows.append(Row("4", f"session service KiB per active session @ {started:,}",
                             kib, "KiB"))

    async def figure_5(self) -> None:
        if self.throughput_1 is None:
            async with self.stack() as stack:
                r = await self.load("fig5_throughput_1_replica", self.throughput_cfg(stack),
                                    sample=stack.sample)
                self.throughput_1 = r["rate"]
        async with self.stack(replicas=2) as stack:
            r = await self.load("fig5_throughput_2_replicas", self.throughput_cfg(stack),
                                sample=stack.sample)
        self.say(f"  2 replicas: {r['rate']:,.0f} round trips/s "
                 f"(1 replica: {self.throughput_1:,.0f}/s)")
        self.rows.append(Row("5", f"command round trips/s, 2 replicas, {self.opts.devices} "
                             "sessions", r["rate"], "/s", self.throughput_1,
                             "same, 1 replica"))

    async def figure_6(self) -> None:
        async with self.stack() as stack:
            r = await self.load("fig6_tasks", {
                "mode": "tasks", "url": stack.ws_url, "session_addresses": stack.addresses,
                "devices": self.opts.devices, "steps": 3}, sample=stack.sample)
        self.say(f"  tasks, 3-step plan, {self.opts.devices} devices: {r['rate']:,.0f}/s "
                 f"(p50 {r['latency'].get('p50_us', 0) / 1000:.1f} ms per task)")
        self.rows.append(Row("6", f"tasks/s end to end, 3-step plan, {self.opts.devices} "
                             "devices", r["rate"], "/s", self.base["ws_thr100"]["rate"],
                             "WS echo, 100 clients",
                             note="a task is ~6 WebSocket round trips"))

    # ------------------------------------------------------------------ the run

    async def run(self) -> None:
        figures: dict[str, Callable[[], Awaitable[None]]] = {
            "1": self.figure_1, "2": self.figure_2, "3": self.figure_3,
            "4": self.figure_4, "5": self.figure_5, "6": self.figure_6,
        }
        needed: set[str] = set()
        for key in self.opts.only:
            needed |= NEEDS[key]
        try:
            if needed:
                self.say("baselines")
                await self.baselines(needed)
            for key in self.opts.only:
                self.say(f"figure {key}")
                try:
                    await figures[key]()
                except Exception as exc:
                    self.problems.append(f"figure {key}: {type(exc).__name__}: {exc}")
                    self.errors += 1
                    self.say(f"  figure {key} failed: {type(exc).__name__}: {exc}")
        finally:
            await self.launcher.stop_all()
        total = self.errors + self.lost + self.log_errors
        self.rows.append(Row("*", "errors + lost task_end, all runs", float(total), "",
                             target="0", passed=total == 0,
                             note=f"{self.errors} errors, {self.lost} lost task_end, "
                             f"{self.log_errors} service log errors"))


def git_state() -> dict[str, Any]:
    """The commit measured and whether the working tree differs from it."""
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit, "dirty_files": len(dirty.splitlines()) if dirty else 0}


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    limit = raise_nofile_limit()
    launcher = Launcher(opts.out.parent / "logs")
    bench = Bench(opts, launcher)
    started = time.monotonic()
    load_before = os.getloadavg()
    print(f"AIP control plane benchmark ({'quick' if opts.quick else 'full'}; "
          f"figures {','.join(opts.only)}; open files {limit}; {os.cpu_count()} cores)",
          flush=True)
    try:
        asyncio.run(bench.run())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    elapsed = time.monotonic() - started
    print()
    print(report.table(bench.rows))
    if bench.problems:
        print("\nproblems:")
        for problem in bench.problems:
            print(f"  - {problem}")
    meta = {
        "quick": opts.quick, "figures": list(opts.only), "elapsed_s": round(elapsed, 1),
        "cores": os.cpu_count(), "python": sys.version.split()[0],
        "platform": platform.platform(), "open_files": limit,
        "options": {k: v for k, v in vars(opts).items() if k != "out"},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "root": str(ROOT), "git": git_state(),
        # Other work on the machine skews every figure: compare with these.
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
    }
    report.write_json(opts.out, bench.rows, {**bench.details, "baselines": bench.base,
                                             "problems": bench.problems}, meta)
    print(f"\n{elapsed:.0f} s; results in {opts.out}")
    return 0
