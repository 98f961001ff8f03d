"""Running the real services for tests: both in this process, on free loopback ports.

:class:`Stack` starts a session-service replica (grpc.aio) and a gateway (uvicorn) in the
test's event loop, so tests drive them over real sockets and can still look inside
(``stack.gateway.registry``, ``stack.service.manager.sessions``) to prove nothing leaks.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import uvicorn
import websockets

from aip_grpc import session_api_pb2, session_api_pb2_grpc
from gateway_service.__main__ import uvicorn_config
from gateway_service.gateway import Gateway
from gateway_service.settings import GatewaySettings
from session_service.server import SessionService
from session_service.settings import SessionSettings

HOST = "127.0.0.1"


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    return sock


class SessionReplica:
    """One session-service replica in this process."""

    def __init__(self, **overrides: Any) -> None:
        # Tests keep records in memory unless they test the store on disk.
        overrides.setdefault("store_path", ":memory:")
        self.settings = SessionSettings(host=HOST, port=0, **overrides)
        self.service = SessionService(self.settings)
        self.port = 0

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    async def start(self) -> None:
        self.port = await self.service.start()

    async def stop(self) -> None:
        await self.service.stop(grace=0.5)


class GatewayProcess:
    """The gateway's uvicorn server in this process, on a socket bound beforehand."""

    def __init__(self, session_addresses: list[str], **overrides: Any) -> None:
        self.sock = free_socket()
        self.port = self.sock.getsockname()[1]
        overrides.setdefault("link_backoff_min", 0.05)
        overrides.setdefault("link_backoff_max", 0.5)
        self.settings = GatewaySettings(
            host=HOST, port=self.port, session_service=",".join(session_addresses), **overrides
        )
        config = uvicorn_config(self.settings)
        self.app = config.app
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._task: asyncio.Task[None] | None = None

    @property
    def gateway(self) -> Gateway:
        gateway: Gateway = self.app.state.gateway
        return gateway

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self.server.serve(sockets=[self.sock])
        )
        while not self.server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)

    async def wait_linked(self, count: int = 1, timeout: float = 10.0) -> None:
        await wait_for(lambda: len(self.gateway.healthy_links()) >= count, timeout)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            try:
                async with asyncio.timeout(10):
                    await self._task
            except TimeoutError:
                self._task.cancel()
        self.sock.close()


class Stack:
    """A replica and a gateway linked to it."""

    def __init__(self, gateway: dict[str, Any] | None = None,
                 session: dict[str, Any] | None = None) -> None:
        self.replica = SessionReplica(**(session or {}))
        self._gateway_overrides = gateway or {}
        self.gw: GatewayProcess | None = None

    @property
    def gateway(self) -> Gateway:
        assert self.gw is not None
        return self.gw.gateway

    @property
    def service(self) -> SessionService:
        return self.replica.service

    @property
    def ws_url(self) -> str:
        assert self.gw is not None
        return self.gw.ws_url

    @property
    def http_url(self) -> str:
        assert self.gw is not None
        return self.gw.http_url

    async def start(self) -> Stack:
        await self.replica.start()
        self.gw = GatewayProcess([self.replica.address], **self._gateway_overrides)
        await self.gw.start()
        await self.gw.wait_linked()
        return self

    async def stop(self) -> None:
        if self.gw is not None:
            await self.gw.stop()
        await self.replica.stop()


def no_running_sessions(stack: Stack) -> bool:
    """The stack's replica runs no session and counts none as active."""
    manager = stack.service.manager
    return not any(s.running for s in manager.sessions.values()) and manager.active == 0


async def wait_for(
    condition: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01,
    what: str = "condition",
) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(interval)


