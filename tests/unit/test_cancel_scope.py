"""Which sessions a gateway's cancel may touch on a replica."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aip_link import codec
from aip_link import messages as m
from aip_link.fragments import Reassembly
from session_service.link_servicer import cancel_refusal


def _session(requester: str = "c1", origin: str = "gw-a", device_gw: str = "gw-a") -> Any:
    return SimpleNamespace(requester_id=requester, origin_gateway=origin,
                           device_gateway=device_gw)


def test_a_cancel_scoped_to_a_submit_touches_only_the_session_it_created() -> None:
    mine, theirs = _session("c2"), _session("c1")
    cancel = m.CancelSession("s", "submit_timeout", "c2", submit_id=7)
    assert cancel_refusal(cancel, mine, "gw-a", created=mine) is None
    assert cancel_refusal(cancel, theirs, "gw-a", created=None) is not None
    # Even when the submit created a session once, another session with its id is not it.
    assert cancel_refusal(cancel, theirs, "gw-a", created=mine) is not None
    late = m.CancelSession("s", "submit_timeout", submit_id=7)
    assert cancel_refusal(late, mine, "gw-a", created=mine) is None
    assert cancel_refusal(late, theirs, "gw-a", created=mine) is not None


def test_a_cancel_naming_a_requester_or_from_a_stranger_gateway_is_ignored() -> None:
    session = _session("c1", origin="gw-a", device_gw="gw-b")
    assert cancel_refusal(m.CancelSession("s", "x", "c2"), session, "gw-a", None)
    assert cancel_refusal(m.CancelSession("s", "x", "c1"), session, "gw-a", None) is None
    assert cancel_refusal(m.CancelSession("s", "link_lost"), session, "gw-b", None) is None
    assert cancel_refusal(m.CancelSession("s", "link_lost"), session, "gw-c", None)


def test_the_submit_id_crosses_the_link() -> None:
    sent = m.CancelSession("s", "submit_timeout", "c2", submit_id=2**40)
    batch = codec.encode_gateway_batch([sent])
    (received,) = codec.decode_gateway_batch(batch, Reassembly(1 << 20))
    assert received == sent


def test_a_late_acceptance_sends_a_cancel_scoped_to_its_submit() -> None:
    from gateway_service.sessions import SessionTable

    sent: list[Any] = []
    replicas = SimpleNamespace(send=lambda replica, message: sent.append(message) or True)
    table = SessionTable("gw-a", 1.0, registry=None, replicas=replicas)  # type: ignore[arg-type]
    replica = SimpleNamespace(active_sessions=0)
    table.task_accepted(replica, m.TaskAccepted(submit_id=5, session_id="s",  # type: ignore[arg-type]
                                                active_sessions=1))
    assert sent == [m.CancelSession("s", "submit_timeout", submit_id=5)]
