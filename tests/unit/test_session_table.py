"""gateway_service.sessions: submits, routes and task_end delivery, with fake replicas."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection
from typing import Any

import pytest

from aip_link import messages as m
from aip_wire.vocab import CancelReason, ClientType, RejectionCode, RequesterKind
from gateway_service.registry import ClientRegistry, Connection, Outbox
from gateway_service.replicas.pool import Replica
from gateway_service.rules import Refusal, TaskPlan
from gateway_service.sessions import HTTP_REQUESTER, Requester, SessionTable


class FakeReplicas:
    """The table's port: placement among given replicas, and a record of what is sent."""

    def __init__(self, *replicas: Replica) -> None:
        self.replicas = list(replicas)
        self.sent: list[tuple[Replica, m.GatewayMessage]] = []
        self.up = True
        self.submitted = asyncio.Event()

    def pick(self, skip: Collection[Replica] = ()) -> Replica | None:
        usable = [r for r in self.replicas if not r.draining and r not in skip]
        return min(usable, key=lambda r: r.active_sessions) if usable else None

    def healthy(self) -> list[Replica]:
        return list(self.replicas)

    def send(self, replica: Replica, message: m.GatewayMessage) -> bool:
        if not self.up:
            return False
        self.sent.append((replica, message))
        if isinstance(message, m.TaskSubmit):
            self.submitted.set()
        return True

    async def submits(self, count: int) -> list[m.TaskSubmit]:
        """Once ``count`` submits were sent: all of them."""
        while len(self.of_type(m.TaskSubmit)) < count:
            self.submitted.clear()
            await self.submitted.wait()
        return self.of_type(m.TaskSubmit)

    def of_type(self, kind: type) -> list[Any]:
        return [message for _, message in self.sent if isinstance(message, kind)]


class FakeTransport:
    """Never used to send: the table must send through its port."""

    def send(self, message: m.GatewayMessage) -> bool:
        raise AssertionError("sent past the port")

    announce = send


class Sink:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    async def __call__(self, text: str) -> None:
        self.frames.append(json.loads(text))


def replica(address: str = "10.0.0.1:50051") -> Replica:
    return Replica(address, transport=FakeTransport())  # type: ignore[arg-type]


def connect(registry: ClientRegistry, client_id: str, client_type: ClientType) -> tuple[
        Connection, Sink]:
    sink = Sink()
    conn = Connection(client_id=client_id, client_type=client_type, platform="linux",
                      target_id=None, device_info={}, outbox=Outbox(sink, limit=100),
                      close=lambda code, reason: None)
    registry.add(conn)
    return conn, sink


async def settle(*conns: Connection) -> None:
    for _ in range(3):
        await asyncio.sleep(0)
    for conn in conns:
        await conn.outbox.drain(1)


def plan(session_id: str = "s1", device_id: str = "dev1") -> TaskPlan:
    return TaskPlan(session_id=session_id, task_name="t", request="do", device_id=device_id)


def table(*replicas: Replica, timeout: float = 5.0) -> tuple[SessionTable, FakeReplicas,
                                                               ClientRegistry]:
    registry = ClientRegistry()
    port = FakeReplicas(*replicas)
    return SessionTable("gw", timeout, registry, port), port, registry


async def answer_when_submitted(port: FakeReplicas, answer: Any) -> None:
    answer((await port.submits(1))[-1])


async def test_accepted_submit_routes_the_session_and_acks_the_requester() -> None:
    r = replica()
    sessions, port, registry = table(r)
    device, device_sink = connect(registry, "dev1", ClientType.DEVICE)
    requester, sink = connect(registry, "c1", ClientType.CONSTELLATION)
    accept = asyncio.ensure_future(answer_when_submitted(
        port, lambda s: sessions.task_accepted(r, m.TaskAccepted(s.submit_id, s.session_id, 7))))
    assert await sessions.submit(plan(), Requester.of(requester)) == "s1"
    await accept
    route = sessions.routes["s1"]
    assert (route.replica, route.device, route.requester.conn) == (r, device, requester)
    assert r.active_sessions == 7
    assert "s1" in requester.sessions and "s1" in device.sessions
    (submit,) = port.of_type(m.TaskSubmit)
    assert (submit.requester_kind, submit.device_id, submit.gateway_id) == (
        RequesterKind.CONSTELLATION, "dev1", "gw")
    await settle(requester, device)
    assert [f["type"] for f in sink.frames] == ["heartbeat"]
    assert sink.frames[0]["session_id"] == "s1"
    assert device_sink.frames == []
    assert sessions.pending == {}