async def api_call(address: str, method: str, request: Any,
                   metadata: tuple[tuple[str, str], ...] = ()) -> Any:
    """One call of the public gRPC API (``SessionApi.<method>``) on a fresh channel."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = session_api_pb2_grpc.SessionApiStub(channel)
        return await getattr(stub, method)(request, timeout=5, metadata=metadata)


async def get_session(address: str, session_id: str) -> session_api_pb2.SessionInfo:
    """``GetSession`` on the replica at ``address``."""
    info: session_api_pb2.SessionInfo = await api_call(
        address, "GetSession", session_api_pb2.GetSessionRequest(session_id=session_id))
    return info


# ---------------------------------------------------------------- AIP test clients


class Client:
    """A raw AIP client over a real WebSocket, with frames as dicts."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, url: str) -> Client:
        return cls(await websockets.connect(url, max_size=None))

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            raw = await self.ws.recv()
        frame: dict[str, Any] = json.loads(raw)
        return frame

    async def recv_type(self, frame_type: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame of ``frame_type``, skipping others (heartbeat acks, say)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            frame = await self.recv(max(left, 0.001))
            if frame["type"] == frame_type:
                return frame

    async def expect_silence(self, seconds: float = 0.3) -> None:
        try:
            async with asyncio.timeout(seconds):
                frame = await self.ws.recv()
        except TimeoutError:
            return
        raise AssertionError(f"unexpected frame: {frame!r}")

    async def close(self) -> None:
        await self.ws.close()


def register_frame(client_id: str, client_type: str = "device", **fields: Any) -> dict[str, Any]:
    """A register frame as the reference clients send it: every field, most null."""
    frame: dict[str, Any] = {
        "type": "register",
        "status": "ok",
        "client_type": client_type,
        "client_id": client_id,
        "session_id": None,
        "task_name": None,
        "target_id": None,
        "request": None,
        "action_results": None,
        "timestamp": "2026-01-01T00:00:00+00:00",
        "request_id": None,
        "prev_response_id": None,
        "error": None,
        "metadata": {"platform": "linux", "system_info": {"os": "Linux", "cpu_count": 2}},
    }
    frame.update(fields)
    return frame


async def register_device(url: str, client_id: str, **fields: Any) -> Client:
    client = await Client.connect(url)
    await client.send(register_frame(client_id, "device", **fields))
    confirmation = await client.recv()
    assert confirmation["type"] == "heartbeat" and confirmation["status"] == "ok", confirmation
    return client


async def register_constellation(url: str, client_id: str, target_id: str | None,
                                 **fields: Any) -> Client:
    client = await Client.connect(url)
    await client.send(register_frame(client_id, "constellation", target_id=target_id, **fields))
    confirmation = await client.recv()
    assert confirmation["type"] == "heartbeat" and confirmation["status"] == "ok", confirmation
    return client


def task_frame(client_id: str, request: Any, *, client_type: str = "device",
               target_id: str | None = None, session_id: str | None = None,
               task_name: str | None = "t1") -> dict[str, Any]:
    return {
        "type": "task",
        "status": "continue",
        "client_type": client_type,
        "client_id": client_id,
        "target_id": target_id,
        "session_id": session_id,
        "task_name": task_name,
        "request": request if isinstance(request, str) else json.dumps(request),
    }


def results_for(command: dict[str, Any], client_id: str, *, status: str = "success",
                result: Any = "ok") -> dict[str, Any]:
    """The command_results frame a device answers ``command`` with."""
    return {
        "type": "command_results",
        "status": command.get("status", "continue"),
        "client_type": "device",
        "client_id": client_id,
        "session_id": command["session_id"],
        "prev_response_id": command["response_id"],
        "action_results": [
            {"status": status, "error": None if status == "success" else "boom",
             "result": result, "namespace": None, "call_id": action["call_id"]}
            for action in command["actions"]
        ],
    }


Answer = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]


async def answer_commands(device: Client, client_id: str, count: int,
                          status: str = "success") -> list[dict[str, Any]]:
    """Answer the next ``count`` commands the device receives; returns them."""
    commands = []
    for _ in range(count):
        command = await device.recv_type("command")
        commands.append(command)
        await device.send(results_for(command, client_id, status=status))
    return commands


def plan(*steps: list[dict[str, Any]], **options: Any) -> str:
    return json.dumps({"steps": list(steps), **options})


def cmd(tool_name: str = "echo", **parameters: Any) -> dict[str, Any]:
    return {"tool_name": tool_name, "parameters": parameters, "tool_type": "action"}
