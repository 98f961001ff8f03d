"""session_service.core.decisions: admission in its order, and who hears an end."""

from __future__ import annotations

from typing import Any

import pytest

from aip_wire.vocab import RejectionCode, RequesterKind
from session_service.core.decisions import (
    Admission,
    AlreadyYours,
    EndNotice,
    Existing,
    Reuse,
    SessionRejected,
    admit,
    end_notices,
    queue_full,
    reuse,
)


def _admit(**changes: Any) -> Admission:
    facts: dict[str, Any] = {
        "session_id": "s1", "requester_id": "c1", "device_id": "dev1", "agent_name": "plan",
        "draining": False, "existing": None, "device_connected": True, "agents": {"plan"},
    }
    facts.update(changes)
    return admit(**facts)


def test_admits() -> None:
    assert _admit() is Admission.ADMIT
    assert _admit(existing=Existing("c1", running=False)) is Admission.DUPLICATE


@pytest.mark.parametrize(("changes", "message", "code"), [
    ({"draining": True}, "replica is draining: it takes no new sessions",
     RejectionCode.DRAINING),
    ({"recordable": False, "device_connected": False},
     "the session store of this replica cannot write records now: the session was not "
     "started", RejectionCode.UNAVAILABLE),
    ({"existing": Existing("other", running=False)},
     "Session 's1' belongs to another client", RejectionCode.EXISTS),
    ({"existing": Existing("c1", running=True)}, "Session 's1' is already running",
     RejectionCode.EXISTS),
    ({"device_connected": False}, "Device 'dev1' is not connected", RejectionCode.NOT_FOUND),
    ({"agent_name": "nope"}, "Unknown agent 'nope'", RejectionCode.INVALID),
])
def test_refusals(changes: dict[str, Any], message: str, code: RejectionCode) -> None:
    with pytest.raises(SessionRejected) as caught:
        _admit(**changes)
    assert str(caught.value) == message and caught.value.code is code


def test_first_refusal_wins() -> None:
    with pytest.raises(SessionRejected) as caught:
        _admit(draining=True, device_connected=False, agent_name="nope")
    assert caught.value.code is RejectionCode.DRAINING
    with pytest.raises(SessionRejected) as caught:
        _admit(device_connected=False, agent_name="nope")
    assert caught.value.code is RejectionCode.NOT_FOUND


def _notices(kind: RequesterKind, reason: str | None = None, origin: str = "g1",
             accepted: str = "g1", now: str = "g1") -> list[EndNotice]:
    return end_notices(requester_kind=kind, cancel_reason=reason, origin_gateway=origin,
                       accepted_device_gateway=accepted, device_gateway=now)


def test_same_gateway() -> None:
    assert _notices(RequesterKind.CONSTELLATION) == [EndNotice("g1", True, True)]
    assert _notices(RequesterKind.DEVICE) == [EndNotice("g1", True, False)]
    assert _notices(RequesterKind.HTTP) == [EndNotice("g1", False, True)]


def test_device_on_another_gateway() -> None:
    assert _notices(RequesterKind.CONSTELLATION, accepted="g2", now="g2") == [
        EndNotice("g1", True, False), EndNotice("g2", False, True)]


def test_device_moved_after_the_start() -> None:
    assert _notices(RequesterKind.CONSTELLATION, accepted="g2", now="g3") == [
        EndNotice("g1", True, False), EndNotice("g2", False, False),
        EndNotice("g3", False, True)]
    assert _notices(RequesterKind.DEVICE, accepted="g1", now="g2") == [
        EndNotice("g1", True, False), EndNotice("g2", False, False)]


def test_backend_has_no_origin() -> None:
    assert _notices(RequesterKind.BACKEND, origin="", accepted="g2", now="g2") == [
        EndNotice("g2", False, True)]
    assert _notices(RequesterKind.BACKEND, origin="", accepted="", now="") == []


def test_constellation_left_tells_only_the_device() -> None:
    assert _notices(RequesterKind.CONSTELLATION, "constellation_disconnected",
                    accepted="g2", now="g2") == [
        EndNotice("g1", False, False), EndNotice("g2", False, True)]


@pytest.mark.parametrize(("holder", "verdict"), [
    (None, Reuse.NEW),
    (Existing("other", running=True), Reuse.FOREIGN),
    (Existing("other", running=False), Reuse.FOREIGN),
    (Existing("c1", running=True), Reuse.RUNNING),
    (Existing("c1", running=False), Reuse.ENDED),
])
def test_an_id_belongs_to_its_first_requester(holder: Existing | None,
                                              verdict: Reuse) -> None:
    assert reuse("c1", holder) is verdict


def test_a_retry_of_an_ended_session_is_a_duplicate_whatever_the_device() -> None:
    """Answered with the first session: no device check, since nothing runs."""
    assert _admit(existing=Existing("c1", running=False), device_connected=False,
                  agent_name="nope") is Admission.DUPLICATE


def test_a_retry_of_a_running_session_carries_it() -> None:
    with pytest.raises(AlreadyYours) as caught:
        _admit(existing=Existing("c1", running=True))
    assert caught.value.code is RejectionCode.EXISTS


def test_a_session_that_never_started_is_told_to_its_submitter_only() -> None:
    notices = end_notices(requester_kind=RequesterKind.CONSTELLATION, cancel_reason=None,
                          origin_gateway="g1", accepted_device_gateway="g2",
                          device_gateway="g2", started=False)
    assert notices == [EndNotice("g1", notify_requester=True, notify_device=False)]
    assert end_notices(requester_kind=RequesterKind.BACKEND, cancel_reason=None,
                       origin_gateway="", accepted_device_gateway="g2",
                       device_gateway="g2", started=False) == []


def test_queue_full_says_why() -> None:
    assert "16 session(s) already wait" in str(queue_full("dev1", 16))
    assert queue_full("dev1", 16).code is RejectionCode.LIMIT
    assert "may not wait" in str(queue_full("dev1", 0))
