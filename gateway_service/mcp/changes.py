"""Telling MCP clients that devices came or went: ``notifications/resources/list_changed``.

Each device is a resource (``aip://devices/<id>``, its device info), so a device
connecting or leaving changes the resource list. Clients hear of it in either of the
SDK's two ways:

- handshake-era sessions (protocol 2025-*): a session that listed the resources is told
  on its standalone stream (the GET stream), until the session closes;
- 2026-07-28 sessions: through ``subscriptions/listen``, fed by the
  :class:`CountingBus` given to the SDK's listen handler.

Devices are on every gateway, so the list is the fleet's (``ListDevices``), looked at
every ``--mcp-watch-interval`` seconds, and only while at least one client listens: the
watcher starts with the first listener and stops with the last. Nothing here runs, or
holds anything per device, while no MCP client listens, and the device sockets' paths
never call into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mcp.server.connection import Connection
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourcesListChanged, ServerEvent

from gateway_service.mcp.access import Grant, visible

log = logging.getLogger("aip.gateway.mcp")

DeviceIds = Callable[[], Awaitable[frozenset[str]]]


class CountingBus:
    """The SDK's in-memory bus, counting its subscribers so the watcher runs only while
    a ``subscriptions/listen`` stream is open."""

    def __init__(self, on_count: Callable[[], None]) -> None:
        self._bus = InMemorySubscriptionBus()
        self._on_count = on_count
        self.subscribers = 0

    async def publish(self, event: ServerEvent) -> None:
        await self._bus.publish(event)

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        unsubscribe = self._bus.subscribe(listener)
        self.subscribers += 1
        self._on_count()
        done = False

        def undo() -> None:
            nonlocal done
            if not done:
                done = True
                unsubscribe()
                self.subscribers -= 1
                self._on_count()

        return undo


@dataclass(eq=False, slots=True)
class _Listener:
    session: ServerSession
    grant: Grant
    seen: frozenset[str] = field(default_factory=frozenset)


def connection_of(session: ServerSession) -> Connection | None:
    """The session's connection, whose exit stack says when it closes.

    The low-level handler context exposes the connection only through its session's
    attribute; without it (another SDK layout) a client is simply not told of changes.
    """
    connection = getattr(session, "_connection", None)
    return connection if isinstance(connection, Connection) else None


class DeviceChanges:
    """The listeners, and the watcher that runs while there are any."""

    def __init__(self, device_ids: DeviceIds, interval: float) -> None:
        self._device_ids = device_ids
        self._interval = interval
        self._listeners: dict[int, _Listener] = {}
        self.bus = CountingBus(self._wake)
        self._bus_seen: frozenset[str] = frozenset()
        self._task: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        return bool(self._listeners) or self.bus.subscribers > 0

    @property
    def watching(self) -> bool:
        return self._task is not None and not self._task.done()

    def listen(self, session: ServerSession, grant: Grant, listed: frozenset[str]) -> None:
        """A handshake-era session listed ``listed``: tell it when that changes."""
        connection = connection_of(session)
        if connection is None or not connection.has_standalone_channel:
            return
        key = id(connection)
        if key not in self._listeners:
            connection.exit_stack.callback(self._forget, key)
        self._listeners[key] = _Listener(session, grant, listed)
        self._wake()

    def _forget(self, key: int) -> None:
        self._listeners.pop(key, None)
        self._wake()

    def _wake(self) -> None:
        """Start the watcher when someone listens, stop it when no one does."""
        if self.listening and not self.watching:
            self._task = asyncio.get_running_loop().create_task(self._watch())
        elif not self.listening and self._task is not None:
            self._task.cancel()
            self._task = None

    async def close(self) -> None:
        self._listeners.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        first = True
        while True:
            try:
                ids = await self._device_ids()
            except Exception:
                log.exception("mcp: listing devices for change notifications failed")
            else:
                if first:
                    self._bus_seen = ids
                await self.tell(ids)
            first = False
            await asyncio.sleep(self._interval)

    async def tell(self, ids: frozenset[str]) -> None:
        """Notify every listener whose visible devices differ from ``ids``'."""
        if self.bus.subscribers and ids != self._bus_seen:
            self._bus_seen = ids
            await self.bus.publish(ResourcesListChanged())
        for listener in list(self._listeners.values()):
            now = frozenset(visible(listener.grant, ids))
            if now != listener.seen:
                listener.seen = now
                try:
                    await listener.session.send_resource_list_changed()
                except Exception:  # one broken session must not silence the others
                    log.exception("mcp: a change notification could not be sent")
