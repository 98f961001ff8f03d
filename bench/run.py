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
7. Big results: ``--big-devices`` devices as in figure 1's throughput, each answering
   every command with a ``--big-result-bytes`` base64 result (an inline screenshot);
   results per second through the whole path (WebSocket, gateway, link, session
   service, and the next command back), with each service's CPU milliseconds per
   result. Baseline: the bare echo with as many clients sending frames of that size
   (the echo sends each one back, so it moves twice the bytes of the real path).
8. A fleet on one gateway: ``--fleet-devices`` devices (100,000) register from several
   loopback source addresses (127.0.0.2, 127.0.0.3, ..., 25,000 each, past the
   ephemeral-port range of one address), then stay idle for ``--fleet-idle`` seconds
   (the gateway's CPU then is its keepalive work), then every device heartbeats once
   within ``--fleet-sweep`` seconds (the reference cadence of 120 s compressed; CPU per
   heartbeat is the sweep's CPU minus the idle rate), then 20 sessions of 50 steps run
   on random devices while every device heartbeats at the 120 s cadence. Reported: RSS
   and KiB per device, CPU per heartbeat and the share of a core the whole fleet costs
   at the 120 s cadence, registrations per second, the round trip's p50 / p99 under
   that load. The gateway and the load generator each hold a descriptor per device, so
   the hard open-file limit caps the fleet; past it, RSS and CPU are projected linearly from the
   devices it could hold, and the row says so.
9. Reference-shaped sessions: ``--devices`` devices, each session a plan of two
   ``list_tools`` commands (answered with the reference device's tool descriptors) and
   four commands each answered with a 1 MB screenshot, as the reference clients run
   them; sessions per second and each service's CPU milliseconds per session.

Every figure runs ``--repeat`` times (2 in a full run, 1 with ``--quick``) on a fresh
stack each time; the table shows the median with the runs' range and spread, CPU
microseconds per operation for each process, and a figure passes only if every run did.

Layout
------
This module runs the suite and writes the results; the options are
:mod:`bench.options`, the run's state and service stacks :mod:`bench.suite`, the
baselines :mod:`bench.measure_baselines`, the figures :mod:`bench.figures` and
:mod:`bench.figures_fleet`, the table and its repeats :mod:`bench.report`.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aip_runtime.fd_limit import raise_fd_limit
from bench import figures, figures_fleet, report
from bench.measure_baselines import baselines
from bench.options import NEEDS, parse_args
from bench.procs import ROOT, Launcher
from bench.report import Row
from bench.suite import Bench


async def run(bench: Bench) -> None:
    """The baselines the chosen figures need, then each figure; a failed figure is
    recorded as a problem and the run goes on."""
    runs: dict[str, Callable[[Bench], Awaitable[None]]] = {
        "1": figures.figure_1, "2": figures.figure_2, "3": figures.figure_3,
        "4": figures.figure_4, "5": figures.figure_5, "6": figures.figure_6,
        "7": figures.figure_7, "8": figures_fleet.figure_8, "9": figures_fleet.figure_9,
    }
    needed: set[str] = set()
    for key in bench.opts.only:
        needed |= NEEDS[key]
    repeat = max(1, bench.opts.repeat)
    try:
        for rep in range(repeat):
            first_row = len(bench.rows)
            bench.base, bench.throughput_1 = {}, None
            if repeat > 1:
                bench.say(f"run {rep + 1} of {repeat}")
            if needed:
                bench.say("baselines")
                await baselines(bench, needed)
            for key in bench.opts.only:
                bench.say(f"figure {key}")
                try:
                    await runs[key](bench)
                except Exception as exc:
                    bench.problems.append(f"figure {key}: {type(exc).__name__}: {exc}")
                    bench.errors += 1
                    bench.say(f"  figure {key} failed: {type(exc).__name__}: {exc}")
            for row in bench.rows[first_row:]:
                row.run = rep
            bench.runs.append({"baselines": bench.base, "details": bench.details})
            bench.details = {}
    finally:
        await bench.launcher.stop_all()
    bench.rows = report.merge(bench.rows)
    total = bench.errors + bench.lost + bench.log_errors
    bench.rows.append(Row("*", "errors + lost task_end, all runs", float(total), "",
                          target="0", passed=total == 0,
                          note=f"{bench.errors} errors, {bench.lost} lost task_end, "
                          f"{bench.log_errors} service log errors"))


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
    limit = raise_fd_limit()
    launcher = Launcher(opts.out.parent / "logs")
    bench = Bench(opts, launcher)
    started = time.monotonic()
    load_before = os.getloadavg()
    print(f"AIP control plane benchmark ({'quick' if opts.quick else 'full'}; "
          f"figures {','.join(opts.only)}; open files {limit}; {os.cpu_count()} cores)",
          flush=True)
    try:
        asyncio.run(run(bench))
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
    report.write_json(opts.out, bench.rows, {"runs": bench.runs,
                                             "problems": bench.problems}, meta)
    print(f"\n{elapsed:.0f} s; results in {opts.out}")
    return 0
