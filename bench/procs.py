"""Starting and stopping the processes of a run: services, baselines, load generators.

Every process is started here and stopped here by its own handle (terminate, then kill
after a grace period); nothing is ever stopped by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import orjson

from bench.common import HOST, cpu_seconds, free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def executable(name: str) -> str:
    for candidate in (BIN / name, ROOT / ".venv" / "bin" / name):
        if candidate.exists():
            return str(candidate)
    raise FileNotFoundError(f"{name} not found next to {sys.executable}; run `make setup`")


def _open_log(path: Path) -> BinaryIO:
    return open(path, "wb")


@dataclass
class Proc:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    port: int = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    async def stop(self, grace: float = 10.0) -> None:
        if self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()
        try:
            async with asyncio.timeout(grace):
                await self.process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


class Launcher:
    """Starts processes with logs under ``log_dir`` and remembers them all for cleanup."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.started: list[Proc] = []
        self._scratch: list[str] = []
        self._serial = 0

    async def spawn(self, name: str, argv: list[str], *, port: int = 0,
                    pipes: bool = False) -> Proc:
        self._serial += 1
        log_path = self.log_dir / f"{self._serial:02d}-{name}.log"
        with _open_log(log_path) as log:
            process = await asyncio.create_subprocess_exec(
                *argv, cwd=ROOT, stderr=log,
                stdout=asyncio.subprocess.PIPE if pipes else log,
                stdin=asyncio.subprocess.PIPE if pipes else asyncio.subprocess.DEVNULL,
                limit=16 * 1024 * 1024,
            )
        proc = Proc(name, process, log_path, port)
        self.started.append(proc)
        return proc

    async def stop_all(self) -> None:
        await asyncio.gather(*(proc.stop() for proc in reversed(self.started)))
        for folder in self._scratch:
            shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------------------ services

    async def session_service(self, *flags: str) -> Proc:
        port = free_port()
        # Records go to a real SQLite file, as by default; the per-device session limit
        # is lifted because some figures run many sessions on each device.
        scratch = tempfile.mkdtemp(prefix="aip-bench-")
        self._scratch.append(scratch)
        store = os.path.join(scratch, "sessions.sqlite3")
        proc = await self.spawn("session", [
            executable("aip-session"), "--host", HOST, "--port", str(port),
            "--log-level", "warning", "--store-path", store,
            "--max-running-per-device", "0", *flags], port=port)
        await wait_tcp(proc, port)
        return proc

    async def gateway(self, replicas: list[Proc], *flags: str) -> Proc:
        port = free_port()
        proc = await self.spawn("gateway", [
            executable("aip-gateway"), "--host", HOST, "--port", str(port),
            "--session-service", ",".join(f"{HOST}:{r.port}" for r in replicas),
            "--link-backoff-min", "0.05", "--link-backoff-max", "0.5",
            # Load generators submit far faster than the per-client default allows.
            "--task-rate", "1000000", "--task-burst", "1000000",
            "--log-level", "warning", *flags], port=port)
        await wait_linked(proc, len(replicas))
        return proc

    async def baseline(self, kind: str, *extra: str) -> Proc:
        port = free_port()
        proc = await self.spawn(f"baseline-{kind}", [
            sys.executable, "-m", "bench.baselines", kind, "--port", str(port), *extra],
            port=port)
        await wait_tcp(proc, port)
        return proc


async def wait_tcp(proc: Proc, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.process.returncode is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.process.returncode}); "
                               f"see {proc.log_path}")
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{proc.name} not listening on {port}") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return


async def wait_linked(proc: Proc, replicas: int, timeout: float = 30.0) -> None:
    """Wait until the gateway answers /api/health with every replica linked."""
    await wait_tcp(proc, proc.port, timeout)
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{proc.port}") as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                health = (await client.get("/api/health", timeout=5)).json()
                if sum(1 for r in health.get("replicas", ()) if r.get("healthy")) >= replicas:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway not linked to {replicas} replica(s)")
            await asyncio.sleep(0.05)


@dataclass
class LoadResult:
    result: dict[str, Any]
    #: CPU used by each sampled process inside the window, as a fraction of one core.
    cpu: dict[str, float] = field(default_factory=dict)


StageHook = Callable[[dict[str, Any]], Awaitable[None]]
WindowHook = Callable[[str], Awaitable[None]]


async def run_loadgen(launcher: Launcher, cfg: dict[str, Any], *,
                      sample: dict[str, int] | None = None,
                      on_stage: StageHook | None = None,
                      on_window: WindowHook | None = None,
                      timeout: float = 300.0) -> LoadResult:
    """Run one load-generator process to its end and return its result.

    At ``window_start``/``window_end`` the CPU time of the ``sample`` processes is read
    from /proc; at each ``stage`` ``on_stage`` runs, then the load generator is told to go on.
    """
    cfg = {"deadline": timeout - 10, **cfg}
    proc = await launcher.spawn(f"loadgen-{cfg['mode']}", [
        sys.executable, "-m", "bench.loadgen", orjson.dumps(cfg).decode()], pipes=True)
    assert proc.process.stdout is not None and proc.process.stdin is not None
    sample = sample or {}
    cpu_start: dict[str, float] = {}
    started = 0.0
    out = LoadResult(result={"failed": "no result from the load generator"})
    try:
        async with asyncio.timeout(timeout):
            async for line in proc.process.stdout:
                event = orjson.loads(line)
                kind = event.pop("event")
                if kind == "window_start":
                    started = time.monotonic()
                    cpu_start = {name: cpu_seconds(pid) for name, pid in sample.items()}
                    if on_window is not None:
                        await on_window("start")
                elif kind == "window_end":
                    elapsed = time.monotonic() - started
                    out.cpu = {name: (cpu_seconds(pid) - cpu_start[name]) / elapsed
                               for name, pid in sample.items()}
                    if on_window is not None:
                        await on_window("end")
                elif kind == "stage":
                    if on_stage is not None:
                        await on_stage(event)
                    proc.process.stdin.write(b"next\n")
                    await proc.process.stdin.drain()
                elif kind == "result":
                    out.result = event
            await proc.process.wait()
    except TimeoutError:
        out.result = {"failed": f"load generator timed out after {timeout:g}s"}
    finally:
        await proc.stop(grace=5)
    return out
