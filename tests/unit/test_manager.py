"""session_service.core.manager through fake ports: how a session's end is decided and
told, with no link, no store and no gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from aip_wire.vocab import ClientType, RejectionCode, RequesterKind
from session_service import agents
from session_service.agents.base import AgentContext, Outcome
from session_service.core.decisions import SessionRejected
from session_service.core.manager import SessionManager
from session_service.core.ports import NullRecords
from session_service.core.retention import estimated_bytes
from session_service.core.session import Session
from session_service.presence import ClientRecord, Presence
from session_service.records import SessionRecord
from session_service.settings import SessionSettings


class FakeGateways:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def open_session(self, gateway_id: str, session: Session) -> bool:
        self.sent.append(("open", gateway_id, {}))
        return True

    def send_command(self, gateway_id: str, device_id: str, session_id: str,
                     frame_json: bytes) -> bool:
        self.sent.append(("command", gateway_id, {}))
        return True

    def end_session(self, gateway_id: str, session: Session, *, notify_requester: bool,
                    notify_device: bool, frame_json: bytes, active_sessions: int) -> bool:
        self.sent.append(("end", gateway_id, {"requester": notify_requester,
                                              "device": notify_device}))
        return True


class OwnTimeout:
    name = "own_timeout"

    async def run(self, context: AgentContext) -> Outcome:
        raise TimeoutError("the agent's own")


class Forever:
    name = "forever"

    async def run(self, context: AgentContext) -> Outcome:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class Done:
    name = "done"

    async def run(self, context: AgentContext) -> Outcome:
        return Outcome({"ok": True})


@pytest.fixture
def manager(monkeypatch: pytest.MonkeyPatch) -> tuple[SessionManager, FakeGateways]:
    for agent in (OwnTimeout, Forever, Done):
        monkeypatch.setitem(agents.AGENTS, agent.name, agent)
    presence = Presence()
    presence.online(ClientRecord("dev1", ClientType.DEVICE, "linux", {}, "g1"))
    gateways = FakeGateways()
    settings = SessionSettings(session_timeout=0.05, replica_id="r1")
    return SessionManager(settings, presence, gateways), gateways


def _submit(manager: SessionManager, agent: str) -> Session:
    session = manager.submit(
        session_id=f"s-{agent}", task_name="t", request="{}", device_id="dev1",
        requester_id="c1", requester_kind=RequesterKind.CONSTELLATION, origin_gateway="g1",
        agent_name=agent,
    )
    manager.start(session)
    return session


async def test_an_agents_own_timeout_is_a_crash(manager: Any) -> None:
    mgr, _ = manager
    session = _submit(mgr, "own_timeout")
    await session.ended.wait()
    assert session.state == "failed" and session.cancel_reason is None
    assert session.error == "Agent error: TimeoutError(\"the agent's own\")"


async def test_the_deadline_is_the_runners(manager: Any) -> None:
    mgr, gateways = manager
    session = _submit(mgr, "forever")
    await session.ended.wait()
    assert session.state == "cancelled" and session.cancel_reason == "deadline_exceeded"
    assert session.error == "Session exceeded its deadline of 0.05s"
    assert gateways.sent == [("end", "g1", {"requester": True, "device": True})]


async def test_cancel_then_cancel_again(manager: Any) -> None:
    mgr, _ = manager
    mgr.settings.session_timeout = 3600
    session = _submit(mgr, "forever")
    mgr.cancel(session.session_id, "requested")
    mgr.cancel(session.session_id, "replica_shutdown")
    assert session.running
    await session.ended.wait()
    assert not session.running and session.state == "cancelled"
    assert session.cancel_reason == "requested"
    assert mgr.active == 0 and not mgr.live_counts()


async def test_cancel_before_start_ends_at_once(manager: Any) -> None:
    mgr, gateways = manager
    session = mgr.submit(
        session_id="s-early", task_name="t", request="{}", device_id="dev1",
        requester_id="c1", requester_kind=RequesterKind.BACKEND, origin_gateway="",
        agent_name="done",
    )
    mgr.cancel("s-early", "requested")
    assert session.state == "cancelled" and session.error == "Session cancelled: requested"
    assert session.ended.is_set() and mgr.active == 0
    assert gateways.sent == []  # it never reached the device; a backend has no socket


async def test_completed(manager: Any) -> None:
    mgr, _ = manager
    session = _submit(mgr, "done")
    await session.ended.wait()
    assert session.state == "completed" and session.result == {"ok": True}
    assert session.error is None and session.cancel_reason is None


class SlowRecords(NullRecords):
    """A record sink whose creations are committed (or fail) when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Callable[[bool], None]] = []
        self.writable = True

    def record_started(self, record: SessionRecord,
                       written: Callable[[bool], None] | None = None,
                       claim: object = None) -> None:
        assert written is not None
        self.pending.append(written)


