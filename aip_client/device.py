"""The device runtime: connect, register, heartbeat, run commands, reconnect forever.

:class:`DeviceClient` keeps one WebSocket to an AIP server. It registers with its
platform and system info, heartbeats on an interval, and runs every ``command`` frame's
actions through a :class:`~aip_client.tools.ToolRegistry`, answering each with one
``command_results`` frame. Commands run as tasks of their own, so a long tool never
delays heartbeats or other commands. After any drop it reconnects with jittered
exponential backoff and registers again under the same ``client_id`` (the server lets the
newer connection take over the stale one).

Example::

    registry = builtin_registry()

    @registry.tool()
    def greet(name: str) -> str:
        return f"hello {name}"

    async with DeviceClient("ws://127.0.0.1:8000/ws", "my-laptop", registry):
        await asyncio.Event().wait()  # serve until cancelled
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from aip_client import wire
from aip_client.redact import redact, server_text
from aip_client.refusals import PermanentRefusal, judge_close, judge_http_status
from aip_client.running import RunningWork
from aip_client.tools import ToolRegistry, builtin_registry, platform_name, system_info
from aip_wire.vocab import ClientType, CloseCode, MessageType, ResultStatus, Status

log = logging.getLogger("aip.client.device")

#: Close code a server uses when a newer connection with the same client_id took over.
MAX_UNSENT_RESULTS = 256

Metadata = dict[str, Any] | Callable[[], dict[str, Any]]
FrameCallback = Callable[[dict[str, Any]], Awaitable[None] | None]


class RegistrationRefused(Exception):
    """The server answered ``register`` with an error (or not with ``heartbeat``/``ok``);
    ``close_code`` is the code it closed the socket with right after, if it did."""

    def __init__(self, message: str, close_code: int | None = None) -> None:
        super().__init__(message)
        self.close_code = close_code


def backoff_delay(attempt: int, minimum: float, maximum: float,
                  rng: random.Random | None = None) -> float:
    """Jittered exponential backoff: ``minimum * 2**attempt`` capped at ``maximum``,
    then a random value between half of it and all of it."""
    ceiling = min(maximum, minimum * (2 ** min(attempt, 30)))
    return (rng or random).uniform(ceiling / 2, ceiling)


def default_metadata() -> dict[str, Any]:
    """Registration metadata: the platform and this machine's system info."""
    return {"platform": platform_name(), "system_info": system_info()}


