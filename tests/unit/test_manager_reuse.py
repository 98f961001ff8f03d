"""The ownership rule through two managers sharing one store file (two replicas): an id
belongs to its first requester; its retries start nothing and get the first session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aip_wire.vocab import ClientType, RejectionCode, RequesterKind
from session_service import agents
from session_service.agents.base import AgentContext, Outcome
from session_service.core.decisions import AlreadyYours, SessionRejected
from session_service.core.manager import SessionManager
from session_service.core.session import Session
from session_service.presence import ClientRecord, Presence
from session_service.records import SessionRecord
from session_service.settings import SessionSettings
from session_service.store import SessionStore
from session_service.store_reads import Filters
from tests.unit.test_manager import FakeGateways


class Counted:
    name = "counted"
    runs = 0
    gate = asyncio.Event()  # the sessions end once it is set

    async def run(self, context: AgentContext) -> Outcome:
        Counted.runs += 1
        await Counted.gate.wait()
        return Outcome({"run": Counted.runs})


Replica = tuple[SessionManager, FakeGateways, SessionStore]


@pytest.fixture
async def replicas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                   ) -> AsyncIterator[list[Replica]]:
    monkeypatch.setitem(agents.AGENTS, Counted.name, Counted)
    Counted.runs = 0
    Counted.gate = asyncio.Event()
    Counted.gate.set()
    made: list[Replica] = []
    for n in range(2):
        presence = Presence()
        presence.online(ClientRecord("dev1", ClientType.DEVICE, "linux", {}, "g1"))
        store = SessionStore(str(tmp_path / "shared.sqlite3"), f"r{n}")
        await asyncio.to_thread(store.open)
        gateways = FakeGateways()
        settings = SessionSettings(replica_id=f"r{n}", max_records=1,
                                   ended_memory_bytes=0)
        made.append((SessionManager(settings, presence, gateways, store, reader=store),
                     gateways, store))
    yield made
    for _, _, store in made:
        await asyncio.to_thread(store.close)


async def start(manager: SessionManager, session_id: str, requester: str,
                gateway: str = "") -> SessionRejected | None:
    """Submit and accept as an adapter does; the announced refusal, or ``None``."""
    kind = RequesterKind.CONSTELLATION if gateway else RequesterKind.BACKEND
    try:
        session = manager.submit(
            session_id=session_id, task_name="t", request="{}", device_id="dev1",
            requester_id=requester, requester_kind=kind, origin_gateway=gateway,
            agent_name=Counted.name)
    except SessionRejected as exc:
        return exc
    answered: asyncio.Future[SessionRejected | None] = \
        asyncio.get_running_loop().create_future()
    manager.accept(session, answered.set_result)
    return await answered


async def ended(manager: SessionManager, session_id: str) -> None:
    session = manager.sessions.get(session_id)
    if session is not None:
        await session.ended.wait()
    await asyncio.to_thread(manager.records.flush)  # type: ignore[attr-defined]


async def test_another_requester_is_refused_on_every_replica(replicas: list[Replica]) -> None:
    (one, _, _), (two, _, _) = replicas
    assert await start(one, "s1", "alice") is None
    for manager in (one, two):  # running, then ended and evicted from memory
        refusal = await start(manager, "s1", "mallory")
        assert refusal is not None and refusal.code is RejectionCode.EXISTS
        assert not isinstance(refusal, AlreadyYours)
    await ended(one, "s1")
    for manager in (one, two):
        refusal = await start(manager, "s1", "mallory")
        assert refusal is not None and str(refusal) == "Session 's1' belongs to another client"
    assert Counted.runs == 1
    record = await two.get("s1")
    assert isinstance(record, SessionRecord) and record.requester_id == "alice"


async def test_the_requesters_retry_gets_the_first_session(replicas: list[Replica]) -> None:
    (one, _, _), (two, _, _) = replicas
    Counted.gate.clear()
    assert await start(one, "s2", "alice") is None
    live = one.sessions["s2"]
    here = await start(one, "s2", "alice")  # running here: the live session
    assert isinstance(here, AlreadyYours) and here.existing is live
    elsewhere = await start(two, "s2", "alice")  # running on r0: its record
    assert isinstance(elsewhere, AlreadyYours) and "on replica r0" in str(elsewhere)
    Counted.gate.set()
    await ended(one, "s2")
    for manager in (one, two):
        again = await start(manager, "s2", "alice")
        assert isinstance(again, AlreadyYours)
        existing: Any = again.existing
        assert existing.state == "completed" and existing.session_id == "s2"
    assert Counted.runs == 1 and one.active == two.active == 0


async def test_a_link_retry_of_an_ended_session_gets_its_task_end(
    replicas: list[Replica],
) -> None:
    (one, _, _), (two, gateways, _) = replicas
    assert await start(one, "s3", "c1", gateway="g1") is None
    await ended(one, "s3")
    assert await start(two, "s3", "c1", gateway="g2") is None  # acked ...
    # ... then the first session's end again, to the requester only.
    assert gateways.sent == [("end", "g2", {"requester": True, "device": False})]
    assert Counted.runs == 1 and "s3" not in two.sessions


async def test_two_replicas_racing_for_an_id_run_one_session(replicas: list[Replica]) -> None:
    (one, _, _), (two, _, _) = replicas
    answers = await asyncio.gather(start(one, "race", "alice"), start(two, "race", "bob"))
    assert sorted(answer is None for answer in answers) == [False, True]
    await asyncio.gather(ended(one, "race"), ended(two, "race"))
    assert Counted.runs == 1


async def test_pages_of_every_replicas_sessions(replicas: list[Replica]) -> None:
    (one, _, _), (two, _, _) = replicas
    for n in range(5):
        assert await start((one, two)[n % 2], f"p{n}", "alice") is None
    for n in range(5):
        await ended((one, two)[n % 2], f"p{n}")
    found, token = await one.page(Filters(requester_id="alice"), 3)
    more, last = await one.page(Filters(requester_id="alice"), 3, token)
    assert token and not last
    assert {s.session_id for s in [*found, *more]} == {f"p{n}" for n in range(5)}
    assert all(isinstance(s, (Session, SessionRecord)) for s in found)
