"""The services as separate processes, for tests that kill and restart them.

Every process is started by this harness, on loopback, and ended by its own handle;
``kill()`` is a real SIGKILL, so nothing gets a chance to say goodbye.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from typing import Any

import httpx

from aip_grpc import session_api_pb2
from tests.stack import HOST, api_call, free_socket


def free_port() -> int:
    with free_socket() as sock:
        return int(sock.getsockname()[1])


class Service:
    """One service process; can be killed and started again on the same port."""

    def __init__(self, args: list[str], env: dict[str, str], capture: bool = False) -> None:
        self.args = args
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        #: With ``capture``, what the process wrote to stderr so far, line by line (read
        #: from a pipe, not a file: tests may limit the size of the files it writes).
        self.capture = capture
        self.log: list[str] = []

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, *self.args], env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE if self.capture else subprocess.DEVNULL,
        )
        if self.capture:
            threading.Thread(target=self._read_log, args=(self.process,), daemon=True).start()

    def _read_log(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self.log.append(line.decode(errors="replace").rstrip())

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


class Replica(Service):
    """A replica; its records in memory unless ``store_path`` names a file."""

    def __init__(self, grace: float = 1.0, store_path: str = ":memory:",
                 extra: tuple[str, ...] = (), capture: bool = False) -> None:
        self.port = free_port()
        super().__init__(
            ["-m", "session_service", "--host", HOST, "--port", str(self.port),
             "--gateway-grace", str(grace), "--log-level", "warning",
             "--store-path", store_path, *extra],
            {}, capture,
        )

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    async def call(self, method: str, request: Any) -> Any:
        return await api_call(self.address, method, request)

    async def running_sessions(self) -> list[Any]:
        answer = await self.call(
            "ListSessions", session_api_pb2.ListSessionsRequest(running_only=True)
        )
        return list(answer.sessions)

    async def devices(self) -> list[str]:
        answer = await self.call("ListDevices", session_api_pb2.ListDevicesRequest())
        return sorted(device.device_id for device in answer.devices)


class GatewayService(Service):
    def __init__(self, gateway_id: str, replicas: list[Replica],
                 extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.gateway_id = gateway_id
        super().__init__(
            ["-m", "gateway_service", "--host", HOST, "--port", str(self.port),
             "--gateway-id", gateway_id,
             "--session-service", ",".join(replica.address for replica in replicas),
             "--link-backoff-min", "0.05", "--link-backoff-max", "0.3",
             "--log-level", "warning", *(extra_args or [])],
            env or {},
        )

    def rss(self) -> int:
        """The process's resident set size, bytes (Linux)."""
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws"

    async def health(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"http://{HOST}:{self.port}/api/health", timeout=5)
        data: dict[str, Any] = answer.json()
        return data

    async def wait_replicas(self, count: int, timeout: float = 60.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                health = await self.health()
                if sum(1 for r in health["replicas"] if r["healthy"]) == count:
                    return
            except httpx.TransportError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{self.gateway_id} did not reach {count} healthy replicas")
            await asyncio.sleep(0.05)


class Cluster:
    """``gateways`` gateways, each linked to all of ``replicas`` replicas."""

    def __init__(self, gateways: int = 2, replicas: int = 3, grace: float = 1.0) -> None:
        self.replicas = [Replica(grace) for _ in range(replicas)]
        self.gateways = [GatewayService(f"g{n + 1}", self.replicas) for n in range(gateways)]

    async def start(self) -> Cluster:
        for service in [*self.replicas, *self.gateways]:
            service.start()
        for gateway in self.gateways:
            await gateway.wait_replicas(len(self.replicas))
        return self

    def stop(self) -> None:
        for service in [*self.gateways, *self.replicas]:
            service.stop()

    async def assert_empty(self, timeout: float = 10.0) -> None:
        """Nothing left anywhere: no client, route, presence entry or running session."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left: list[str] = []
            for gateway in self.gateways:
                if gateway.process is None or gateway.process.poll() is not None:
                    continue
                health = await gateway.health()
                if health["online_clients"] or health["active_sessions"]:
                    left.append(f"{gateway.gateway_id}: {health}")
            for replica in self.replicas:
                if replica.process is None or replica.process.poll() is not None:
                    continue
                running = await replica.running_sessions()
                devices = await replica.devices()
                if running or devices:
                    left.append(f"{replica.address}: {len(running)} running, {devices}")
            if not left:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("left behind: " + "; ".join(left))
            await asyncio.sleep(0.1)


async def wait_known(replicas: list[Replica], device_id: str, timeout: float = 10.0) -> None:
    """Wait until every replica lists ``device_id`` among its devices."""
    deadline = asyncio.get_running_loop().time() + timeout
    for replica in replicas:
        while device_id not in await replica.devices():
            assert asyncio.get_running_loop().time() < deadline, f"{device_id} unknown"
            await asyncio.sleep(0.02)
