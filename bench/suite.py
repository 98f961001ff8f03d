"""One benchmark run's state and plumbing: load generators, services, the tally.

:class:`Bench` starts stacks of real services (:class:`Stack`), runs load generators
against them and accounts for every error and lost ``task_end``; the measurements
themselves are :mod:`bench.measure_baselines` and :mod:`bench.figures`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from bench.common import HOST
from bench.options import Options
from bench.procs import Launcher, LoadResult, Proc, run_loadgen
from bench.report import Row


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
    #: Each repetition's baselines and details, once it is done.
    runs: list[dict[str, Any]] = field(default_factory=list)

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

    def cpu_per_op(self, name: str, rate: float | None) -> dict[str, float]:
        """CPU microseconds per operation of each process sampled during ``name``'s window,
        at ``rate`` operations per second."""
        cpu = self.details.get(name, {}).get("cpu") or {}
        if not rate:
            return {}
        return {process: share / rate * 1e6 for process, share in cpu.items()}

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
