"""Gateway-wide bounds on what sockets may hold before and after they register.

A socket costs the gateway a file descriptor and some memory from the moment it is
accepted, long before it proves anything. :class:`SocketGuard` keeps the two totals that
per-socket limits cannot see, shared by every socket of one server:

- the sockets accepted and not yet registered (half-open HTTP upgrades included), capped
  at ``max_unregistered``: past the cap new sockets are refused at once, so that a flood
  of idle connections cannot take every descriptor;
- the bytes held in partially received WebSocket frames, capped at
  ``partial_frames_budget``: each socket may announce a frame of up to ``max_size``, but
  not every socket at once.

The protocol classes (:mod:`gateway_service.http_protocol`,
:mod:`gateway_service.ws_protocol`) find the guard on the server's config
(:class:`GatewayConfig`); both run in the event loop's thread, so plain integers do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import uvicorn

from gateway_service import metrics
from gateway_service.settings import GatewaySettings

MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class SocketLimits:
    """The bounds one gateway enforces on its sockets (see :class:`GatewaySettings`)."""

    #: Seconds an HTTP request (a WebSocket upgrade too) has to complete its headers.
    handshake_timeout: float = 10.0
    #: Sockets accepted and not registered yet, beyond which new ones are refused.
    max_unregistered: int = 10_000
    #: Largest message accepted before registration, bytes.
    max_size_unregistered: int = 1024 * 1024
    #: Largest message accepted from a registered client, bytes.
    max_size: int = 100 * MiB
    #: Bytes of partially received frames all sockets together may hold.
    partial_frames_budget: int = 1024 * MiB
    #: Seconds a socket closed for a protocol violation keeps reading (and discarding)
    #: until the peer closes too: closing with unread data would reset the connection and
    #: could destroy the close frame before the peer reads it.
    linger: float = 2.0

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> SocketLimits:
        return cls(
            handshake_timeout=settings.handshake_timeout,
            max_unregistered=settings.max_unregistered,
            # A registered client is never held to less than an unregistered one.
            max_size_unregistered=min(settings.ws_max_size_unregistered,
                                      settings.ws_max_size),
            max_size=settings.ws_max_size,
            partial_frames_budget=settings.partial_frames_budget,
        )


def cap_for_fd_limit(max_unregistered: int, fd_limit: int | None) -> int:
    """The cap on unregistered sockets the descriptor limit leaves room for: half of it,
    so that registered clients, the links and the process's own files always have the
    other half. A flood of idle sockets then meets the cap before the limit."""
    if fd_limit is None:
        return max_unregistered
    return max(1, min(max_unregistered, fd_limit // 2))


class SocketGuard:
    """The unregistered-socket count and the partial-frame bytes of one server."""

    def __init__(self, limits: SocketLimits) -> None:
        self.limits = limits
        #: Sockets holding an unregistered slot (see :meth:`admit`).
        self.unregistered = 0
        #: Bytes of partially received frames, over all sockets.
        self.partial_bytes = 0
        metrics.UNREGISTERED_SOCKETS.set_function(lambda: self.unregistered)
        metrics.PARTIAL_FRAME_BYTES.set_function(lambda: self.partial_bytes)

    def admit(self) -> bool:
        """Take an unregistered slot for a new socket; ``False`` (nothing taken) when
        ``max_unregistered`` sockets already hold one."""
        if self.unregistered >= self.limits.max_unregistered:
            return False
        self.unregistered += 1
        return True

    def release(self) -> None:
        """Give a slot back: the socket registered, or went."""
        self.unregistered -= 1

    def resize_partial(self, before: int, after: int) -> bool:
        """One socket's partial frames went from ``before`` to ``after`` bytes; ``False``
        (and nothing recorded) if that would take the total past the budget."""
        total = self.partial_bytes + after - before
        if after > before and total > self.limits.partial_frames_budget:
            return False
        self.partial_bytes = total
        return True


class GatewayConfig(uvicorn.Config):
    """uvicorn's config, carrying the :class:`SocketGuard` of the server it configures."""

    def __init__(self, app: Any, *, socket_limits: SocketLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.socket_guard = SocketGuard(socket_limits)


def guard_of(config: uvicorn.Config) -> SocketGuard:
    """The guard of ``config``'s server; a config made elsewhere gets one on first use,
    with the default limits and uvicorn's ``ws_max_size``."""
    guard: SocketGuard | None = getattr(config, "socket_guard", None)
    if guard is None:
        defaults = SocketLimits()
        guard = SocketGuard(SocketLimits(
            max_size=config.ws_max_size,
            max_size_unregistered=min(defaults.max_size_unregistered, config.ws_max_size),
        ))
        config.socket_guard = guard  # type: ignore[attr-defined]
    return guard