@pytest.mark.parametrize("code", [RejectionCode.LIMIT, RejectionCode.NOT_FOUND,
                                  RejectionCode.INVALID, RejectionCode.EXISTS])
async def test_a_replica_rejection_is_refused_with_its_own_code(code: RejectionCode) -> None:
    r = replica()
    sessions, port, _ = table(r)
    reject = asyncio.ensure_future(answer_when_submitted(
        port, lambda s: sessions.task_rejected(r, m.TaskRejected(s.submit_id, s.session_id,
                                                                 "no", code))))
    with pytest.raises(Refusal) as info:
        await sessions.submit(plan(), HTTP_REQUESTER)
    await reject
    assert (info.value.code, info.value.reason) == (code, "no")
    assert sessions.routes == {} and sessions.pending == {}


async def test_a_draining_replica_is_skipped_for_the_next_one() -> None:
    first, second = replica("10.0.0.1:1"), replica("10.0.0.2:1")
    second.active_sessions = 1
    sessions, port, _ = table(first, second)

    async def answer() -> None:
        await answer_when_submitted(port, lambda s: sessions.task_rejected(
            first, m.TaskRejected(s.submit_id, s.session_id, "bye", RejectionCode.DRAINING)))
        s = (await port.submits(2))[-1]
        sessions.task_accepted(second, m.TaskAccepted(s.submit_id, s.session_id, 2))

    answering = asyncio.ensure_future(answer())
    assert await sessions.submit(plan(), HTTP_REQUESTER) == "s1"
    await answering
    assert first.draining
    assert [r for r, msg in port.sent if isinstance(msg, m.TaskSubmit)] == [first, second]
    assert sessions.routes["s1"].replica is second


async def test_a_replica_that_cannot_record_is_skipped_for_this_task_only() -> None:
    first, second = replica("10.0.0.1:1"), replica("10.0.0.2:1")
    second.active_sessions = 1
    sessions, port, _ = table(first, second)

    async def answer() -> None:
        await answer_when_submitted(port, lambda s: sessions.task_rejected(
            first, m.TaskRejected(s.submit_id, s.session_id, "store", RejectionCode.UNAVAILABLE)))
        s = (await port.submits(2))[-1]
        sessions.task_accepted(second, m.TaskAccepted(s.submit_id, s.session_id, 2))

    answering = asyncio.ensure_future(answer())
    assert await sessions.submit(plan(), HTTP_REQUESTER) == "s1"
    await answering
    assert not first.draining  # the next task may find its store working again
    assert [r for r, msg in port.sent if isinstance(msg, m.TaskSubmit)] == [first, second]
    assert sessions.routes["s1"].replica is second


async def test_every_replica_unable_to_record_is_refused_as_unavailable() -> None:
    only = replica()
    sessions, port, _ = table(only)
    reject = asyncio.ensure_future(answer_when_submitted(port, lambda s: sessions.task_rejected(
        only, m.TaskRejected(s.submit_id, s.session_id, "store", RejectionCode.UNAVAILABLE))))
    with pytest.raises(Refusal) as info:
        await sessions.submit(plan(), HTTP_REQUESTER)
    await reject
    assert info.value.code == RejectionCode.UNAVAILABLE
    assert info.value.reason == "store"  # the replica's own words
    assert len(port.of_type(m.TaskSubmit)) == 1
    assert sessions.pending == {}


async def test_no_replica_and_every_replica_draining_are_refused() -> None:
    sessions, _, _ = table()
    with pytest.raises(Refusal) as info:
        await sessions.submit(plan(), HTTP_REQUESTER)
    assert info.value.code == RejectionCode.UNAVAILABLE
    assert info.value.reason == "No session service replica is reachable; try again later"
    r = replica()
    r.draining = True
    sessions, _, _ = table(r)
    with pytest.raises(Refusal) as info:
        await sessions.submit(plan(), HTTP_REQUESTER)
    assert info.value.code == RejectionCode.DRAINING


