"""Figures 8 and 9: a whole fleet on one gateway, and sessions shaped as the reference's.

How each is measured is in :mod:`bench.run`; both record rows on the run's
:class:`bench.suite.Bench`.
"""

from __future__ import annotations

import asyncio
import math
import os
import resource
import time
from typing import Any

from bench.common import cpu_seconds, rss_kib
from bench.modes_fleet import REFERENCE_CADENCE
from bench.report import Row, check
from bench.suite import Bench

#: Connections one loopback source address takes towards one server port, with room to
#: spare under the default ephemeral range (32768-60999).
PER_SOURCE = 25_000
#: Descriptors each process keeps for what is not a device socket.
FD_SPARE = 1_000


def fleet_size(wanted: int) -> tuple[int, int]:
    """How many devices the machine lets one gateway hold: ``(devices, open-file limit)``.

    The gateway and the load generator each hold one descriptor per device; neither may
    go past the hard ``RLIMIT_NOFILE`` that every process here inherits.
    """
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    limit = (1 << 20) if hard == resource.RLIM_INFINITY else int(hard)
    return max(0, min(wanted, limit - FD_SPARE)), limit


async def figure_8(bench: Bench) -> None:
    opts = bench.opts
    count, limit = fleet_size(opts.fleet_devices)
    sources = [f"127.0.0.{2 + n}" for n in range(math.ceil(count / PER_SOURCE))]
    marks: dict[str, dict[str, float]] = {}
    async with bench.stack() as stack:
        gateway = stack.gateway.pid
        await asyncio.sleep(0.5)
        start_rss = rss_kib(gateway)

        async def stage(event: dict[str, Any]) -> None:
            if event["stage"] == "registered":
                await asyncio.sleep(1.0)  # the last registrations' work is done
            marks[event["stage"]] = {"t": time.monotonic(), "cpu": cpu_seconds(gateway),
                                     "rss_kib": rss_kib(gateway)}

        r = await bench.load("fig8_fleet", {
            "mode": "fleet", "url": stack.ws_url, "session_addresses": stack.addresses,
            "devices": count, "source_hosts": sources, "concurrency": 200,
            "idle_s": opts.fleet_idle, "sweep_s": opts.fleet_sweep, "sessions": 20,
            "steps": 50, "run_id": os.urandom(3).hex()}, on_stage=stage, timeout=1200)
    devices = int(r["devices"])
    reg, idle, beats = marks["registered"], marks["idle"], marks["heartbeats"]
    per_device_kib = (reg["rss_kib"] - start_rss) / max(devices, 1)
    idle_share = (idle["cpu"] - reg["cpu"]) / (idle["t"] - reg["t"])
    sweep_s = beats["t"] - idle["t"]
    acked = int(r["heartbeats"]["acked"])
    per_beat_us = max(0.0, (beats["cpu"] - idle["cpu"]) - idle_share * sweep_s) / max(
        acked, 1) * 1e6
    full = opts.fleet_devices
    scale = full / max(devices, 1)
    rss_gib = (start_rss + per_device_kib * full) / 2**20
    cadence_share = idle_share * scale + per_beat_us * 1e-6 * full / REFERENCE_CADENCE
    projected = devices < full
    note = (f"projected from {devices:,} devices (open-file limit {limit:,}; "
            f"{len(sources)} source address(es))" if projected
            else f"{len(sources)} source addresses")
    bench.details["fig8_fleet"].update(
        marks=marks, start_rss_kib=start_rss, kib_per_device=per_device_kib,
        idle_share=idle_share, cpu_us_per_heartbeat=per_beat_us, open_file_limit=limit)
    bench.say(f"  {devices:,} devices: {per_device_kib:.1f} KiB each, idle {idle_share:.1%} "
              f"of a core, {per_beat_us:.0f} us CPU per heartbeat, registrations "
              f"{r['registration_rate']:,.0f}/s, round trip p50 "
              f"{r['round_trip'].get('p50_us', float('nan')):.0f} us")
    bench.rows.append(Row("8", f"gateway RSS with {full:,} idle devices", rss_gib, "GiB",
                          target="<= 2.5 GiB", passed=check(rss_gib, at_most=2.5),
                          note=note))
    bench.rows.append(Row("8", f"gateway CPU, {full:,} devices at a {REFERENCE_CADENCE:g} s "
                          "heartbeat", cadence_share * 100, "% core", target="<= 25%",
                          passed=check(cadence_share, at_most=0.25),
                          note=f"idle {idle_share:.1%} of a core with {devices:,}; "
                          f"{per_beat_us:.0f} us per heartbeat; {note}"))
    bench.rows.append(Row("8", f"registrations/s into {devices:,} devices",
                          r["registration_rate"], "/s",
                          bench.base.get("ws_connect", {}).get("rate"),
                          "echo connect+round trip"))
    bench.rows.append(Row("8", f"command round trip p50 to a random one of {devices:,} "
                          "devices", r["round_trip"].get("p50_us"), "us",
                          note=f"p99 {r['round_trip'].get('p99_us', float('nan')):.0f} us"))


async def figure_9(bench: Bench) -> None:
    opts = bench.opts
    async with bench.stack() as stack:
        r = await bench.load("fig9_reference_sessions", {
            "mode": "sessions", "kind": "throughput", "url": stack.ws_url,
            "session_addresses": stack.addresses, "devices": opts.devices, "steps": 4,
            "reference": True, "result_bytes": 1_000_000}, sample=stack.sample)
    cpu = bench.details["fig9_reference_sessions"].get("cpu") or {}
    per_session = {name: share / max(r["rate"], 1e-9) * 1e3 for name, share in cpu.items()}
    text = ", ".join(f"{name} {ms:.1f}" for name, ms in per_session.items())
    bench.say(f"  reference-shaped sessions, {opts.devices} devices: {r['rate']:,.1f}/s; "
              f"CPU ms per session: {text}")
    bench.rows.append(Row("9", f"reference-shaped sessions/s (list_tools + 4 x 1 MB "
                          f"screenshots), {opts.devices} devices", r["rate"], "/s",
                          note=f"CPU ms/session {text}",
                          cpu_us={n: ms * 1e3 for n, ms in per_session.items()}))
