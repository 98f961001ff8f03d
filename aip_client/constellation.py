"""The constellation client: send devices work and collect the outcome.

:class:`ConstellationClient` registers as a constellation (optionally with a
``target_id``, required to ask that device's info), dispatches tasks to devices and awaits
their ``task_end``; any number of tasks may run at once on one connection. Frames are
correlated by ``session_id`` (task ack and end) and ``request_id``/``response_id`` (device
info).

Example::

    async with ConstellationClient(url, target_id="my-laptop") as client:
        info = await client.device_info()
        result = await client.run_task({"steps": [[{"tool_name": "get_system_info"}]]},
                                       timeout=60)
        print(result.status, result.result)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from aip_client import wire
from aip_client.device import RegistrationRefused
from aip_wire.vocab import ClientType, MessageType, Status

log = logging.getLogger("aip.client.constellation")

Request = str | dict[str, Any] | list[Any]


class TaskRefused(Exception):
    """The server refused a task (an ``error`` frame for its session)."""


class DeviceInfoError(Exception):
    """The server answered a device-info request with an error."""


@dataclass(frozen=True, slots=True)
class TaskResult:
    """A task's outcome, from its ``task_end`` frame."""

    session_id: str
    task_name: str | None
    status: str  # completed or failed
    result: Any
    error: str | None
    frame: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == Status.COMPLETED


@dataclass(eq=False)
class TaskHandle:
    """A dispatched task: :attr:`acked` resolves on the server's ack, :meth:`wait` on
    its ``task_end``."""

    session_id: str
    task_name: str
    target_id: str
    acked: asyncio.Future[None]
    ended: asyncio.Future[TaskResult]

    async def wait(self, timeout: float | None = None) -> TaskResult:
        """The task's result. :raises TimeoutError: no ``task_end`` within ``timeout``;
        :raises TaskRefused: the server refused it; :raises ConnectionError: the
        connection dropped first."""
        async with asyncio.timeout(timeout):
            return await asyncio.shield(self.ended)

    def done(self) -> bool:
        return self.ended.done()


def default_client_id() -> str:
    return f"aip-constellation-{socket.gethostname()}-{uuid.uuid4().hex[:6]}"


