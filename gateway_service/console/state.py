"""The console's parts for one gateway, and the overview it shows: devices and sessions.

:class:`Console` holds the session-API source and makes the overview's snapshot for the
page and for its event stream alike; nothing of it runs while nobody looks.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from gateway_service.console import views
from gateway_service.console.devices import DeviceView, device_views
from gateway_service.console.render import render
from gateway_service.console.source import NoReplica, Refused, SessionSource
from gateway_service.gateway import Gateway

#: Seconds between two looks at the registry and the replicas.
INTERVAL = 1.0
#: Newest sessions listed (one page of ListSessions); the search looks within them.
SESSIONS_LISTED = 200


@dataclass(frozen=True, slots=True)
class Filters:
    """The sessions table's filter: a state, a device, search text; empty: any."""

    state: str = ""
    device: str = ""
    query: str = ""


@dataclass(frozen=True, slots=True)
class Overview:
    devices: list[DeviceView]
    sessions: list[views.SessionView]
    #: Why something could not be read, for a banner; empty when all went well.
    problem: str


class Console:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.source = SessionSource(gateway, timeout=gateway.settings.lookup_timeout + 3)
        self.interval = INTERVAL

    def stopping(self) -> bool:
        """Event streams end when the gateway drains."""
        return self.gateway.draining

    async def devices(self) -> tuple[list[DeviceView], str]:
        """Every device, and why the replicas' list is missing (empty: it is not)."""
        connections = list(self.gateway.registry)
        problem = ""
        try:
            remote = await self.source.devices()
        except (NoReplica, Refused) as exc:
            remote = None
            problem = f"devices: {exc}"
        return device_views(remote, connections, self.gateway.gateway_id), problem

    async def sessions(self, filters: Filters) -> tuple[list[views.SessionView], str]:
        """The newest sessions that pass ``filters``, and what went wrong (empty: nothing)."""
        state = views.state_value(filters.state) if filters.state else None
        if filters.state and state is None:
            return [], f"no state named {filters.state!r}"
        try:
            listed = await self.source.sessions(
                state=state, device_id=filters.device, page_size=SESSIONS_LISTED
            )
        except (NoReplica, Refused) as exc:
            return [], f"sessions: {exc}"
        return [row for row in map(views.session_view, listed) if row.matches(filters.query)], ""

    async def overview(self, filters: Filters) -> Overview:
        (devices, device_problem), (sessions, session_problem) = await asyncio.gather(
            self.devices(), self.sessions(filters)
        )
        problem = "; ".join(p for p in (device_problem, session_problem) if p)
        return Overview(devices, sessions, problem)

    async def parts(self, filters: Filters, base: str) -> dict[str, str]:
        """The overview's live parts as HTML, by the id of the element they fill."""
        seen = await self.overview(filters)
        return {
            "devices": render("_devices.html", devices=seen.devices, base=base),
            "sessions": render("_sessions.html", sessions=seen.sessions, base=base),
            "device-options": render("_device_options.html", devices=seen.devices),
            "problem": seen.problem,
        }
