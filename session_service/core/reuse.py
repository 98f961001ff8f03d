"""Answering a request for an id that is already held, as the ownership rule says.

The manager calls :func:`answer_reuse` when the store (or this replica's memory) says
the requested id has a holder. Nothing starts: another requester is refused with
``EXISTS``; the same requester gets its first session. That session may be a live
:class:`~session_service.core.session.Session` of this replica or, ended or running on
another replica, its :class:`~session_service.records.SessionRecord`.

A link (WebSocket) requester whose first session ended is acked and gets that session's
``task_end`` again, so that a retry after a replica crash is never left waiting. One
whose first session still runs on another replica is refused with ``EXISTS`` and told
so: its ``task_end`` comes from the replica that runs it, through the gateway that
submitted it, and this replica cannot route it. The public API (no gateway) gets an
:class:`~session_service.core.decisions.AlreadyYours` carrying the first session, which
the API returns as the answer to its StartSession.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aip_wire import frames
from aip_wire.vocab import LIVE_STATES, SessionState, Status
from session_service.core import decisions
from session_service.core.ports import GatewayPort
from session_service.core.session import Session
from session_service.records import SessionRecord

Announce = Callable[[decisions.SessionRejected | None], None]


def holder_of(existing: Session | SessionRecord) -> decisions.Existing:
    running = existing.running if isinstance(existing, Session) \
        else existing.state in LIVE_STATES
    return decisions.Existing(existing.requester_id, running)


def task_end_text(existing: Session | SessionRecord) -> bytes:
    """The ``task_end`` frame of an ended session, as its requester first got it."""
    state: str
    if isinstance(existing, Session):
        state, result, error = existing.state, existing.result, existing.error
    else:
        state, error = existing.state, existing.error
        result = json.loads(existing.result_json) if existing.result_json else None
    return frames.dumps(frames.task_end_frame(
        session_id=existing.session_id, task_name=existing.task_name,
        status=Status.COMPLETED if state == SessionState.COMPLETED else Status.FAILED,
        result=result, error=error,
    ))


def answer_reuse(request: Session, existing: Session | SessionRecord, announce: Announce,
                 gateways: GatewayPort, active_sessions: int) -> decisions.Reuse:
    """Answer ``request`` (admitted, never started) whose id ``existing`` holds."""
    session_id = request.session_id
    verdict = decisions.reuse(request.requester_id, holder_of(existing))
    if verdict is decisions.Reuse.FOREIGN:
        announce(decisions.foreign(session_id))
    elif verdict is decisions.Reuse.RUNNING:
        where = f" on replica {existing.replica_id}" \
            if isinstance(existing, SessionRecord) else ""
        announce(decisions.AlreadyYours(
            f"Session '{session_id}' is already running{where}: its task_end will come "
            "through the gateway that first submitted it", existing))
    elif request.origin_gateway:
        announce(None)  # the gateway acks its requester, then gets the end again
        gateways.end_session(request.origin_gateway, request, notify_requester=True,
                             notify_device=False, frame_json=task_end_text(existing),
                             active_sessions=active_sessions)
    else:
        state: Any = existing.state
        announce(decisions.AlreadyYours(
            f"Session '{session_id}' already ended ({state}): nothing was started again",
            existing))
    return verdict
