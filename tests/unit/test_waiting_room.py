"""The waiting room of one replica: what it does with each answer about the queues."""

from __future__ import annotations

import asyncio
from typing import Any

from aip_wire.vocab import RequesterKind, SessionState
from session_service.core.device_queue import GONE, RUN, Placement, Verdict
from session_service.core.session import Session, UpdateKind
from session_service.core.waiting import Answer, WaitingRoom


def _session(session_id: str, device_id: str = "dev1") -> Session:
    return Session(session_id=session_id, task_name="t", request="{}", device_id=device_id,
                   platform="linux", device_info={}, requester_id="c1",
                   requester_kind=RequesterKind.BACKEND, origin_gateway="",
                   device_gateway="g1")


class Room:
    """A waiting room whose questions the test answers, recording what it was told."""

    def __init__(self, timeout: float = 60.0, interval: float = 0.01) -> None:
        self.asked: list[tuple[list[str], Answer]] = []
        self.started: list[str] = []
        self.expired: list[str] = []
        self.lost: list[str] = []
        self.room = WaitingRoom(
            lambda ids, done: self.asked.append((ids, done)), timeout,
            start=lambda s: self.started.append(s.session_id),
            expire=lambda s: (self.expired.append(s.session_id), self.room.remove(s)),
            lost=lambda s: self.lost.append(s.session_id), interval=interval)

    def answer(self, answers: dict[str, Placement] | None) -> None:
        _, done = self.asked.pop(0)
        done(answers)


async def test_answers_start_move_or_lose_the_waiting_sessions() -> None:
    test = Room()
    a, b, c = _session("a"), _session("b"), _session("c")
    watched: asyncio.Queue[Any] = asyncio.Queue()
    b.watchers.add(watched)
    for position, session in enumerate((a, b, c), start=1):
        test.room.add(session, position)
    assert b.state is SessionState.QUEUED and b.queue_position == 2
    assert (await watched.get()).detail == {"position": 2}
    await asyncio.sleep(0.05)
    assert len(test.asked) == 1  # one question at a time, however many ticks passed
    test.answer(None)  # the store could not answer: they all wait on
    await asyncio.sleep(0.05)
    test.answer({"a": RUN, "b": Placement(Verdict.WAIT, 1), "c": GONE})
    assert test.started == ["a"] and test.lost == ["c"]
    assert b.queue_position == 1 and list(test.room.sessions) == ["b"]
    update = await watched.get()
    assert (update.kind, update.detail) == (UpdateKind.QUEUED, {"position": 1})
    test.room.remove(b)
    await test.room.close()


async def test_a_session_waiting_too_long_is_expired() -> None:
    test = Room(timeout=0.05)
    test.room.add(_session("slow"), 1)
    for _ in range(100):
        if test.expired:
            break
        await asyncio.sleep(0.01)
    assert test.expired == ["slow"] and not test.room.sessions
    await test.room.close()


async def test_an_end_asks_only_for_a_device_someone_waits_for() -> None:
    test = Room(interval=60.0)  # only the first tick asks by itself
    test.room.add(_session("w", device_id="dev1"), 1)
    await asyncio.sleep(0.03)
    test.answer({"w": Placement(Verdict.WAIT, 1)})
    test.room.freed("dev2")
    assert test.asked == []
    test.room.freed("dev1")
    assert [ids for ids, _ in test.asked] == [["w"]]
    test.room.freed("dev1")  # asked already: once more after the answer, not twice now
    assert len(test.asked) == 1
    test.answer({"w": Placement(Verdict.WAIT, 1)})
    assert [ids for ids, _ in test.asked] == [["w"]]
    await test.room.close()
