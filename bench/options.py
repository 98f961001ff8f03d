"""What ``python -m bench`` runs: the figures chosen and the sizes and windows used.

``--quick`` swaps in small sizes for a smoke run; each explicit flag then overrides its
default. :data:`NEEDS` ties each figure to the same-run baselines it is compared with, so
a partial run (``--only``) measures only the baselines it needs.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from bench.procs import ROOT

FIGURES = ("1", "2", "3", "4", "5", "6", "7", "8", "9")
NEEDS = {  # which baselines each figure is compared with
    "1": {"ws_latency", "ws_thr100", "grpc", "chain"},
    "2": {"ws_thr1000"},
    "3": {"ws_connect"},
    "4": {"ws_memory"},
    "5": set(),
    "6": {"ws_thr100"},
    "7": {"ws_big"},
    "8": {"ws_connect"},
    "9": set(),
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
    registrations: int = 5000
    memory_devices: tuple[int, ...] = (1000, 5000, 10000)
    memory_sessions: int = 2000
    big_result_bytes: int = 5_000_000
    big_devices: int = 4
    fleet_devices: int = 100_000
    fleet_idle: float = 25.0
    fleet_sweep: float = 10.0
    #: How many times the whole suite (baselines and figures) is measured.
    repeat: int = 2
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
                        help="comma-separated figures to run (1-9), e.g. --only 1,4")
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
    parser.add_argument("--big-result-bytes", type=int,
                        help="size of each figure-7 result (a screenshot), characters")
    parser.add_argument("--big-devices", type=int,
                        help="devices (and echo clients) sending figure-7 results")
    parser.add_argument("--fleet-devices", type=int,
                        help="idle devices for figure 8 (capped by the open-file limit)")
    parser.add_argument("--fleet-idle", type=float,
                        help="seconds figure 8 measures the idle fleet's keep-alive cost")
    parser.add_argument("--fleet-sweep", type=float,
                        help="seconds over which every figure-8 device heartbeats once")
    parser.add_argument("--repeat", type=int,
                        help="measure the whole suite this many times (full run: 2); the "
                        "table shows the median and the spread")
    parser.add_argument("--profile", action="store_true",
                        help="also profile both services with py-spy under the figure-1 "
                        "throughput load (an extra, unrecorded run)")
    parser.add_argument("--out", type=Path, help="JSON output (bench-results/latest.json)")
    args = parser.parse_args(argv)
    opts = Options()
    if args.quick:
        opts = Options(quick=True, warmup=1.0, window=3.0, latency_steps=500,
                       throughput_steps=500, memory_devices=(1000,), memory_sessions=500,
                       fleet_devices=2000, fleet_idle=3.0, fleet_sweep=2.0, repeat=1)
    if args.only:
        wanted = tuple(part.strip() for part in args.only.split(",") if part.strip())
        unknown = [f for f in wanted if f not in FIGURES]
        if unknown:
            parser.error(f"unknown figure(s) {unknown}; choose from {', '.join(FIGURES)}")
        opts.only = wanted
    for name in ("warmup", "window", "latency_steps", "throughput_steps", "devices",
                 "heartbeat_devices", "registrations", "memory_sessions", "big_result_bytes",
                 "big_devices", "fleet_devices", "fleet_idle", "fleet_sweep", "repeat",
                 "out"):
        value = getattr(args, name)
        if value is not None:
            setattr(opts, name, value)
    if args.memory_devices:
        opts.memory_devices = tuple(int(n) for n in args.memory_devices.split(","))
    opts.profile = args.profile
    return opts