class DeviceClient:
    """An AIP device that serves commands with a tool registry, reconnecting forever.

    :param url: the server's WebSocket URL, e.g. ``ws://127.0.0.1:8000/ws``.
    :param client_id: this device's identity.
    :param tools: the tools it serves (default: :func:`builtin_registry` without shell).
    :param token: credentials, sent as ``?token=`` on the URL.
    :param metadata: registration metadata, or a function giving it (called at each
        registration and push); default :func:`default_metadata`.
    :param heartbeat_interval: seconds between ``heartbeat`` frames.
    :param info_interval: seconds between device-info pushes (``None``: only on request).
    :param backoff_min, backoff_max: reconnect delays (jittered, doubling).
    :param register_timeout: seconds to wait for the registration confirmation.
    :param ping_interval: WebSocket ping interval (``None`` disables pings).
    :param stop_on_takeover: stop instead of reconnecting when another connection with
        the same ``client_id`` takes over (close code 4000).
    :param on_frame: called with every valid server frame (for logging or UIs).
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        tools: ToolRegistry | None = None,
        *,
        token: str | None = None,
        metadata: Metadata | None = None,
        heartbeat_interval: float = 30.0,
        info_interval: float | None = None,
        backoff_min: float = 0.5,
        backoff_max: float = 30.0,
        register_timeout: float = 30.0,
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        stop_on_takeover: bool = False,
        on_frame: FrameCallback | None = None,
    ) -> None:
        if not client_id:
            raise ValueError("client_id is required")
        self.url = wire.with_token(url, token)
        self.client_id = client_id
        self.tools = tools if tools is not None else builtin_registry()
        self._metadata = metadata
        self.heartbeat_interval = heartbeat_interval
        self.info_interval = info_interval
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.register_timeout = register_timeout
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.stop_on_takeover = stop_on_takeover
        self.on_frame = on_frame

        #: Set while registered; cleared on every drop.
        self.registered = asyncio.Event()
        #: How many times registration succeeded (1 + reconnects).
        self.registrations = 0
        #: Heartbeat acknowledgements received (plain ones, not task acks).
        self.heartbeat_acks = 0
        #: Commands answered.
        self.commands_done = 0
        self.last_error: str | None = None

        self._ws: ClientConnection | None = None
        self._send_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        #: Commands and pushes in flight; a session's end cancels its commands.
        self.work = RunningWork()
        self._unsent: list[dict[str, Any]] = []

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> DeviceClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, wait: bool = True, timeout: float = 30.0) -> None:
        """Run in the background; with ``wait``, return once registered."""
        if self._runner is None or self._runner.done():
            self._stopping.clear()
            self._runner = asyncio.get_running_loop().create_task(self.run())
        if wait:
            await self.wait_registered(timeout)

    async def wait_registered(self, timeout: float = 30.0) -> None:
        """Wait until registered. :raises TimeoutError: not within ``timeout`` seconds."""
        waiter = asyncio.ensure_future(self.registered.wait())
        runner = self._runner
        waits: set[asyncio.Future[Any]] = {waiter}
        if runner is not None:
            waits.add(runner)
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if runner is not None and runner.done():
            runner.result()  # re-raise what ended the runner
            raise RuntimeError("the device client stopped")
        if not self.registered.is_set():
            raise TimeoutError(f"not registered within {timeout}s ({self.last_error})")

    async def stop(self) -> None:
        """Close the connection, cancel running commands and stop reconnecting."""
        self._stopping.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await ws.close()
        await self.work.cancel_all(timeout=2)
        if self._runner is not None and self._runner is not asyncio.current_task():
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        self.registered.clear()

    @property
    def connected(self) -> bool:
        return self.registered.is_set()

    async def run(self) -> None:
        """Connect, register and serve; after any drop back off and do it again.

        Returns when :meth:`stop` is called (or on a takeover with ``stop_on_takeover``).

        :raises PermanentRefusal: a refusal retrying cannot fix (no WebSocket at the URL,
            bad credentials, the ``client_id`` held by another live connection).
        """
        attempt = 0
        while not self._stopping.is_set():
            close_code: int | None = None
            refusal: PermanentRefusal | None = None
            try:
                async with connect(
                    self.url,
                    open_timeout=self.open_timeout,
                    ping_interval=self.ping_interval,
                    ping_timeout=self.ping_interval,
                    max_size=None,
                    close_timeout=2,
                ) as ws:
                    self._ws = ws
                    await self._register(ws)
                    attempt = 0
                    await self._serve(ws)
                    close_code = ws.close_code
                    refusal = judge_close(close_code, server_text(ws.close_reason or ""),
                                          registered_before=True)
            except RegistrationRefused as exc:
                self.last_error = server_text(str(exc))
                log.error("[%s] registration refused: %s", self.client_id, self.last_error)
                close_code = exc.close_code
                refusal = judge_close(close_code, self.last_error,
                                      registered_before=self.registrations > 0)
            except ConnectionClosed as exc:
                close_code = exc.rcvd.code if exc.rcvd is not None else None
                self.last_error = f"connection closed ({close_code})"
                refusal = judge_close(close_code,
                                      server_text(exc.rcvd.reason) if exc.rcvd else "",
                                      registered_before=self.registrations > 0)
            except InvalidStatus as exc:
                status = exc.response.status_code
                self.last_error = f"HTTP {status} to the WebSocket upgrade"
                refusal = judge_http_status(status, redact(self.url))
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                self.last_error = redact(f"{type(exc).__name__}: {exc}")
                log.debug("[%s] connect failed: %s", self.client_id, self.last_error)
            except InvalidURI:
                raise
            except Exception as exc:  # never let one bad connection end the device
                self.last_error = redact(f"{type(exc).__name__}: {exc}")
                log.exception("[%s] connection failed", self.client_id)
            finally:
                self._ws = None
                self.registered.clear()
                # The server cancels a device's sessions when its connection goes
                # (device_disconnected): their work here is abandoned too.
                dropped = self.work.cancel_sessions()
                if dropped:
                    log.warning("[%s] connection lost: stopped the work of %d session(s)",
                                self.client_id, dropped)
            if self._stopping.is_set():
                break
            if refusal is not None:
                self.last_error = str(refusal)
                log.error("[%s] %s; not reconnecting", self.client_id, refusal)
                raise refusal
            if close_code == CloseCode.REPLACED:
                log.warning("[%s] another connection with this client_id took over",
                            self.client_id)
                if self.stop_on_takeover:
                    break
            delay = backoff_delay(attempt, self.backoff_min, self.backoff_max)
            attempt += 1
            log.info("[%s] disconnected (%s); reconnecting in %.1fs", self.client_id,
                     self.last_error, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()

    # ---------------------------------------------------------------- connection

    def metadata(self) -> dict[str, Any]:
        """The current registration metadata (refreshed on each call)."""
        source = self._metadata
        if source is None:
            return default_metadata()
        return dict(source() if callable(source) else source)

    async def _register(self, ws: ClientConnection) -> None:
        metadata = await asyncio.to_thread(self.metadata)
        await ws.send(wire.encode(wire.register_frame(self.client_id, ClientType.DEVICE, metadata)))
        deadline = asyncio.get_running_loop().time() + self.register_timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError("no registration confirmation")
            async with asyncio.timeout(left):
                frame = wire.parse_server_frame(await ws.recv())
            if frame is None:
                continue  # a strict client drops what it cannot validate
            if frame["type"] == MessageType.HEARTBEAT and frame["status"] == Status.OK:
                break
            if frame["type"] == MessageType.ERROR or frame["status"] == Status.ERROR:
                # The close that follows a refusal says whether to try again.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2):
                        await ws.wait_closed()
                raise RegistrationRefused(frame.get("error") or "registration refused",
                                          ws.close_code)
        self.registrations += 1
        self.last_error = None
        self.registered.set()
        log.info("[%s] registered at %s (registration %d)", self.client_id,
                 redact(self.url), self.registrations)
        unsent, self._unsent = self._unsent, []
        for frame in unsent:  # results finished while disconnected
            await self._send_on(ws, frame)

    async def _serve(self, ws: ClientConnection) -> None:
        loops = [asyncio.ensure_future(self._heartbeats(ws))]
        if self.info_interval:
            loops.append(asyncio.ensure_future(self._info_pushes(ws, self.info_interval)))
        try:
            async for message in ws:
                frame = wire.parse_server_frame(message)
                if frame is None:
                    log.debug("[%s] dropped an invalid frame: %.200r", self.client_id, message)
                    continue
                await self._handle(frame)
        finally:
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    async def _heartbeats(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            await self._send_on(ws, wire.heartbeat_frame(self.client_id))

    async def _info_pushes(self, ws: ClientConnection, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.push_device_info()

    async def _send_on(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        async with self._send_lock:
            await ws.send(wire.encode(frame))

    async def send(self, frame: dict[str, Any]) -> bool:
        """Send a frame on the current connection; ``False`` when not connected."""
        ws = self._ws
        if ws is None or not self.registered.is_set():
            return False
        try:
            await self._send_on(ws, frame)
        except ConnectionClosed:
            return False
        return True

    async def push_device_info(self) -> bool:
        """Send fresh device info (a ``device_info_response`` with metadata)."""
        metadata = await asyncio.to_thread(self.metadata)
        return await self.send(wire.device_info_push_frame(self.client_id, metadata))

    # ---------------------------------------------------------------- frames

    async def _handle(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if self.on_frame is not None:
            try:
                outcome = self.on_frame(frame)
                if outcome is not None:
                    await outcome
            except Exception:
                log.exception("[%s] on_frame callback failed", self.client_id)
        if kind == MessageType.COMMAND:
            ending = frame["status"] in (Status.COMPLETED, Status.FAILED)
            if ending:
                self.cancel_session(frame.get("session_id"), f"command {frame['status']}")
            if frame.get("actions") or not ending:  # an ending one without actions: done
                self.work.spawn(self._run_command(frame), frame.get("session_id"))
        elif kind == MessageType.HEARTBEAT:
            if frame.get("session_id") is None:
                self.heartbeat_acks += 1
        elif kind == MessageType.TASK:
            await self._accept_pushed_task(frame)
        elif kind == MessageType.DEVICE_INFO_REQUEST:
            self.work.spawn(self._push_info_quietly())
        elif kind == MessageType.TASK_END:
            log.info("[%s] task %s ended: %s %s", self.client_id,
                     server_text(frame.get("session_id")), server_text(frame["status"]),
                     server_text(frame.get("error") or ""))
            self.cancel_session(frame.get("session_id"), f"task_end {frame['status']}")
        elif kind == MessageType.ERROR:
            log.warning("[%s] server error: %s", self.client_id,
                        server_text(frame.get("error")))

    def cancel_session(self, session_id: object, why: str) -> int:
        """Cancel the commands still running for ``session_id`` (its end arrived): their
        tools are cancelled (``run_shell`` kills its process group) and their results,
        which nobody waits for any more, are not sent. Returns how many were cancelled."""
        cancelled = self.work.cancel_session(session_id)
        if cancelled:
            log.info("[%s] session %s ended (%s): cancelled %d running command(s)",
                     self.client_id, server_text(session_id), why, cancelled)
        return cancelled

    async def _push_info_quietly(self) -> None:
        try:
            await self.push_device_info()
        except Exception:
            log.exception("[%s] device info push failed", self.client_id)

    async def _accept_pushed_task(self, frame: dict[str, Any]) -> None:
        """A server pushed a task (reference HTTP dispatch): ask to run it on ourselves."""
        request = frame.get("user_request") or frame.get("request")
        if not isinstance(request, str) or not request:
            return
        await self.send(wire.task_frame(
            self.client_id, request,
            task_name=frame.get("task_name") or wire.new_id(),
            session_id=frame.get("session_id") or wire.new_id(),
        ))

    async def execute(self, command: dict[str, Any]) -> list[dict[str, Any]]:
        """The results of one command's actions, run in order."""
        results = []
        for action in command.get("actions") or []:
            outcome = await self.tools.call(action["tool_name"], action.get("parameters"))
            results.append(wire.action_result(action.get("call_id"), outcome.status,
                                              result=outcome.result, error=outcome.error))
        return results

    async def _run_command(self, command: dict[str, Any]) -> None:
        actions = command.get("actions") or []
        log.info("[%s] command %s: %s", self.client_id, server_text(command.get("response_id")),
                 server_text(", ".join(str(action["tool_name"]) for action in actions)))
        try:
            results = await self.execute(command)
        except Exception as exc:  # the registry never raises; this is a safety net
            log.exception("[%s] command failed", self.client_id)
            results = [wire.action_result(action.get("call_id"), ResultStatus.FAILURE,
                                          error=f"{type(exc).__name__}: {exc}")
                       for action in actions]
        frame = wire.command_results_frame(self.client_id, command, results)
        self.commands_done += 1
        if not await self.send(frame):
            if len(self._unsent) < MAX_UNSENT_RESULTS:
                self._unsent.append(frame)  # sent after the next registration