async def test_a_link_that_is_down_refuses_as_unavailable() -> None:
    sessions, port, _ = table(replica())
    port.up = False
    with pytest.raises(Refusal) as info:
        await sessions.submit(plan(), HTTP_REQUESTER)
    assert info.value.code == RejectionCode.UNAVAILABLE
    assert sessions.pending == {}


async def test_timeout_cancels_the_session_and_a_late_accept_cancels_it_again() -> None:
    r = replica()
    sessions, port, registry = table(r, timeout=0.01)
    requester, _ = connect(registry, "c1", ClientType.CONSTELLATION)
    with pytest.raises(Refusal) as info:
        await sessions.submit(plan(), Requester.of(requester))
    assert info.value.code == RejectionCode.TIMEOUT
    assert info.value.reason == "The session service did not accept the task within 0.01s"
    (submit,) = port.of_type(m.TaskSubmit)
    # Both cancels are scoped to the submit: the replica cancels only the session it
    # created, not another with the same id.
    assert port.of_type(m.CancelSession) == [
        m.CancelSession("s1", CancelReason.SUBMIT_TIMEOUT, "c1", submit.submit_id)]
    sessions.task_accepted(r, m.TaskAccepted(submit.submit_id, "s1", 1))
    assert port.of_type(m.CancelSession)[-1] == m.CancelSession(
        "s1", CancelReason.SUBMIT_TIMEOUT, submit_id=submit.submit_id)
    assert sessions.routes == {}


async def test_a_running_session_id_is_refused_as_existing() -> None:
    r = replica()
    sessions, _, _ = table(r)
    sessions.session_opened(r, m.SessionOpened("s1", "t", "dev1", "c9", RequesterKind.BACKEND))
    with pytest.raises(Refusal) as info:
        await sessions.submit(plan(), HTTP_REQUESTER)
    assert (info.value.code, info.value.reason) == (
        RejectionCode.EXISTS, "Session 's1' belongs to another client")
    with pytest.raises(Refusal) as info:
        await sessions.submit(plan(), Requester("c9", RequesterKind.BACKEND))
    assert (info.value.code, info.value.reason) == (
        RejectionCode.EXISTS, "Session 's1' is already running")


def ended(session_id: str, requester: Requester, *, notify_requester: bool = True,
          notify_device: bool = True) -> m.TaskEnded:
    return m.TaskEnded(session_id, requester.client_id, requester.kind, "dev1",
                       notify_requester, notify_device, b'{"type":"task_end"}', 0)


async def test_task_end_reaches_requester_and_device_but_not_a_successor() -> None:
    r = replica()
    sessions, port, registry = table(r)
    device, device_sink = connect(registry, "dev1", ClientType.DEVICE)
    requester, sink = connect(registry, "c1", ClientType.CONSTELLATION)
    accept = asyncio.ensure_future(answer_when_submitted(
        port, lambda s: sessions.task_accepted(r, m.TaskAccepted(s.submit_id, s.session_id, 1))))
    await sessions.submit(plan(), Requester.of(requester))
    await accept
    # The constellation reconnects: its successor must not hear the old session's end.
    successor, successor_sink = connect(registry, "c1", ClientType.CONSTELLATION)
    sessions.task_ended(r, ended("s1", Requester.of(requester)))
    await settle(requester, device, successor)
    assert [f["type"] for f in sink.frames] == ["heartbeat"]
    assert successor_sink.frames == []
    assert device_sink.frames == [{"type": "task_end"}]
    assert sessions.routes == {} and "s1" not in device.sessions


async def test_task_end_without_route_goes_to_the_current_connections() -> None:
    r = replica()
    sessions, _, registry = table(r)
    device, device_sink = connect(registry, "dev1", ClientType.DEVICE)
    sessions.task_ended(r, ended("s9", Requester("dev1", RequesterKind.DEVICE)))
    await settle(device)
    assert device_sink.frames == [{"type": "task_end"}]  # once, as the requester


