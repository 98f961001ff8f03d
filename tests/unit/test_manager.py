"""session_service.core.manager through fake ports: how a session's end is decided and
told, with no link, no store and no gRPC."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aip_wire.vocab import ClientType, RequesterKind
from session_service import agents
from session_service.agents.base import AgentContext, Outcome
from session_service.core.manager import SessionManager
from session_service.core.session import Session
from session_service.presence import ClientRecord, Presence
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
    assert mgr.active == 0 and mgr.active_on("dev1") == 0


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
    assert gateways.sent == [("end", "g1", {"requester": False, "device": True})]


async def test_completed(manager: Any) -> None:
    mgr, _ = manager
    session = _submit(mgr, "done")
    await session.ended.wait()
    assert session.state == "completed" and session.result == {"ok": True}
    assert session.error is None and session.cancel_reason is None
