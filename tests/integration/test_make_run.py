"""``make run``: both services in the foreground; non-zero when either fails to start,
both stopped by SIGTERM.

Run as ``make run`` when the tests run from the repository's own ``.venv`` (as ``make
test`` and CI do); from any other environment the same ``scripts/run-services.sh`` that
``make run`` calls, with that environment's console scripts, so that ``make`` never
installs into an environment it does not own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def run_command(session_port: int, gateway_port: int) -> list[str]:
    if Path(sys.prefix).resolve() == (ROOT / ".venv").resolve():
        return [
            "make",
            "--no-print-directory",
            "run",
            f"SESSION_PORT={session_port}",
            f"GATEWAY_PORT={gateway_port}",
        ]
    return [
        "bash",
        str(ROOT / "scripts" / "run-services.sh"),
        str(Path(sys.executable).parent),
        HOST,
        str(session_port),
        HOST,
        str(gateway_port),
    ]


@contextmanager
def started(session_port: int, gateway_port: int) -> Iterator[subprocess.Popen[str]]:
    """``make run`` in its own process group; whatever is left of that group is killed
    on the way out (it holds only what this test started)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIP_")}
    process = subprocess.Popen(
        run_command(session_port, gateway_port),
        cwd=ROOT,
        text=True,
        # PYTHONPATH: the console scripts import this checkout, whichever one the
        # environment was installed from.
        env={
            **env,
            "PYTHONPATH": str(ROOT),
            "AIP_SESSION_STORE_PATH": ":memory:",
            "AIP_SESSION_DRAIN_TIMEOUT": "2",
            "AIP_GATEWAY_DRAIN_TIMEOUT": "2",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        # The services too, should one have outlived make.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@contextmanager
def busy(port: int) -> Iterator[None]:
    with socket.socket() as holder:
        holder.bind((HOST, port))
        holder.listen()
        yield


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def test_make_run_fails_when_the_gateway_port_is_busy() -> None:
    session_port, gateway_port = free_port(), free_port()
    with busy(gateway_port), started(session_port, gateway_port) as process:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode != 0, stderr
        assert f"aip-gateway: cannot listen on {HOST}:{gateway_port}" in stderr
        assert "aip-gateway exited with status 1; stopping aip-session" in stderr
        assert "Traceback" not in stderr
    assert port_free(session_port), "the session service outlived make run"


def test_make_run_fails_when_the_session_port_is_busy() -> None:
    session_port, gateway_port = free_port(), free_port()
    with busy(session_port), started(session_port, gateway_port) as process:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode != 0, stderr
        assert f"aip-session: cannot listen on {HOST}:{session_port}" in stderr
        assert "Traceback" not in stderr
    assert port_free(gateway_port), "the gateway outlived make run"


def test_sigterm_stops_both_services() -> None:
    session_port, gateway_port = free_port(), free_port()
    with started(session_port, gateway_port) as process:
        _wait_healthy(gateway_port, process)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        assert "Traceback" not in stderr
    assert port_free(session_port) and port_free(gateway_port)


def _wait_healthy(port: int, process: subprocess.Popen[str], timeout: float = 90) -> None:
    """Until the gateway answers healthy, i.e. both services are up and linked."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            answer = httpx.get(f"http://{HOST}:{port}/api/health", timeout=2)
            if answer.json().get("status") == "healthy":
                return
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError("make run never became healthy")


def _old_python(tmp_path: Path) -> Path:
    """A stand-in interpreter that reports Python 3.10 and fails every version check."""
    fake = tmp_path / "python3.10"
    fake.write_text(
        '#!/bin/sh\nif [ "$1" = --version ]; then echo "Python 3.10.12"; exit 0; fi\nexit 1\n'
    )
    fake.chmod(0o755)
    return fake


def _make_setup(venv: Path, python: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(ROOT),
            "setup",
            f"VENV={venv}",
            f"PYTHON={python}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_make_refuses_an_old_python_and_says_how_to_get_one(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    result = _make_setup(venv, _old_python(tmp_path))
    assert result.returncode != 0
    assert "needs Python 3.11 or newer" in result.stderr
    assert "Python 3.10.12" in result.stderr and "PYTHON=" in result.stderr
    assert not venv.exists()


def test_a_venv_without_pip_is_not_trusted(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60
    )
    (venv / ".installed").touch()
    checker = ROOT / "scripts" / "venv-ok.sh"
    assert subprocess.run(["bash", str(checker), str(venv / "bin" / "python")]).returncode == 1
    assert subprocess.run(["bash", str(checker), sys.executable]).returncode == 0
    # make drops the marker of the broken venv and goes on to rebuild it, which here
    # stops at the interpreter check (rebuilding for real is an install of minutes).
    result = _make_setup(venv, _old_python(tmp_path))
    assert not (venv / ".installed").exists()
    assert result.returncode != 0 and "needs Python 3.11 or newer" in result.stderr


def test_ctrl_c_drains_both_services_once() -> None:
    """SIGINT to the whole process group, as a terminal sends it: each service gets it
    once and drains, rather than taking a forwarded copy for a second signal."""
    session_port, gateway_port = free_port(), free_port()
    with started(session_port, gateway_port) as process:
        _wait_healthy(gateway_port, process)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert "shutting down: draining" in stderr
        assert "second signal" not in stderr
        assert "Traceback" not in stderr
    assert port_free(session_port) and port_free(gateway_port)