async def test_replica_lost_ends_routes_and_remembers_them() -> None:
    r = replica("10.0.0.1:50051")
    sessions, port, registry = table(r)
    device, device_sink = connect(registry, "dev1", ClientType.DEVICE)
    requester, sink = connect(registry, "c1", ClientType.CONSTELLATION)
    accept = asyncio.ensure_future(answer_when_submitted(
        port, lambda s: sessions.task_accepted(r, m.TaskAccepted(s.submit_id, s.session_id, 1))))
    await sessions.submit(plan(), Requester.of(requester))
    await accept
    sessions.replica_lost(r, "UNAVAILABLE: gone")
    await settle(requester, device)
    error = ("Session service replica 10.0.0.1:50051 became unreachable "
             "(UNAVAILABLE: gone); the session was lost")
    for frames_seen in (sink.frames[1:], device_sink.frames):
        (end,) = frames_seen
        assert (end["type"], end["status"], end["error"], end["session_id"]) == (
            "task_end", "failed", error, "s1")
    assert sessions.routes == {} and r.lost_sessions == {"s1"}
    # The replica was only cut off: its own end of the session is not delivered again.
    sessions.task_ended(r, ended("s1", Requester.of(requester)))
    await settle(requester, device)
    assert len(device_sink.frames) == 1 and r.lost_sessions == set()


async def test_replica_lost_fails_pending_submits() -> None:
    r = replica("10.0.0.1:50051")
    sessions, port, _ = table(r)

    async def lose() -> None:
        await port.submits(1)
        sessions.replica_lost(r, "boom")

    losing = asyncio.ensure_future(lose())
    with pytest.raises(Refusal) as info:
        await sessions.submit(plan(), HTTP_REQUESTER)
    await losing
    assert (info.value.code, info.value.reason) == (
        RejectionCode.UNAVAILABLE, "Session service replica 10.0.0.1:50051 was lost: boom")


async def test_command_results_go_to_the_owning_replica_only_from_its_device() -> None:
    from aip_wire.frames import parse_client_frame

    r = replica()
    sessions, port, registry = table(r)
    device, _ = connect(registry, "dev1", ClientType.DEVICE)
    other, _ = connect(registry, "dev2", ClientType.DEVICE)
    sessions.session_opened(r, m.SessionOpened("s1", "t", "dev1", "c1",
                                               RequesterKind.CONSTELLATION))
    raw = '{"type":"command_results","session_id":"s1","prev_response_id":"r1"}'
    sessions.forward_command_results(other, parse_client_frame(raw), raw)
    assert port.of_type(m.CommandResults) == []
    sessions.forward_command_results(device, parse_client_frame(raw), raw)
    assert port.of_type(m.CommandResults) == [m.CommandResults("s1", "dev1", "r1", raw.encode())]


async def test_a_bug_in_the_task_path_is_logged_and_answered_generically(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only a Refusal becomes the client's error text; anything else is a logged bug."""
    from gateway_service.gateway import Gateway
    from gateway_service.handlers import FrameRouter
    from gateway_service.rules import Registration
    from gateway_service.settings import GatewaySettings

    gateway = Gateway(GatewaySettings(session_service="127.0.0.1:1", gateway_id="gw-bug"))
    sink = Sink()
    conn = gateway.register(Registration("dev1", ClientType.DEVICE, "linux", None, {}), sink,
                            lambda code, reason: None)

    async def broken(plan: TaskPlan, requester: Requester) -> str:
        raise ValueError("a bug, not a refusal")

    gateway.sessions.submit = broken  # type: ignore[method-assign]
    FrameRouter(gateway).handle(conn, '{"type":"task","request":"x","session_id":"s1"}')
    await asyncio.gather(*list(conn.tasks))
    await settle(conn)
    (frame,) = sink.frames
    assert frame["type"] == "error" and frame["session_id"] == "s1"
    assert "a bug" not in frame["error"]
    assert any(record.exc_info and "task from dev1 failed" in record.getMessage()
               for record in caplog.records)
