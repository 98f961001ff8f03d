"""What an operator sees when a service cannot start: one line, the right exit status.

Every service here is a real process started by the test on loopback; a port is made
busy by a socket the test itself listens on.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.processes import free_port

HOST = "127.0.0.1"
MODULES = {"aip-session": "session_service", "aip-gateway": "gateway_service"}
PREFIXES = {"aip-session": "AIP_SESSION_", "aip-gateway": "AIP_GATEWAY_"}


def run_service(
    prog: str, *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """``prog`` run to its end (it is expected to refuse to start)."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("AIP_")}
    return subprocess.run(
        [sys.executable, "-m", MODULES[prog], "--host", HOST, *args],
        # Port 0 unless the test says otherwise (a flag wins over the environment).
        env={
            **base,
            f"{PREFIXES[prog]}PORT": "0",
            "AIP_SESSION_STORE_PATH": ":memory:",
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed start printed, asserting there is only that."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@contextmanager
def busy_port() -> Iterator[int]:
    """A loopback port this test listens on, as another server would."""
    with socket.socket() as holder:
        holder.bind((HOST, 0))
        holder.listen()
        yield int(holder.getsockname()[1])


@pytest.mark.parametrize("prog", ["aip-session", "aip-gateway"])
def test_a_busy_port_is_one_line_naming_it(prog: str) -> None:
    with busy_port() as port:
        result = run_service(prog, "--port", str(port))
    assert result.returncode == 1
    line = one_line(result)
    assert line.startswith(f"{prog}: cannot listen on {HOST}:{port}: the port is already in use")
    assert f"{PREFIXES[prog]}PORT" in line


def test_a_second_replica_cannot_share_the_port() -> None:
    port = free_port()
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "session_service",
            "--host",
            HOST,
            "--port",
            str(port),
            "--store-path",
            ":memory:",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, first)
        second = run_service("aip-session", "--port", str(port))
        assert second.returncode == 1
        assert f"cannot listen on {HOST}:{port}" in one_line(second)
        assert first.poll() is None
    finally:
        first.terminate()
        first.wait(timeout=30)


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the service exited"
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


@pytest.mark.parametrize(
    ("prog", "variable", "value", "expected"),
    [
        ("aip-session", "AIP_SESSION_COMMAND_TIMEOUT", "abc", "a valid number"),
        ("aip-session", "AIP_SESSION_PORT", "70000", "less than or equal to 65535"),
        ("aip-gateway", "AIP_GATEWAY_TASK_RATE", "fast", "a valid number"),
        ("aip-gateway", "AIP_GATEWAY_LOG_LEVEL", "loud", "'debug', 'info', 'warning' or 'error'"),
    ],
)
def test_a_bad_environment_value_is_one_line_and_exit_2(
    prog: str, variable: str, value: str, expected: str
) -> None:
    result = run_service(prog, env={variable: value})
    assert result.returncode == 2
    line = one_line(result)
    flag = "--" + variable.removeprefix(PREFIXES[prog]).lower().replace("_", "-")
    assert line.startswith(f"{prog}: {flag} ({variable}) {value!r}: ")
    assert expected in line


@pytest.mark.parametrize("prog", ["aip-session", "aip-gateway"])
def test_an_unknown_log_level_flag_lists_the_levels(prog: str) -> None:
    result = run_service(prog, "--log-level", "verbose")
    assert result.returncode == 2
    line = one_line(result)
    assert f"--log-level ({PREFIXES[prog]}LOG_LEVEL) 'verbose'" in line
    assert "'debug', 'info', 'warning' or 'error'" in line


@pytest.mark.parametrize("prog", ["aip-session", "aip-gateway"])
def test_log_levels_are_accepted_in_any_case(prog: str) -> None:
    # Valid settings: the run gets as far as the busy port, not a usage error.
    with busy_port() as port:
        result = run_service(prog, "--port", str(port), "--log-level", "WARNING")
    assert result.returncode == 1, result.stderr


@pytest.mark.parametrize("prog", ["aip-session", "aip-gateway"])
def test_an_unknown_flag_is_one_line(prog: str) -> None:
    result = run_service(prog, "--no-such-flag", "1")
    assert result.returncode == 2
    line = one_line(result)
    assert "unrecognized arguments: --no-such-flag" in line and "--help" in line


def test_a_missing_tokens_file_names_the_flag_and_variable(tmp_path: Path) -> None:
    missing = f"{tmp_path}/tokens.txt"
    result = run_service("aip-gateway", env={"AIP_GATEWAY_TOKENS_FILE": missing})
    assert result.returncode == 2
    line = one_line(result)
    assert line == (
        f"aip-gateway: --tokens-file (AIP_GATEWAY_TOKENS_FILE) {missing}: "
        "cannot be read (No such file or directory)"
    )


def test_a_missing_certificate_is_refused_at_start(tmp_path: Path) -> None:
    result = run_service(
        "aip-session", "--tls-cert", f"{tmp_path}/c.pem", "--tls-key", f"{tmp_path}/k.pem"
    )
    assert result.returncode == 2
    assert one_line(result).startswith(
        f"aip-session: --tls-cert (AIP_SESSION_TLS_CERT) {tmp_path}/c.pem: No such file"
    )


def test_a_busy_metrics_port_is_one_line_naming_the_flag() -> None:
    with busy_port() as metrics_port:
        result = run_service("aip-session", "--metrics-port", str(metrics_port))
    assert result.returncode == 1
    line = one_line(result)
    assert line.startswith(f"aip-session: cannot serve metrics on {HOST}:{metrics_port}: ")
    assert "already in use" in line and "AIP_SESSION_METRICS_PORT" in line
