"""Small helpers shared by the orchestrator, the baseline servers and the load generators."""

from __future__ import annotations

import os
import resource
import socket
import sys
from typing import Any

import orjson

HOST = "127.0.0.1"
#: The raw gRPC method the bare echo servers serve (bytes in, bytes out, no protobuf).
ECHO_METHOD = "/bench.Echo/Echo"
#: A command each plan step sends: what a small real plan looks like.
PLAN_COMMAND = {"tool_name": "echo", "parameters": {"text": "hello"}, "tool_type": "action"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def emit(event: str, **fields: Any) -> None:
    """One JSON line on stdout: how a load generator talks to the orchestrator."""
    sys.stdout.write(orjson.dumps({"event": event, **fields}).decode() + "\n")
    sys.stdout.flush()


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values`` (nearest rank); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100.0 * (len(ordered) - 1))))
    return ordered[rank]


def latency_summary(seconds: list[float]) -> dict[str, Any]:
    """p50/p90/p99/mean in microseconds of a list of durations in seconds."""
    if not seconds:
        return {"count": 0}
    ordered = sorted(seconds)
    return {
        "count": len(ordered),
        "p50_us": percentile(ordered, 50) * 1e6,
        "p90_us": percentile(ordered, 90) * 1e6,
        "p99_us": percentile(ordered, 99) * 1e6,
        "mean_us": sum(ordered) / len(ordered) * 1e6,
        "max_us": ordered[-1] * 1e6,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (from /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (VmRSS from /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
