"""The session rules that need no state of their own: admission, who owns an id, and
who hears an end.

All are pure functions of plain facts, so they are tested without a manager, a store, a
link or an event loop.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum, auto
from typing import Any

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


class AlreadyYours(SessionRejected):
    """The requester asked again for an id that is already its own: nothing new starts.

    ``existing`` is the first session: a live :class:`~session_service.core.session.
    Session` of this replica, or its :class:`~session_service.records.SessionRecord`
    (ended, or running on another replica). An adapter that can return a session (the
    public API) answers with it; the code stays ``EXISTS`` for those that cannot.
    """

    def __init__(self, message: str, existing: Any) -> None:
        super().__init__(message, RejectionCode.EXISTS)
        self.existing = existing


@dataclass(frozen=True, slots=True)
class Existing:
    """The session that already holds the requested id."""

    requester_id: str
    running: bool


class Admission(Enum):
    ADMIT = auto()
    #: The requester's own ended session holds the id: answer with it, start nothing.
    DUPLICATE = auto()


class Reuse(Enum):
    """What a request for an id gets, once the store says who holds it."""

    NEW = auto()  # the id was free: this request created its session
    FOREIGN = auto()  # another requester holds it: refused with EXISTS
    RUNNING = auto()  # the requester's own session, still running: that session
    ENDED = auto()  # the requester's own session, ended: its record (and task_end again)


def reuse(requester_id: str, holder: Existing | None) -> Reuse:
    """The ownership rule: an id belongs to the requester that first used it for as long
    as its record is retained; a retry by that requester is answered with the first
    session and never runs anything again.

    ``holder`` is the session that won the id (``None``: this request won it). The store
    decides who won, by its unique key, so the rule holds across replicas and restarts.
    """
    if holder is None:
        return Reuse.NEW
    if holder.requester_id != requester_id:
        return Reuse.FOREIGN
    return Reuse.RUNNING if holder.running else Reuse.ENDED


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
) -> Admission:
    """Whether a session may start; checked in this order, first refusal wins.

    :raises SessionRejected: the replica drains, its store cannot write (``recordable``
        false: the session could not get the record its ack promises), the id belongs
        to another requester or is running, the device is not connected, or the agent
        is unknown. Whether the device is free is the device queue's to say, once the
        store has the session (:mod:`~session_service.core.device_queue`).
        ``existing`` is the session this replica holds in memory under the id, a fast
        path only: the store's claim decides (:func:`reuse`).
    """
    if draining:
        raise SessionRejected("replica is draining: it takes no new sessions",
                              RejectionCode.DRAINING)
    if not recordable:
        raise unrecordable()
    verdict = reuse(requester_id, existing)
    if verdict is Reuse.FOREIGN:
        raise foreign(session_id)
    if verdict is Reuse.RUNNING:
        # The manager puts the live session in ``existing``.
        raise AlreadyYours(f"Session '{session_id}' is already running", None)
    if verdict is Reuse.ENDED:
        return Admission.DUPLICATE  # answered with the first session, whatever the device
    if not device_connected:
        raise SessionRejected(f"Device '{device_id}' is not connected", RejectionCode.NOT_FOUND)
    if agent_name not in agents:
        raise SessionRejected(f"Unknown agent '{agent_name}'", RejectionCode.INVALID)
    return Admission.ADMIT


def queue_full(device_id: str, max_queued: int) -> SessionRejected:
    """The refusal of a session that its device's queue has no room for."""
    if not max_queued:
        return SessionRejected(f"Device '{device_id}' is busy and sessions may not wait "
                               "for it (max_queued_per_device is 0)", RejectionCode.LIMIT)
    return SessionRejected(f"Device '{device_id}' is busy and {max_queued} session(s) "
                           "already wait for it (max_queued_per_device)", RejectionCode.LIMIT)


def foreign(session_id: str) -> SessionRejected:
    """The refusal of an id that another requester holds."""
    return SessionRejected(f"Session '{session_id}' belongs to another client")


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
    started: bool = True,
) -> list[EndNotice]:
    """Every gateway that may hold a route for the session, each exactly once.

    ``origin_gateway`` submitted it ("" for a backend); ``accepted_device_gateway`` had
    the device when it started and ``device_gateway`` has it now (they differ when the
    device reconnected elsewhere). Every one of them hears of the end, notified or not,
    so that no route outlives its session; the device's ``task_end`` goes through the
    gateway that has the device now. A session that never ``started`` (it ended while
    queued) never reached the device: only its submitter hears of it.
    """
    notify_requester, notify_device = end_audience(requester_kind, cancel_reason)
    if not started:
        return [EndNotice(origin_gateway, notify_requester, False)] if origin_gateway \
            else []
    notices = []
    if origin_gateway:
        notices.append(EndNotice(origin_gateway, notify_requester,
                                 notify_device and origin_gateway == device_gateway))
    for gateway_id in dict.fromkeys((accepted_device_gateway, device_gateway)):
        if gateway_id and gateway_id != origin_gateway:
            notices.append(EndNotice(gateway_id, False,
                                     notify_device and gateway_id == device_gateway))
    return notices
