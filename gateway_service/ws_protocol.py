"""uvicorn's sans-I/O WebSocket protocol, made to bound what one peer can hold.

uvicorn ends a connection with ``transport.close()``, which first waits for the write
buffer to drain. A peer that stopped reading never lets it drain: its socket, the
kernel's buffers and the handler blocked in a send would stay for as long as the peer
keeps its end open, pings unanswered. This subclass aborts instead where waiting cannot
end well:

- a keepalive ping went unanswered for ``ws_ping_timeout`` seconds (a ping is sent
  only after ``ws_ping_interval`` seconds in which the peer sent nothing);
- the application has returned and the socket is still there :data:`CLOSE_TIMEOUT`
  seconds later (the close handshake never completed, or the final flush never did).

Memory a peer can make the gateway hold is bounded:

- messages: ``max_size_unregistered`` until the application reports the registration
  (:data:`REGISTERED_EXTENSION`), ``max_size`` after; a frame announcing more is refused
  from its header with 1009, before its payload is read;
- partially received frames, over all sockets: a socket that would take the total past
  the guard's budget is closed with 1013;
- what is written to a peer that does not read: while the transport's write buffer is
  above its high-water mark, the socket is not read (the peer's pings wait in the
  kernel) and pongs are dropped rather than queued behind what the peer already ignores.

A socket failed for a protocol violation (1009, 1013, 1002...) is not closed at once: it
sends its close frame, shuts down its sending side and reads and discards until the peer
closes too, for at most ``linger`` seconds. Closing a socket with unread data makes the
kernel reset the connection, and the peer may never read the close frame.

When the connection is lost, every reference cycle through the protocol (its timers, the
scope's extension callables, websockets' parser generator) is broken, so that reference
counting frees a closed connection at once instead of leaving it to the garbage
collector, which a gateway tuned for many sockets runs rarely.

ASGI extensions are offered to the application, under ``scope["extensions"]``:
:data:`ABORT_EXTENSION`, a callable that drops the connection at once (for a handler that
knows its peer is gone), :data:`REGISTERED_EXTENSION`, a callable to report that the
client registered, :data:`PROBE_EXTENSION`, a ping that reports whether its pong came,
and :data:`INLINE_EXTENSION`, to answer messages (heartbeats) where they are read, and
:data:`WRITE_EXTENSION`, to write a message without an ASGI event or a task. An
application that does not find them falls back to an ordinary close, to the server's
single size limit and to its receive loop for every message.
"""

from __future__ import annotations

import asyncio
import logging
import os
from asyncio import TimerHandle
from collections.abc import Callable
from typing import Any

from uvicorn._types import ASGIReceiveEvent
from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.frames import CloseCode
from websockets.protocol import State

from aip_runtime.throttled_log import Throttled
from gateway_service import metrics
from gateway_service.socket_guard import guard_of
from gateway_service.ws_lean import Flag, Inbox, release_handshake

log = logging.getLogger("aip.gateway.ws")

#: Name of the ASGI extension that drops the connection at once.
ABORT_EXTENSION = "aip.abort"
#: Name of the ASGI extension that pings the peer: ``await probe(timeout)`` is whether a
#: pong came back in time.
PROBE_EXTENSION = "aip.probe"
#: Name of the ASGI extension the application calls once the client has registered.
REGISTERED_EXTENSION = "aip.registered"
#: Name of the ASGI extension through which the application answers some messages where
#: the socket reads them: ``install(answer)``, ``answer(data)`` the reply's text or ``None``.
INLINE_EXTENSION = "aip.inline"
#: Name of the ASGI extension that writes a text message at once, past the ASGI ``send``:
#: ``write_now(text)`` is whether it did (see :meth:`GatewayWebSocketProtocol.write_now`).
WRITE_EXTENSION = "aip.write_now"
#: Seconds a connection may take to go once the application is done with it (uvicorn
#: gives the close handshake as long).
CLOSE_TIMEOUT = 10.0