def _admitted(mgr: SessionManager, session_id: str, agent: str = "done") -> Session:
    return mgr.submit(
        session_id=session_id, task_name="t", request="{}", device_id="dev1",
        requester_id="c1", requester_kind=RequesterKind.CONSTELLATION, origin_gateway="g1",
        agent_name=agent,
    )


async def test_accepted_and_started_only_once_the_record_is_written(manager: Any) -> None:
    mgr, _ = manager
    mgr.records = records = SlowRecords()
    session = _admitted(mgr, "s-slow")
    announced: list[Any] = []
    mgr.accept(session, announced.append)
    await asyncio.sleep(0.01)
    assert announced == [] and session.task is None and mgr.active == 1
    records.pending.pop()(True)
    assert announced == [None] and session.task is not None
    await session.ended.wait()
    assert session.state == "completed"


async def test_a_cancel_while_the_record_is_written_waits_for_the_ack(manager: Any) -> None:
    mgr, gateways = manager
    mgr.records = records = SlowRecords()
    session = _admitted(mgr, "s-cancel")
    events: list[str] = []
    mgr.accept(session, lambda refusal: events.append(f"announced {refusal}"))
    mgr.cancel("s-cancel", "device_disconnected")
    assert events == [] and not session.ended.is_set()  # no task_end before the ack
    records.pending.pop()(True)
    assert events == ["announced None"] and session.ended.is_set()
    assert session.state == "cancelled" and session.cancel_reason == "device_disconnected"
    assert gateways.sent == [("end", "g1", {"requester": True, "device": False})]
    assert mgr.active == 0


async def test_a_record_that_cannot_be_written_refuses_the_session(manager: Any) -> None:
    mgr, gateways = manager
    mgr.records = records = SlowRecords()
    session = _admitted(mgr, "s-lost")
    refusals: list[Any] = []
    mgr.accept(session, refusals.append)
    records.pending.pop()(False)
    assert len(refusals) == 1 and refusals[0].code == RejectionCode.UNAVAILABLE
    assert "s-lost" not in mgr.sessions and mgr.active == 0 and not mgr.live_counts()
    assert session.task is None and gateways.sent == []
    records.writable = False  # and while the store is known to fail, none is admitted
    with pytest.raises(SessionRejected) as caught:
        _admitted(mgr, "s-next")
    assert caught.value.code == RejectionCode.UNAVAILABLE


async def test_ended_sessions_are_evicted_by_bytes(manager: Any) -> None:
    mgr, _ = manager
    mgr.ended.budget = 3 * estimated_bytes("{}", [], {"ok": True})
    for n in range(5):
        session = _admitted(mgr, f"s-{n}")
        mgr.accept(session, lambda refusal: None)
        await session.ended.wait()
    assert sorted(mgr.sessions) == ["s-2", "s-3", "s-4"]
    assert len(mgr.ended) == 3 and mgr.ended.bytes <= mgr.ended.budget
