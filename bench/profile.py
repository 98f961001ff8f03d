"""Sampling profiles of the services under load (``python -m bench --profile``).

py-spy (``pip install py-spy``) samples a service during the measured window of the
figure 1 throughput run, without pausing it (``--nonblocking``), and writes collapsed
stacks. :func:`summarize` turns those into the functions with the most samples: *self*
(the function was on top of the stack) and *total* (it was anywhere on the stack), as a
percentage of the samples in which the process was busy.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.procs import BIN, Launcher, Proc

_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy() -> str | None:
    candidate = BIN / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


async def start(launcher: Launcher, target: Proc, duration: float, out: Path) -> Proc | None:
    tool = py_spy()
    if tool is None:
        print("  (py-spy not installed: .venv/bin/pip install py-spy)", file=sys.stderr)
        return None
    return await launcher.spawn(f"py-spy-{target.name}", [
        tool, "record", "--pid", str(target.pid), "--duration", str(max(1, int(duration))),
        "--rate", "200", "--nonblocking", "--format", "raw", "--output", str(out)])


async def finish(proc: Proc | None, timeout: float = 60.0) -> None:
    if proc is None:
        return
    try:
        async with asyncio.timeout(timeout):
            await proc.process.wait()
    except TimeoutError:
        await proc.stop()


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path})"


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    """Top functions by self and total samples from a py-spy ``raw`` (collapsed) file."""
    if not path.exists():
        return {"error": f"no profile at {path}"}
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        count = int(match[2])
        frames = [_short(f) for f in match[1].split(";")
                  if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += count
        self_counts[frames[-1]] += count
        for name in set(frames):
            total_counts[name] += count
    if not samples:
        return {"samples": 0}

    def table(counts: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": name, "percent": round(100.0 * n / samples, 1)}
                for name, n in counts.most_common(top)]

    return {"samples": samples, "self": table(self_counts), "total": table(total_counts),
            "file": str(path)}
