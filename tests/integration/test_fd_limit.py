"""Both services raise their soft open-file limit to the hard one at start."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.processes import free_port
from tests.stack import HOST

LOW = 256


def _lower_soft_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW, hard))


def _soft_open_files(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-file limit in /proc")


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="needs /proc")
@pytest.mark.parametrize("module", ["session_service", "gateway_service"])
def test_service_raises_its_soft_fd_limit_to_the_hard_one(module: str) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= LOW:
        pytest.skip("the hard limit leaves nothing to raise")
    args = ["--host", HOST, "--port", str(free_port()), "--log-level", "warning"]
    if module == "session_service":
        args += ["--store-path", ":memory:"]
    else:
        args += ["--session-service", f"{HOST}:{free_port()}"]
    process = subprocess.Popen([sys.executable, "-m", module, *args],
                               preexec_fn=_lower_soft_limit,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        soft = _soft_open_files(process.pid)
        while soft == LOW and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
            soft = _soft_open_files(process.pid)
        expected = hard if hard != resource.RLIM_INFINITY else 1 << 20
        assert soft == expected
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
