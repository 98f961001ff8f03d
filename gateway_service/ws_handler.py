"""The ``/ws`` endpoint: a thin adapter between a Starlette WebSocket and the gateway.

Lifecycle of one socket: accept, wait (bounded) for the ``register`` frame, validate it,
register, confirm; then hand every message to the frame router until the client goes;
then unregister, which lets the replicas cancel its sessions with the right reason.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Mapping
from typing import Any

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from aip_runtime import log_context
from aip_wire import frames
from aip_wire.frames import FrameError, parse_client_frame
from aip_wire.vocab import ClientType, CloseCode
from gateway_service import metrics
from gateway_service.auth import Authenticator
from gateway_service.gateway import Gateway
from gateway_service.handlers import FrameRouter
from gateway_service.log_safety import clip
from gateway_service.registry import Connection
from gateway_service.rules import Refusal, RefusalCode, check_registration, check_target
from gateway_service.takeover import (
    TakeoverDecision,
    TakeoverReason,
    TakeoverStep,
    after_probe,
    first_step,
    refusal_reason,
)
from gateway_service.ws_protocol import (
    ABORT_EXTENSION,
    INLINE_EXTENSION,
    PROBE_EXTENSION,
    REGISTERED_EXTENSION,
    WRITE_EXTENSION,
)

log = logging.getLogger("aip.gateway.ws")


#: The close code a refused registration ends its socket with: chosen here alone.
CLOSE_CODES: dict[RefusalCode, CloseCode] = {
    RefusalCode.BAD_REGISTRATION: CloseCode.BAD_REGISTRATION,
    RefusalCode.UNAUTHORIZED: CloseCode.UNAUTHORIZED,
    RefusalCode.TARGET_NOT_CONNECTED: CloseCode.TARGET_NOT_CONNECTED,
    RefusalCode.REGISTRATION_TIMEOUT: CloseCode.REGISTRATION_TIMEOUT,
    RefusalCode.DUPLICATE: CloseCode.DUPLICATE,
    RefusalCode.RESTARTING: CloseCode.SERVICE_RESTART,
}


def close_code(refusal: Refusal) -> CloseCode:
    """The close code for a refused registration (every registration refusal has one)."""
    assert isinstance(refusal.code, RefusalCode), refusal.code
    return CLOSE_CODES[refusal.code]


def _payload(message: Mapping[str, Any]) -> str | bytes:
    text = message.get("text")
    if text is not None:
        return str(text)
    data = message.get("bytes")
    return data if data is not None else b""


def close_reason(reason: str) -> str:
    """``reason`` cut to what a close frame can carry: 123 bytes of UTF-8."""
    return reason.encode()[:123].decode(errors="ignore")


#: Longest a closing handshake may wait to be written (the peer stopped reading and the
#: socket's buffer is full) before the connection is dropped without it.
CLOSE_WRITE_TIMEOUT = 10.0


async def _close(
    websocket: WebSocket, code: CloseCode, reason: str, farewell: str | None = None
) -> None:
    """Send ``farewell`` (a frame's text) if any, then close with ``code``; if that cannot
    be written within :data:`CLOSE_WRITE_TIMEOUT`, drop the connection instead."""
    try:
        async with asyncio.timeout(CLOSE_WRITE_TIMEOUT):
            if farewell is not None:
                await websocket.send_text(farewell)
            await websocket.close(code=code, reason=close_reason(reason))
    except TimeoutError:
        abort = websocket.scope.get("extensions", {}).get(ABORT_EXTENSION)
        log.info("[WS] close %d could not be written in %gs: %s", code,
                 CLOSE_WRITE_TIMEOUT, "connection aborted" if abort else "giving up")
        if abort is not None:
            abort()
    except Exception as exc:  # the client may already be gone
        log.debug("close %d not delivered: %r", code, exc)


async def _refuse(websocket: WebSocket, refusal: Refusal) -> None:
    # Refusal reasons quote what the client sent (its client_id, a parse error).
    code, reason = close_code(refusal), clip(refusal.reason, 500)
    metrics.REGISTRATIONS.labels("refused").inc()
    log.warning("[WS] registration refused (%d): %s", code, reason)
    await _close(websocket, code, reason, farewell=frames.encode(frames.error_frame(reason)))


#: Close handshakes in flight; held so that they are not garbage-collected midway.
_closing: set[asyncio.Task[None]] = set()


def _closer(websocket: WebSocket) -> Any:
    def close(code: CloseCode, reason: str) -> None:
        task = asyncio.get_running_loop().create_task(_close(websocket, code, reason))
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    return close


def _text_sender(send: Send) -> Any:
    """``send_text`` straight to the ASGI server, past Starlette's per-call state checks
    (the server refuses a send after the close just as well)."""

    def send_text(text: str) -> Awaitable[None]:
        return send({"type": "websocket.send", "text": text})

    return send_text


def presented_token(websocket: WebSocket, metadata: dict[str, Any] | None) -> str | None:
    """The client's token: Authorization header, else ?token=, else metadata.auth_token."""
    header = websocket.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    query = websocket.query_params.get("token")
    if query:
        return query
    token = (metadata or {}).get("auth_token")
    return token if isinstance(token, str) and token else None


def _count_takeover(client_id: str, decision: TakeoverDecision) -> None:
    metrics.TAKEOVERS.labels(decision.outcome, decision.reason or "").inc()
    if decision.step == TakeoverStep.TAKE_OVER:
        log.warning("[WS] %s registered again (%s): the newcomer takes over", client_id,
                    decision.reason)
    else:
        log.warning("[WS] %s registered again while held (%s): newcomer refused (4409)",
                    client_id, decision.reason)


async def _admit_over_holder(gateway: Gateway, client_id: str, token_valid: bool) -> None:
    """Let a newcomer through to a ``client_id`` that a connection holds, or refuse it.

    :raises Refusal: the holder keeps the id (it answered the probe, or duplicates are
        refused).
    """
    holder = gateway.registry.get(client_id)
    if holder is None:
        return
    now = time.monotonic()
    decision = first_step(refuse_duplicates=gateway.settings.refuse_duplicates,
                          token_valid=token_valid,
                          taken_over_recently=gateway.takeovers.recent(client_id, now))
    if decision.step == TakeoverStep.PROBE:
        answered = holder.probe is None or await holder.probe(
            gateway.settings.takeover_probe_timeout)
        decision = after_probe(answered=answered)
        current = gateway.registry.get(client_id)
        if decision.step == TakeoverStep.TAKE_OVER and current is not holder:
            if current is None:
                return  # the holder went meanwhile: an ordinary registration
            # Another newcomer took the id during the probe: it is the live holder now.
            decision = after_probe(answered=True)
    _count_takeover(client_id, decision)
    if decision.step == TakeoverStep.TAKE_OVER:
        gateway.takeovers.note(client_id, time.monotonic())
    if decision.step == TakeoverStep.REFUSE:
        raise Refusal(RefusalCode.DUPLICATE, refusal_reason(client_id)
                      if decision.reason != TakeoverReason.DUPLICATES_REFUSED
                      else f"Client ID '{client_id}' is already connected")


async def _register(
    websocket: WebSocket, send: Send, gateway: Gateway, auth: Authenticator
) -> Connection | None:
    """Wait (bounded) for the register frame, check it, register and confirm.

    Returns the new connection, or ``None`` once the socket has been refused. Kept apart
    from the receive loop so that nothing of the registration (the first message, its
    parsed frame) stays referenced for the connection's whole life.
    """
    try:
        async with asyncio.timeout(gateway.settings.registration_timeout):
            message = await websocket.receive()
    except TimeoutError:
        await _refuse(websocket, Refusal(
            RefusalCode.REGISTRATION_TIMEOUT,
            f"Registration timed out: no register frame within "
            f"{gateway.settings.registration_timeout:g}s",
        ))
        return None
    if message["type"] == "websocket.disconnect":
        return None
    began = time.monotonic()
    conn = await _registered(websocket, send, gateway, auth, message)
    metrics.REGISTRATION_SECONDS.labels("accepted" if conn is not None else "refused") \
        .observe(time.monotonic() - began)
    return conn


async def _registered(websocket: WebSocket, send: Send, gateway: Gateway,
                      auth: Authenticator, message: Any) -> Connection | None:
    """Check the register frame ``message`` and register its client, or refuse it."""
    try:
        frame = parse_client_frame(_payload(message))
        registration = check_registration(frame)
        is_device = registration.client_type is ClientType.DEVICE
        log_context.bind(client_id=registration.client_id,
                         device_id=registration.client_id if is_device else registration.target_id)
        if auth.enabled:
            # Before anything that answers about presence: an unauthenticated client must
            # not learn whether a device is connected.
            problem = auth.check(
                registration.client_id,
                registration.client_type,
                presented_token(websocket, frame.metadata),
            )
            if problem is not None:
                raise Refusal(RefusalCode.UNAUTHORIZED, problem)
        if registration.target_id is not None:
            check_target(registration, await gateway.device_connected(registration.target_id))
        await _admit_over_holder(gateway, registration.client_id, token_valid=auth.enabled)
        conn = gateway.register(registration, _text_sender(send), _closer(websocket))
        extensions = websocket.scope.get("extensions", {})
        conn.probe = extensions.get(PROBE_EXTENSION)
        conn.outbox.write_now = extensions.get(WRITE_EXTENSION)
    except FrameError as exc:
        await _refuse(websocket, Refusal(RefusalCode.BAD_REGISTRATION, str(exc)))
        return None
    except Refusal as refusal:
        await _refuse(websocket, refusal)
        return None
    metrics.REGISTRATIONS_ACCEPTED.inc()
    # The server holds an unregistered socket to small messages and counts it against
    # its cap until told; another server has one limit for all and nothing to tell.
    registered = websocket.scope.get("extensions", {}).get(REGISTERED_EXTENSION)
    if registered is not None:
        registered()
    conn.send(frames.heartbeat_frame())
    return conn


async def serve_socket(
    scope: Scope, receive: Receive, send: Send, *,
    gateway: Gateway, router: FrameRouter, auth: Authenticator,
) -> None:
    """Serve one ``/ws`` connection. Starlette's :class:`WebSocket` does the handshake,
    the first frame and the closes; the receive loop and the outbox use the ASGI
    ``receive`` and ``send`` directly, past its per-message state checks."""
    websocket = WebSocket(scope, receive, send)
    await websocket.accept()
    if gateway.draining:
        await _refuse(websocket, Refusal(RefusalCode.RESTARTING,
                                         "The gateway is restarting; reconnect"))
        return
    conn: Connection | None = None
    try:
        conn = await _register(websocket, send, gateway, auth)
        if conn is None:
            return
        # Heartbeats are answered where the socket reads them (the server protocol's
        # extension; a server without it sends them all through the loop below).
        inline = websocket.scope.get("extensions", {}).get(INLINE_EXTENSION)
        if inline is not None:
            inline(functools.partial(router.answer_inline, conn))
        outbox = conn.outbox
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                log.info(
                    "[WS] %s closed the connection (code %s)",
                    conn.client_id,
                    message.get("code"),
                )
                break
            outbox.hold()
            try:
                router.handle(conn, _payload(message))
            finally:
                await outbox.release()
    except WebSocketDisconnect as exc:
        log.info("[WS] %s disconnected code=%s", conn.client_id if conn else "?", exc.code)
    except RuntimeError as exc:
        # Starlette raises RuntimeError when receiving on a socket closed from our side
        # (takeover, overflow); that is an ordinary end of the connection.
        log.debug("[WS] socket of %s ended: %s", conn.client_id if conn else "?", exc)
    except Exception:
        log.exception("[WS] error with client %s", conn.client_id if conn else "?")
    finally:
        inline = websocket.scope.get("extensions", {}).get(INLINE_EXTENSION)
        if inline is not None:
            inline(None)
        if conn is not None:
            gateway.unregister(conn)
