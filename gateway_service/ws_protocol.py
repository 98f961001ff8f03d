"""uvicorn's sans-I/O WebSocket protocol, made to let go of peers that stop reading.

uvicorn ends a connection with ``transport.close()``, which first waits for the write
buffer to drain. A peer that stopped reading never lets it drain: its socket, the
kernel's buffers and the handler blocked in a send would stay for as long as the peer
keeps its end open, pings unanswered. This subclass aborts instead where waiting cannot
end well:

- a keepalive ping went unanswered for ``ws_ping_timeout`` seconds;
- the application has returned and the socket is still there :data:`CLOSE_TIMEOUT`
  seconds later (the close handshake never completed, or the final flush never did).

It also offers the application an ASGI extension, ``scope["extensions"]["aip.abort"]``:
a callable that drops the connection at once, for a handler that knows its peer is gone
(a close that cannot even be written). Applications that do not find it fall back to an
ordinary close.
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

log = logging.getLogger("aip.gateway.ws")

#: Name of the ASGI extension under ``scope["extensions"]``.
ABORT_EXTENSION = "aip.abort"
#: Seconds a connection may take to go once the application is done with it (uvicorn
#: gives the close handshake as long).
CLOSE_TIMEOUT = 10.0


class GatewayWebSocketProtocol(WebSocketsSansIOProtocol):
    """``ws=`` protocol class for uvicorn: see the module documentation."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # uvicorn makes this dict for each connection: one more key costs no more memory.
        extensions = self.scope.get("extensions")
        if extensions is None:
            extensions = self.scope["extensions"] = {}
        extensions[ABORT_EXTENSION] = self.abort  # type: ignore[assignment]

    def abort(self) -> None:
        """Drop the connection now, discarding what is buffered for the peer."""
        if not self.disconnected:
            self.transport.abort()

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()  # queues the close frame (1011) and closes
        if not self.disconnected:
            log.info("[WS] %s did not answer a ping in time: connection aborted", _peer(self))
            self.transport.abort()  # nothing more will reach a peer that ignores pings

    async def run_asgi(self) -> None:
        await super().run_asgi()
        if not self.disconnected:
            self.loop.call_later(CLOSE_TIMEOUT, self._abort_if_still_open)

    def _abort_if_still_open(self) -> None:
        if not self.disconnected:
            log.info("[WS] %s did not finish closing: connection aborted", _peer(self))
            self.transport.abort()


def _peer(protocol: WebSocketsSansIOProtocol) -> str:
    client = protocol.client
    return f"{client[0]}:{client[1]}" if client else "peer"
