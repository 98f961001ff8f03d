"""What the gateway does with each frame a registered client sends.

:meth:`FrameRouter.handle` parses one message, pins it to the socket's identity and routes
it by type. Handlers that only answer or forward run inline (they never wait), so a
heartbeat is acknowledged at once whatever else the client has in flight; a ``task``,
which waits for a replica to accept it, runs as a task of its own owned by the
connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aip_runtime import log_context
from aip_wire import frames
from aip_wire.frames import ClientFrame, FrameError, parse_client_frame
from aip_wire.vocab import CLIENT_MESSAGE_TYPES, MessageType
from gateway_service import metrics
from gateway_service.gateway import Gateway
from gateway_service.log_safety import clip
from gateway_service.registry import Connection
from gateway_service.rules import (
    Refusal,
    check_device,
    device_info_of,
    device_info_scope,
    pin_identity,
    plan_task,
)
from gateway_service.sessions import Requester

log = logging.getLogger("aip.gateway.handlers")

#: A handler gets the connection, the parsed frame and the message as received.
Handler = Callable[[Connection, ClientFrame, str | bytes], None]


class FrameRouter:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        # Counters per frame type, looked up once: labels() takes a lock on every call.
        self._counted = {message_type: metrics.FRAMES_IN.labels(message_type)
                         for message_type in (*CLIENT_MESSAGE_TYPES, "unknown")}
        self._heartbeats = self._counted[MessageType.HEARTBEAT]
        self._routes: dict[str, Handler] = {
            MessageType.HEARTBEAT: self.heartbeat,
            MessageType.TASK: self.task,
            MessageType.COMMAND_RESULTS: self.command_results,
            MessageType.DEVICE_INFO_REQUEST: self.device_info_request,
            MessageType.DEVICE_INFO_RESPONSE: self.device_info_response,
            MessageType.ERROR: self.client_error,
            MessageType.TASK_END: self.client_task_end,
            MessageType.REGISTER: self.register_again,
        }

    def answer_inline(self, conn: Connection, data: bytes) -> str | None:
        """The reply to a message answered where the socket read it, or ``None`` to
        have it go through :meth:`handle`: a plain heartbeat, while nothing else is
        being written to the client (so replies keep their order). Other messages gain
        little from it (a command's results: about 2 us of the gateway's 43 per round
        trip), so they keep the receive loop."""
        if not conn.outbox.idle or not frames.is_plain_heartbeat(data):
            return None
        conn.last_seen = time.monotonic()
        self._heartbeats.inc()
        log.debug("[WS] heartbeat from %s", conn.client_id)
        return frames.encode(frames.heartbeat_frame())

    def handle(self, conn: Connection, data: str | bytes) -> None:
        """Handle one message from a registered client; never raises."""
        conn.last_seen = time.monotonic()
        if frames.is_plain_heartbeat(data):  # most frames: no ClientFrame needed
            self._heartbeats.inc()
            self.heartbeat(conn, None, data)
            return
        try:
            frame = parse_client_frame(data)
        except FrameError as exc:
            log.warning("[WS] malformed frame from %s: %s", clip(conn.client_id), clip(exc))
            metrics.FRAME_ERRORS.labels("malformed").inc()
            conn.send(frames.error_frame(clip(exc)))
            return
        handler = self._routes.get(frame.type)
        self._counted[frame.type if handler else "unknown"].inc()
        if handler is None:
            log.warning("[WS] unknown message type '%s' from %s", clip(frame.type),
                        clip(conn.client_id))
            metrics.FRAME_ERRORS.labels("unknown_type").inc()
            conn.send(frames.error_frame(f"Unknown message type '{clip(frame.type)}'"))
            return
        problem = pin_identity(frame, conn.client_id, conn.client_type)
        if problem is not None:
            log.warning("[WS] identity violation by %s: %s", clip(conn.client_id),
                        clip(problem, 500))
            metrics.FRAME_ERRORS.labels("identity").inc()
            conn.send(frames.error_frame(clip(problem, 500), session_id=frame.session_id))
            return
        try:
            handler(conn, frame, data)
        except Exception as exc:
            log.exception("[WS] error handling %s from %s", frame.type, conn.client_id)
            conn.send(frames.error_frame(f"Error handling message: {exc}"))

    # ------------------------------------------------------------------ handlers

    def heartbeat(
        self, conn: Connection, frame: ClientFrame | None, raw: str | bytes = b""
    ) -> None:
        log.debug("[WS] heartbeat from %s", conn.client_id)
        conn.send(frames.heartbeat_frame())

    def task(self, conn: Connection, frame: ClientFrame, raw: str | bytes = b"") -> None:
        if not conn.task_bucket.allow(time.monotonic()):
            log.warning("[WS] %s exceeds the task rate limit", conn.client_id)
            metrics.TASKS.labels("rate_limited").inc()
            conn.send(frames.error_frame(
                f"Rate limit exceeded: at most {self.gateway.settings.task_rate:g} tasks per "
                f"second (bursts of {self.gateway.settings.task_burst})",
                session_id=frame.session_id,
            ))
            return
        task = asyncio.get_running_loop().create_task(self._submit(conn, frame))
        conn.track(task)

    async def _submit(self, conn: Connection, frame: ClientFrame) -> None:
        gateway = self.gateway
        requester = Requester.of(conn)
        try:
            plan = plan_task(frame, conn.client_id, requester.kind)
            # This is the task's own task: what it binds stays with its lines.
            log_context.bind(session_id=plan.session_id)
            if plan.check_device:
                check_device(plan, await gateway.device_connected(plan.device_id))
            if conn.is_device:
                log.info("[WS] device %s requests task %s (session %s) on itself",
                         conn.client_id, plan.task_name, plan.session_id)
            else:
                log.info("[WS] constellation %s requests task %s (session %s) on %s",
                         conn.client_id, plan.task_name, plan.session_id, plan.device_id)
            submitted = time.monotonic()
            await gateway.sessions.submit(plan, requester)
            metrics.TASK_SUBMIT_SECONDS.observe(time.monotonic() - submitted)
        except Refusal as refusal:
            log.warning("[WS] task from %s refused: %s", conn.client_id, refusal.reason)
            metrics.TASKS.labels("refused").inc()
            metrics.TASKS_REFUSED.labels(str(refusal.code)).inc()
            conn.send(frames.error_frame(refusal.reason, session_id=frame.session_id))
        except Exception:
            # A bug, not a refusal: say so in the log, and tell the client no more.
            log.exception("[WS] task from %s failed", conn.client_id)
            conn.send(frames.error_frame("Internal error: the task was not started",
                                         session_id=frame.session_id))

    def command_results(self, conn: Connection, frame: ClientFrame, raw: str | bytes = b"") -> None:
        self.gateway.sessions.forward_command_results(conn, frame, raw)
        # handle() stamped the frame's arrival in last_seen.
        metrics.FORWARD_TO_REPLICA.observe(time.monotonic() - conn.last_seen)

    def device_info_request(
        self, conn: Connection, frame: ClientFrame, raw: str | bytes = b""
    ) -> None:
        device_id, problem = device_info_scope(frame, conn.client_type, conn.target_id)
        if problem is not None and not conn.is_device:
            conn.send(frames.device_info_response_frame(
                result=None, response_id=frame.request_id, error=problem
            ))
            return
        if problem is not None or device_id is None:
            conn.send(frames.error_frame(problem or "device info refused"))
            return
        device = self.gateway.registry.device(device_id)
        if device is not None:
            conn.send(frames.device_info_response_frame(
                result=device.device_info, response_id=frame.request_id
            ))
            return
        task = asyncio.get_running_loop().create_task(
            self._remote_device_info(conn, device_id, frame.request_id)
        )
        conn.track(task)

    async def _remote_device_info(
        self, conn: Connection, device_id: str, request_id: str | None
    ) -> None:
        remote = await self.gateway.remote_device(device_id)
        if remote is None:
            conn.send(frames.device_info_response_frame(
                result=None,
                response_id=request_id,
                error=f"Device '{device_id}' is not connected",
            ))
            return
        conn.send(frames.device_info_response_frame(result=remote.device_info,
                                                    response_id=request_id))

    def device_info_response(
        self, conn: Connection, frame: ClientFrame, raw: str | bytes = b""
    ) -> None:
        if not conn.is_device:
            conn.send(frames.error_frame("Only devices may push device info"))
            return
        if frame.metadata is None:
            conn.send(frames.error_frame("device_info_response needs a metadata object"))
            return
        self.gateway.clients.update_device_info(conn, device_info_of(frame.metadata))
        log.debug("[WS] device info of %s updated", conn.client_id)

    def client_error(self, conn: Connection, frame: ClientFrame, raw: str | bytes = b"") -> None:
        log.warning("[WS] %s reported an error: %s", clip(conn.client_id), clip(frame.error))
        conn.send(frames.error_frame(f"Error received: {clip(frame.error)}"))

    def client_task_end(self, conn: Connection, frame: ClientFrame, raw: str | bytes = b"") -> None:
        log.info("[WS] %s reported task_end for session %s (%s)",
                 conn.client_id, frame.session_id, frame.status)

    def register_again(self, conn: Connection, frame: ClientFrame, raw: str | bytes = b"") -> None:
        conn.send(frames.error_frame(
            f"Already registered as '{conn.client_id}'; register must be the first frame only"
        ))