class ConstellationClient:
    """An AIP constellation on one WebSocket connection.

    :param url: the server's WebSocket URL.
    :param client_id: this constellation's identity (default: host name plus random).
    :param target_id: the device it works with: tasks go there unless told otherwise and
        device info may only be asked about it. It must be connected at registration.
    :param token: credentials, sent as ``?token=`` on the URL.
    :param heartbeat_interval: seconds between heartbeats (one is sent at once).
    :param on_frame: called with every valid server frame.
    """

    def __init__(
        self,
        url: str,
        client_id: str | None = None,
        target_id: str | None = None,
        *,
        token: str | None = None,
        metadata: dict[str, Any] | None = None,
        heartbeat_interval: float = 30.0,
        register_timeout: float = 30.0,
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        on_frame: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.url = wire.with_token(url, token)
        self.client_id = client_id or default_client_id()
        self.target_id = target_id
        self.metadata = metadata if metadata is not None else {"type": "aip_client"}
        self.heartbeat_interval = heartbeat_interval
        self.register_timeout = register_timeout
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.on_frame = on_frame
        self.errors: list[str] = []  # error frames not tied to a pending task

        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._tasks: dict[str, TaskHandle] = {}
        self._info: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._closed_reason: str | None = None

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> ConstellationClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect and register. :raises RegistrationRefused: the server said no (for
        example the target device is not connected); :raises OSError, TimeoutError."""
        ws = await connect(self.url, open_timeout=self.open_timeout, max_size=None,
                           ping_interval=self.ping_interval,
                           ping_timeout=self.ping_interval, close_timeout=2)
        try:
            await ws.send(wire.encode(wire.register_frame(
                self.client_id, ClientType.CONSTELLATION, self.metadata, target_id=self.target_id
            )))
            async with asyncio.timeout(self.register_timeout):
                await self._confirmation(ws)
        except BaseException:
            await ws.close()
            raise
        self._ws = ws
        self._closed_reason = None
        self._reader = asyncio.ensure_future(self._read(ws))
        self._heartbeat = asyncio.ensure_future(self._heartbeats(ws))

    @staticmethod
    async def _confirmation(ws: ClientConnection) -> None:
        while True:
            try:
                message = await ws.recv()
            except ConnectionClosed as exc:
                raise RegistrationRefused(f"connection closed during registration: {exc}")\
                    from exc
            frame = wire.parse_server_frame(message)
            if frame is None:
                continue
            if frame["type"] == MessageType.HEARTBEAT and frame["status"] == Status.OK:
                return
            if frame["type"] == MessageType.ERROR or frame["status"] == Status.ERROR:
                raise RegistrationRefused(frame.get("error") or "registration refused")

    async def close(self) -> None:
        for task in (self._heartbeat, self._reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._ws.close()
        self._ws = None
        self._fail_pending(ConnectionError("the client was closed"))

    @property
    def connected(self) -> bool:
        return self._ws is not None and self._closed_reason is None

    # ---------------------------------------------------------------- API

    async def dispatch(
        self,
        request: Request,
        *,
        target_id: str | None = None,
        task_name: str | None = None,
        session_id: str | None = None,
        ack_timeout: float | None = 30.0,
    ) -> TaskHandle:
        """Send a task to a device and wait for the server's ack.

        :param request: the task: a plan as JSON text or as a dict/list.
        :param target_id: the device (default: the registered ``target_id``).
        :raises TaskRefused: the server refused it; :raises TimeoutError: no ack.
        """
        target = target_id or self.target_id
        if not target:
            raise ValueError("no target device: give target_id")
        text = request if isinstance(request, str) else json.dumps(request)
        session = session_id or f"{self.client_id}@t-{uuid.uuid4().hex[:8]}"
        name = task_name or f"t-{uuid.uuid4().hex[:8]}"
        if session in self._tasks:
            raise ValueError(f"session {session!r} is already in flight")
        loop = asyncio.get_running_loop()
        handle = TaskHandle(session, name, target, loop.create_future(), loop.create_future())
        handle.acked.add_done_callback(_consume)
        handle.ended.add_done_callback(_consume)
        self._tasks[session] = handle
        handle.ended.add_done_callback(lambda _: self._tasks.pop(session, None))
        try:
            await self._send(wire.task_frame(self.client_id, text, task_name=name,
                                             session_id=session,
                                             client_type=ClientType.CONSTELLATION,
                                             target_id=target))
            async with asyncio.timeout(ack_timeout):
                await asyncio.shield(handle.acked)
        except BaseException as exc:
            self._tasks.pop(session, None)
            if not handle.ended.done():
                handle.ended.set_exception(
                    exc if isinstance(exc, Exception) else ConnectionError("cancelled"))
            raise
        return handle

    async def run_task(
        self,
        request: Request,
        *,
        target_id: str | None = None,
        task_name: str | None = None,
        session_id: str | None = None,
        timeout: float | None = None,
    ) -> TaskResult:
        """Dispatch a task and wait for its end. :raises TimeoutError: no ``task_end``
        within ``timeout`` seconds (counted from dispatch)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        handle = await self.dispatch(request, target_id=target_id, task_name=task_name,
                                     session_id=session_id, ack_timeout=timeout or 30.0)
        left = None if deadline is None else max(0.0, deadline - loop.time())
        return await handle.wait(left)

    async def device_info(self, device_id: str | None = None,
                          timeout: float = 10.0) -> dict[str, Any]:
        """A device's info as the server holds it (default: the registered target).

        :raises DeviceInfoError: the server refused or does not know the device.
        """
        target = device_id or self.target_id
        if not target:
            raise ValueError("no device: give device_id")
        request_id = wire.new_id()
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)
        self._info[request_id] = future
        try:
            await self._send(wire.device_info_request_frame(self.client_id, target,
                                                            request_id))
            async with asyncio.timeout(timeout):
                return await asyncio.shield(future)
        finally:
            self._info.pop(request_id, None)

    async def send_heartbeat(self) -> None:
        await self._send(wire.heartbeat_frame(self.client_id, ClientType.CONSTELLATION))

    # ---------------------------------------------------------------- internals

    async def _send(self, frame: dict[str, Any]) -> None:
        if self._ws is None or self._closed_reason is not None:
            raise ConnectionError(self._closed_reason or "not connected")
        await self._ws.send(wire.encode(frame))

    async def _heartbeats(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed, ConnectionError):
            while True:
                await self._send(wire.heartbeat_frame(self.client_id, ClientType.CONSTELLATION))
                await asyncio.sleep(self.heartbeat_interval)

    async def _read(self, ws: ClientConnection) -> None:
        reason = "connection closed"
        try:
            async for message in ws:
                frame = wire.parse_server_frame(message)
                if frame is None:
                    log.debug("dropped an invalid frame: %.200r", message)
                    continue
                if self.on_frame is not None:
                    try:
                        self.on_frame(frame)
                    except Exception:
                        log.exception("on_frame callback failed")
                self._route(frame)
            reason = f"connection closed ({ws.close_code} {ws.close_reason})".strip()
        except ConnectionClosed as exc:
            reason = f"connection lost: {exc}"
        finally:
            self._closed_reason = reason
            self._fail_pending(ConnectionError(reason))

    def _route(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        session_id = frame.get("session_id")
        handle = self._tasks.get(session_id) if isinstance(session_id, str) else None
        if kind == MessageType.HEARTBEAT:
            if handle is not None and not handle.acked.done():
                handle.acked.set_result(None)
        elif kind == MessageType.TASK_END:
            if handle is None:
                log.debug("task_end for an unknown session %r", session_id)
                return
            if not handle.acked.done():
                handle.acked.set_result(None)
            if not handle.ended.done():
                handle.ended.set_result(TaskResult(
                    session_id=handle.session_id,
                    task_name=frame.get("task_name") or handle.task_name,
                    status=frame["status"] if frame["status"] in
                    (Status.COMPLETED, Status.FAILED) else Status.FAILED,
                    result=frame.get("result"),
                    error=frame.get("error"),
                    frame=frame,
                ))
        elif kind == MessageType.DEVICE_INFO_RESPONSE:
            future = self._info.get(frame.get("response_id") or "")
            if future is None or future.done():
                return
            if frame["status"] == Status.ERROR or frame.get("error"):
                future.set_exception(DeviceInfoError(frame.get("error") or "refused"))
            else:
                result = frame.get("result")
                future.set_result(result if isinstance(result, dict) else {"info": result})
        elif kind == MessageType.ERROR:
            error = frame.get("error") or "error"
            if handle is not None and not handle.acked.done():
                refused = TaskRefused(error)
                handle.acked.set_exception(refused)
                handle.ended.set_exception(refused)
            else:
                log.warning("server error: %s", error)
                self.errors.append(error)

    def _fail_pending(self, exc: Exception) -> None:
        for handle in list(self._tasks.values()):
            for future in (handle.acked, handle.ended):
                if not future.done():
                    future.set_exception(exc)
        self._tasks.clear()
        for info in self._info.values():
            if not info.done():
                info.set_exception(exc)


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as retrieved (nobody may be awaiting it)."""
    if not future.cancelled():
        future.exception()
