"""uvicorn's httptools protocol (its default, ``http="auto"``), made to bound idle sockets.

Every connection, WebSocket or not, starts here. uvicorn times out nothing before a
request's headers are complete: a peer that sends half a request line and stops holds a
descriptor forever, and a few thousand such peers take them all (slowloris). This
subclass adds:

- a handshake deadline: the headers of every request, the first and each one after on a
  kept-alive connection, must be complete within ``handshake_timeout`` seconds, or the
  socket is answered 408 and closed;
- the cap on unregistered sockets: each accepted socket takes a slot of the server's
  :class:`~gateway_service.socket_guard.SocketGuard`; a plain HTTP request gives it back
  once its headers are in, a WebSocket upgrade hands it to the WebSocket protocol, which
  gives it back on registration. With every slot taken, a new socket is answered 503 and
  closed before anything of it is parsed.

After an upgrade it also drops its parser, which refers back to this object: left alone,
the pair is a reference cycle that only the garbage collector frees, one per WebSocket.
"""

from __future__ import annotations

import asyncio
import logging
from asyncio import TimerHandle
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from aip_runtime.throttled_log import Throttled
from gateway_service import metrics
from gateway_service.socket_guard import guard_of

log = logging.getLogger("aip.gateway.http")


def _response(status: str) -> bytes:
    return (f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(status)}\r\nconnection: close\r\n\r\n{status}").encode()


UNAVAILABLE = _response("503 Service Unavailable")
TOO_SLOW = _response("408 Request Timeout")

_refusals = Throttled(log, logging.WARNING,
                      "refusing connections: %d sockets are waiting to register")
_timeouts = Throttled(log, logging.INFO,
                      "closed a socket whose request headers took over %gs (last: %s)")


class GatewayHttpProtocol(HttpToolsProtocol):
    """``http=`` protocol class for uvicorn: see the module documentation."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.guard = guard_of(config)
        #: Whether this socket holds one of the guard's unregistered slots.
        self.holds_slot = False
        self._headers_deadline: TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.guard.admit():
            metrics.SOCKETS_REFUSED.inc()
            _refusals.note(self.guard.unregistered)
            transport.write(UNAVAILABLE)
            transport.close()
            return
        self.holds_slot = True
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_in()
        self._give_back_slot()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._headers_in()
        upgrading = self.parser.should_upgrade() and self._should_upgrade()
        if not upgrading:
            self._give_back_slot()  # an HTTP request is served and goes: no registration
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # the next request is in already
        super().on_response_complete()
        if not (pipelined or self.transport.is_closing() or self._headers_deadline):
            self._await_headers()  # kept alive: the next request gets the same deadline

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        successor = self.transport.get_protocol()
        if self.holds_slot:
            self.holds_slot = False
            hold = getattr(successor, "hold_slot", None)
            if hold is not None:
                hold()  # it gives the slot back on registration or when it goes
            else:
                self.guard.release()
        # This protocol is done; nothing calls its connection_lost. Its parser's
        # callbacks are bound methods of it: drop the parser to end the cycle.
        self.parser = None  # type: ignore[assignment]

    def _await_headers(self) -> None:
        self._headers_deadline = self.loop.call_later(
            self.guard.limits.handshake_timeout, self._headers_too_slow)

    def _headers_in(self) -> None:
        if self._headers_deadline is not None:
            self._headers_deadline.cancel()
            self._headers_deadline = None

    def _headers_too_slow(self) -> None:
        self._headers_deadline = None
        if self.transport.is_closing():
            return
        metrics.HANDSHAKE_TIMEOUTS.inc()
        client = self.client
        _timeouts.note(self.guard.limits.handshake_timeout,
                       f"{client[0]}:{client[1]}" if client else "peer")
        self.transport.write(TOO_SLOW)
        self.transport.close()

    def _give_back_slot(self) -> None:
        if self.holds_slot:
            self.holds_slot = False
            self.guard.release()
