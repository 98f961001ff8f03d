"""Change notifications: the watcher runs only while someone listens, and each listener
hears of changes to the devices it may see."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from mcp.server.connection import Connection
from mcp.server.session import ServerSession
from mcp.server.subscriptions import ResourcesListChanged, ServerEvent

from gateway_service.mcp.access import Grant
from gateway_service.mcp.changes import DeviceChanges


class Outbound:
    """A connection's standalone channel, recording what it is asked to send."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def notify(self, method: str, params: Mapping[str, Any] | None,
                     opts: Any = None) -> None:
        self.sent.append(method)

    async def send_raw_request(self, method: str, params: Any, opts: Any = None) -> Any:
        raise AssertionError("no requests expected")


def session() -> tuple[ServerSession, Connection, Outbound]:
    outbound = Outbound()
    connection = Connection(outbound, protocol_version="2025-11-25")  # type: ignore[arg-type]
    return ServerSession(outbound, connection), connection, outbound  # type: ignore[arg-type]


class Fleet:
    def __init__(self, *ids: str) -> None:
        self.ids = frozenset(ids)
        self.asked = 0

    async def device_ids(self) -> frozenset[str]:
        self.asked += 1
        return self.ids


async def test_nothing_runs_until_someone_listens_and_stops_after() -> None:
    fleet = Fleet("a")
    changes = DeviceChanges(fleet.device_ids, 0.01)
    await asyncio.sleep(0.05)
    assert fleet.asked == 0 and not changes.watching
    server_session, connection, outbound = session()
    changes.listen(server_session, Grant("x"), frozenset({"a"}))
    assert changes.watching
    await asyncio.sleep(0.05)
    assert fleet.asked > 0 and outbound.sent == []  # nothing changed
    fleet.ids = frozenset({"a", "b"})
    for _ in range(100):
        if outbound.sent:
            break
        await asyncio.sleep(0.01)
    assert outbound.sent == ["notifications/resources/list_changed"]
    await connection.exit_stack.aclose()  # the MCP session closes
    assert not changes.listening
    await asyncio.sleep(0.02)
    assert not changes.watching
    asked = fleet.asked
    await asyncio.sleep(0.05)
    assert fleet.asked == asked
    await changes.close()


async def test_each_listener_hears_only_of_its_own_devices() -> None:
    changes = DeviceChanges(Fleet().device_ids, 60)
    everything, _, all_out = session()
    lab, _, lab_out = session()
    changes.listen(everything, Grant("ide"), frozenset({"lab-1", "other"}))
    changes.listen(lab, Grant("lab", frozenset({"lab-1"})), frozenset({"lab-1"}))
    await changes.tell(frozenset({"lab-1", "other", "new"}))
    assert all_out.sent == ["notifications/resources/list_changed"]
    assert lab_out.sent == []
    await changes.tell(frozenset({"other", "new"}))  # lab-1 left
    assert len(all_out.sent) == 2 and len(lab_out.sent) == 1
    await changes.close()
    assert not changes.watching


async def test_listen_streams_count_as_listeners() -> None:
    fleet = Fleet("a")
    changes = DeviceChanges(fleet.device_ids, 0.01)
    events: list[ServerEvent] = []
    unsubscribe = changes.bus.subscribe(events.append)
    assert changes.watching
    await asyncio.sleep(0.03)
    assert events == []
    fleet.ids = frozenset()
    for _ in range(100):
        if events:
            break
        await asyncio.sleep(0.01)
    assert events == [ResourcesListChanged()]
    unsubscribe()
    unsubscribe()  # idempotent
    assert changes.bus.subscribers == 0 and not changes.listening
    await changes.close()


async def test_a_session_without_a_standalone_channel_is_not_kept() -> None:
    changes = DeviceChanges(Fleet().device_ids, 60)
    outbound = Outbound()
    connection = Connection.from_envelope("2026-07-28", None, None)
    changes.listen(ServerSession(outbound, connection), Grant("x"),  # type: ignore[arg-type]
                   frozenset())
    assert not changes.listening and not changes.watching
