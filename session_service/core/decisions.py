"""The session rules that need no state of their own: admission, and who hears an end.

Both are pure functions of plain facts, so they are tested without a manager, a link or
an event loop.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum, auto

from aip_wire.vocab import RejectionCode, RequesterKind, end_audience


class SessionRejected(Exception):
    """A session that cannot start; ``code`` says why, for each adapter to map."""

    def __init__(self, message: str, code: RejectionCode = RejectionCode.EXISTS) -> None:
        super().__init__(message)
        self.code = code


def unrecordable() -> SessionRejected:
    """The refusal of a session whose creation the store cannot write."""
    return SessionRejected("the session store of this replica cannot write records now: "
                           "the session was not started", RejectionCode.UNAVAILABLE)


@dataclass(frozen=True, slots=True)
class Existing:
    """The session that already holds the requested id."""

    requester_id: str
    running: bool


class Admission(Enum):
    ADMIT = auto()
    REPLACE = auto()  # admit, forgetting the ended session that held the id


def admit(
    *,
    session_id: str,
    requester_id: str,
    device_id: str,
    agent_name: str,
    draining: bool,
    existing: Existing | None,
    recordable: bool = True,
    device_connected: bool,
    agents: Collection[str],
    limit: int,
    running_on_device: int,
) -> Admission:
    """Whether a session may start; checked in this order, first refusal wins.

    :raises SessionRejected: the replica drains, its store cannot write (``recordable``
        false: the session could not get the record its ack promises), the id belongs
        to another requester or is running, the device is not connected, the agent is
        unknown, or the device runs ``limit`` sessions already (``limit`` 0: no limit).
    """
    if draining:
        raise SessionRejected("replica is draining: it takes no new sessions",
                              RejectionCode.DRAINING)
    if not recordable:
        raise unrecordable()
    if existing is not None:
        if existing.requester_id != requester_id:
            raise SessionRejected(f"Session '{session_id}' belongs to another client")
        if existing.running:
            raise SessionRejected(f"Session '{session_id}' is already running")
    if not device_connected:
        raise SessionRejected(f"Device '{device_id}' is not connected", RejectionCode.NOT_FOUND)
    if agent_name not in agents:
        raise SessionRejected(f"Unknown agent '{agent_name}'", RejectionCode.INVALID)
    if limit and running_on_device >= limit:
        raise SessionRejected(
            f"Device '{device_id}' already runs {running_on_device} session(s): the limit "
            f"is {limit} per device (max_sessions_per_device)", RejectionCode.LIMIT,
        )
    return Admission.ADMIT if existing is None else Admission.REPLACE


@dataclass(frozen=True, slots=True)
class EndNotice:
    """One gateway to tell of a session's end, and whom it delivers ``task_end`` to."""

    gateway_id: str
    notify_requester: bool
    notify_device: bool


def end_notices(
    *,
    requester_kind: RequesterKind,
    cancel_reason: str | None,
    origin_gateway: str,
    accepted_device_gateway: str,
    device_gateway: str,
) -> list[EndNotice]:
    """Every gateway that may hold a route for the session, each exactly once.

    ``origin_gateway`` submitted it ("" for a backend); ``accepted_device_gateway`` had
    the device when it started and ``device_gateway`` has it now (they differ when the
    device reconnected elsewhere). Every one of them hears of the end, notified or not,
    so that no route outlives its session; the device's ``task_end`` goes through the
    gateway that has the device now.
    """
    notify_requester, notify_device = end_audience(requester_kind, cancel_reason)
    notices = []
    if origin_gateway:
        notices.append(EndNotice(origin_gateway, notify_requester,
                                 notify_device and origin_gateway == device_gateway))
    for gateway_id in dict.fromkeys((accepted_device_gateway, device_gateway)):
        if gateway_id and gateway_id != origin_gateway:
            notices.append(EndNotice(gateway_id, False,
                                     notify_device and gateway_id == device_gateway))
    return notices