# Peers decide how often these happen: one line per 10 s at most, with a count.
_over_budget = Throttled(log, logging.WARNING, "[WS] %s: %d bytes of partial frames would "
                         "exceed the budget of %d for all sockets: closed it (1013)")
_oversize = Throttled(log, logging.INFO, "[WS] %s (%s) sent a message over %d bytes: "
                      "closed it (1009)")
_violations = Throttled(log, logging.INFO, "[WS] %s broke the protocol (%s): closed it")


class GatewayWebSocketProtocol(WebSocketsSansIOProtocol):
    """``ws=`` protocol class for uvicorn: see the module documentation."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # The same behaviour in a fraction of the memory (see ws_lean).
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.writable.set()
        self.guard = guard_of(config)
        self.conn.max_message_size = self.guard.limits.max_size_unregistered
        #: Whether this socket holds one of the guard's unregistered slots.
        self.holds_slot = False
        self.registered = False
        self._partial = 0  # bytes of partial frames, as recorded in the guard
        self._write_blocked = False
        self._lingering = False
        self._close_deadline: TimerHandle | None = None
        #: When the peer last sent anything (loop time): a keepalive ping waits for a
        #: silence of a whole interval.
        self._heard = self.loop.time()
        #: Liveness probes in flight: ping payload -> whether its pong came.
        self._probes: dict[bytes, asyncio.Future[bool]] = {}
        #: Answers text messages where they are read (see :meth:`answer_inline`).
        self._inline: Callable[[bytes], str | None] | None = None

    # ------------------------------------------------------------------ life and death

    def hold_slot(self) -> None:
        """Take over the unregistered slot the HTTP protocol took for this socket."""
        self.holds_slot = True

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # uvicorn makes this dict for each connection: two more keys cost no more memory.
        extensions = self.scope.get("extensions")
        if extensions is None:
            extensions = self.scope["extensions"] = {}
        extensions[ABORT_EXTENSION] = self.abort  # type: ignore[assignment]
        extensions[REGISTERED_EXTENSION] = self.mark_registered  # type: ignore[assignment]
        extensions[PROBE_EXTENSION] = self.probe  # type: ignore[assignment]
        extensions[INLINE_EXTENSION] = self.answer_inline  # type: ignore[assignment]
        extensions[WRITE_EXTENSION] = self.write_now  # type: ignore[assignment]

    def mark_registered(self) -> None:
        """The client registered: accept its full-size messages, give its slot back."""
        if not self.registered:
            self.registered = True
            self.conn.max_message_size = self.guard.limits.max_size
            self._give_back_slot()
            # The handshake's request and response (their headers) are done with once
            # the socket is accepted, which registering comes after.
            self.request = self.response = None  # type: ignore[assignment]
            release_handshake(self.conn)

    def answer_inline(self, answer: Callable[[bytes], str | None] | None) -> None:
        """Have ``answer`` take each text message first, where the socket reads it.

        ``answer(data)`` gives the text to write at once (empty: nothing), and the
        message goes no further: no wake-up of the application's task, no ASGI events,
        no pause and resume of reading (two system calls). It is asked only while the
        application has taken every earlier message and the write side is free, so that
        messages are handled in the order they came; a message it declines (``None``)
        takes the usual way.
        """
        self._inline = answer

    def abort(self) -> None:
        """Drop the connection now, discarding what is buffered for the peer."""
        if not self.disconnected:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._close_deadline is not None:
            self._close_deadline.cancel()  # it would keep this object alive for seconds
            self._close_deadline = None
        self._give_back_slot()
        self._set_partial(0)
        for probe in self._probes.values():
            if not probe.done():
                probe.set_result(False)
        self._probes.clear()
        self._break_cycles()

    def _break_cycles(self) -> None:
        extensions = getattr(self, "scope", {}).get("extensions") or {}
        extensions.pop(ABORT_EXTENSION, None)
        extensions.pop(REGISTERED_EXTENSION, None)
        extensions.pop(PROBE_EXTENSION, None)
        extensions.pop(INLINE_EXTENSION, None)
        extensions.pop(WRITE_EXTENSION, None)
        self._inline = None  # it holds the application's connection
        # websockets' parser is a generator of the connection object, whose frame refers
        # back to it; closing the generator releases the frame.
        self.conn.parser.close()

    def send_keepalive_ping(self) -> None:
        # A peer heard from within the interval is alive, and one that stopped reading is
        # not read either (so it is not heard): the ping waits until a whole interval has
        # passed in silence. Clients that ping the gateway themselves (websockets' default,
        # the reference clients') then cost it no pings of its own.
        interval = self.ping_interval or 0.0
        quiet = self.loop.time() - self._heard
        if quiet < interval and not (self.close_sent or self.transport.is_closing()):
            self.ping_timer = self.loop.call_later(interval - quiet, self.send_keepalive_ping)
            return
        super().send_keepalive_ping()

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()  # queues the close frame (1011) and closes
        if not self.disconnected:
            log.info("[WS] %s did not answer a ping in time: connection aborted", _peer(self))
            self.transport.abort()  # nothing more will reach a peer that ignores pings

    async def run_asgi(self) -> None:
        await super().run_asgi()
        if not self.disconnected and self._close_deadline is None:
            self._close_deadline = self.loop.call_later(CLOSE_TIMEOUT,
                                                        self._abort_if_still_open)

    def _abort_if_still_open(self) -> None:
        self._close_deadline = None
        if not self.disconnected:
            log.info("[WS] %s did not finish closing: connection aborted", _peer(self))
            self.transport.abort()

    # ------------------------------------------------------------------ reading

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # failed: everything until the peer's close is discarded
        self._heard = self.loop.time()
        super().data_received(data)
        if not (self._lingering or self.disconnected):
            conn = self.conn
            # What the parser holds now is the start of a frame still incomplete, plus
            # the earlier fragments of a fragmented message.
            partial = len(conn.reader.buffer) + (conn.current_size or 0)
            if partial != self._partial and not self._set_partial(partial):
                metrics.BUDGET_CLOSES.inc()
                _over_budget.note(_peer(self), partial,
                                  self.guard.limits.partial_frames_budget)
                self.conn.fail(CloseCode.TRY_AGAIN_LATER, "partial frames budget exceeded")
                self._fail_and_linger()

    def send_receive_event_to_app(self) -> None:
        answer = self._inline
        if (answer is not None and self.curr_msg_data_type == "text" and len(self.frames) == 1
                and not (self.read_paused or self.close_sent or self._write_blocked)
                and self.writable.is_set() and not self.transport.is_closing()):
            data = self.frames[0]
            try:
                reply = answer(data if type(data) is bytes else bytes(data))
            except Exception:  # the application's bug: logged, the message dropped
                log.exception("[WS] %s: handling a message where it was read failed",
                              _peer(self))
                reply = ""
            if reply is not None:
                self.frames = []
                if reply:
                    self.conn.send_text(reply.encode())
                    self.transport.write(b"".join(self.conn.data_to_send()))
                return
        super().send_receive_event_to_app()

    def handle_parser_exception(self) -> None:
        close = self.conn.close_sent
        if close is not None and close.code == CloseCode.MESSAGE_TOO_BIG:
            limit = self.conn.max_message_size
            if self.registered:
                metrics.OVERSIZE_REGISTERED.inc()
            else:
                metrics.OVERSIZE_UNREGISTERED.inc()
            _oversize.note(_peer(self), "registered" if self.registered else "unregistered",
                           limit)
        else:
            _violations.note(_peer(self), self.conn.parser_exc)
        self._fail_and_linger()

    def _fail_and_linger(self) -> None:
        """After ``conn.fail``: tell the application, send the close frame, shut down the
        sending side, and discard what comes until the peer closes (or ``linger``)."""
        close = self.conn.close_sent
        code, reason = (close.code, close.reason) if close is not None else (1006, "")
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self._set_partial(0)
        self.stop_keepalive()
        self._lingering = True
        if not self.transport.can_write_eof():  # TLS: no half-close, plain close
            self.transport.close()
            return
        self.transport.write_eof()
        self.read_paused = self._write_blocked = False
        self.transport.resume_reading()
        # uvicorn leaves closing to a pending close timer: this one aborts.
        if self.close_timer is not None:
            self.close_timer.cancel()
        self.close_timer = self.loop.call_later(self.guard.limits.linger, self.abort)

    def _set_partial(self, partial: int) -> bool:
        if not self.guard.resize_partial(self._partial, partial):
            return False
        self._partial = partial
        return True

    # ------------------------------------------------------------------ writing

    def write_now(self, text: str) -> bool:
        """Write one text message now, from where the caller is, if nothing stands in the
        way: the socket is accepted and open both ways, the application has not sent its
        close, and the transport takes writes (not above its high-water mark). ``False``
        leaves the message to the ASGI ``send``, which waits or refuses as it must.

        The caller keeps the order: it writes here only when none of its messages is
        still on the ASGI way. A command for a device then costs no task, no ASGI event
        and no wake-up of a writer.
        """
        if (self.disconnected or self.close_sent or not self.handshake_complete
                or self._write_blocked or not self.writable.is_set()
                or self.conn.state is not State.OPEN or self.transport.is_closing()):
            return False
        self.conn.send_text(text.encode())
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True

    def pause_writing(self) -> None:
        """The write buffer is over its high-water mark: the peer reads slower than it is
        written to. Stop reading it too: whatever it sends (pings) would ask for more."""
        super().pause_writing()
        self._write_blocked = True
        if not self.read_paused and not self._lingering:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._write_blocked = False
        if not self.read_paused and not self.transport.is_closing():
            self.transport.resume_reading()

    async def receive(self) -> ASGIReceiveEvent:
        # uvicorn's, except that reading stays paused while writes are blocked.
        message = await self.queue.get()
        if self.read_paused and self.queue.empty():
            self.read_paused = False
            if not self._write_blocked:
                self.transport.resume_reading()
        return message

    async def probe(self, timeout: float) -> bool:
        """Ping the peer; whether its pong came within ``timeout`` seconds.

        The ping has a payload of its own, so the keepalive's pongs do not answer it. A
        peer that does not read (writes blocked) or whose network is gone answers
        nothing, which is what a probe is for.
        """
        if self.disconnected or self.close_sent or self.transport.is_closing():
            return False
        payload = os.urandom(8)
        answered = self.loop.create_future()
        self._probes[payload] = answered
        try:
            self.conn.send_ping(payload)
            self.transport.write(b"".join(self.conn.data_to_send()))
            async with asyncio.timeout(timeout):
                return await answered
        except TimeoutError:
            return False
        finally:
            self._probes.pop(payload, None)

    def handle_pong(self, event: Any) -> None:
        probe = self._probes.get(bytes(event.data))
        if probe is not None and not probe.done():
            probe.set_result(True)
        super().handle_pong(event)

    def handle_ping(self) -> None:
        if self._write_blocked:
            # The peer does not read what it was sent: a pong would only sit behind it.
            self.conn.data_to_send()
            metrics.PONGS_DROPPED.inc()
            return
        super().handle_ping()

    def _give_back_slot(self) -> None:
        if self.holds_slot:
            self.holds_slot = False
            self.guard.release()


def _peer(protocol: WebSocketsSansIOProtocol) -> str:
    client = protocol.client
    return f"{client[0]}:{client[1]}" if client else "peer"
