"""The two console commands, run as real processes, carry a task end to end."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.stack import (
    answer_commands,
    cmd,
    free_socket,
    plan,
    register_constellation,
    register_device,
    task_frame,
)

BIN = os.path.dirname(sys.executable)


def _free_port() -> int:
    with free_socket() as sock:
        return int(sock.getsockname()[1])


@pytest.fixture
def services(tmp_path: Path) -> Iterator[tuple[str, int]]:
    session_port, gateway_port = _free_port(), _free_port()
    env = {**os.environ, "AIP_SESSION_LOG_LEVEL": "warning"}
    session = subprocess.Popen(
        [os.path.join(BIN, "aip-session"), "--host", "127.0.0.1", "--port", str(session_port)],
        env=env,
        # Its default store file is relative: a fresh one each run, as ids are kept in it.
        cwd=tmp_path,
    )
    # The gateway reads one flag from the environment to prove that path too.
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway_service", "--host", "127.0.0.1",
         "--port", str(gateway_port)],
        env={**env, "AIP_GATEWAY_SESSION_SERVICE": f"127.0.0.1:{session_port}"},
    )
    try:
        yield f"ws://127.0.0.1:{gateway_port}/ws", gateway_port
    finally:
        for process in (gateway, session):
            process.send_signal(signal.SIGTERM)
        for process in (gateway, session):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _wait_healthy(port: int) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(200):
            try:
                health = (await http.get(f"http://127.0.0.1:{port}/api/health")).json()
                if health["status"] == "healthy":
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("the gateway never linked to the session service")


async def test_commands_run_a_task(services: tuple[str, int]) -> None:
    url, port = services
    await _wait_healthy(port)
    device = await register_device(url, "cli-dev")
    constellation = await register_constellation(url, "cli-c", "cli-dev")
    await constellation.send(task_frame("cli-c", plan([cmd("x")]), client_type="constellation",
                                        target_id="cli-dev", session_id="s-cli"))
    assert (await constellation.recv())["session_id"] == "s-cli"
    await answer_commands(device, "cli-dev", 1)
    end = await constellation.recv_type("task_end")
    assert end["status"] == "completed"
    await device.close()
    await constellation.close()


def test_help_documents_environment_variables() -> None:
    for command, prefix in (("aip-gateway", "AIP_GATEWAY_"), ("aip-session", "AIP_SESSION_")):
        shown = subprocess.run([os.path.join(BIN, command), "--help"], capture_output=True,
                               text=True, timeout=30, check=True).stdout
        assert prefix in shown
        assert "--port" in shown and "--host" in shown
    gateway_help = subprocess.run([os.path.join(BIN, "aip-gateway"), "--help"],
                                  capture_output=True, text=True, timeout=30).stdout
    assert "--session-service" in gateway_help
