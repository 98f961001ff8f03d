"""gateway_service.registry: the outbox, connections and the client registry."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from aip_wire.vocab import ClientType
from gateway_service.registry import ClientRegistry, Connection, Outbox


class Sink:
    """A fake socket writer: records texts, optionally slow or failing."""

    def __init__(self, *, delay: float = 0.0, fail_on: int | None = None) -> None:
        self.sent: list[str] = []
        self.delay = delay
        self.fail_on = fail_on
        self.calls = 0

    async def __call__(self, text: str) -> None:
        self.calls += 1
        if self.fail_on is not None and self.calls >= self.fail_on:
            raise ConnectionError("socket gone")
        if self.delay:
            await asyncio.sleep(self.delay)
        else:
            await asyncio.sleep(0)
        self.sent.append(text)


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


async def settle(rounds: int = 20) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


async def test_order_is_kept() -> None:
    sink = Sink()
    outbox = Outbox(sink, limit=100, on_overflow=Counter())
    texts = [f"m{i}" for i in range(50)]
    for text in texts:
        assert outbox.put(text) is True
    await outbox.drain(1)
    assert sink.sent == texts
    assert len(outbox) == 0
    assert outbox.closed is False


async def test_put_does_not_block_and_writes_later() -> None:
    sink = Sink()
    outbox = Outbox(sink, limit=10, on_overflow=Counter())
    outbox.put("a")
    assert sink.sent == []  # written by a task, not inline
    await settle()
    assert sink.sent == ["a"]
    outbox.put("b")  # a new flusher starts after the previous one finished
    await outbox.drain(1)
    assert sink.sent == ["a", "b"]


async def test_interleaved_puts_keep_order() -> None:
    sink = Sink(delay=0.001)
    outbox = Outbox(sink, limit=100, on_overflow=Counter())
    for i in range(5):
        outbox.put(f"a{i}")
    await asyncio.sleep(0.002)
    for i in range(5):
        outbox.put(f"b{i}")
    await outbox.drain(2)
    assert sink.sent == [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(5)]


async def test_overflow_closes_and_calls_on_overflow_once() -> None:
    sink = Sink(delay=10)  # never finishes writing within the test
    overflow = Counter()
    outbox = Outbox(sink, limit=3, on_overflow=overflow)
    # The first put starts the flusher, which pops it at once when it runs; before the loop
    # runs, everything stays queued.
    assert [outbox.put(f"m{i}") for i in range(3)] == [True, True, True]
    assert len(outbox) == 3
    assert outbox.put("m3") is False
    assert outbox.closed is True
    assert overflow.count == 1
    assert len(outbox) == 0
    assert outbox.put("m4") is False
    assert outbox.put("m5") is False
    assert overflow.count == 1
    outbox.close()
    await settle()


async def test_closed_outbox_refuses_puts() -> None:
    sink = Sink()
    overflow = Counter()
    outbox = Outbox(sink, limit=5, on_overflow=overflow)
    outbox.put("a")
    outbox.close()
    assert outbox.closed is True
    assert outbox.put("b") is False
    await settle()
    assert sink.sent == []
    assert overflow.count == 0
    outbox.close()  # idempotent


async def test_failing_send_closes_the_outbox_without_raising() -> None:
    sink = Sink(fail_on=2)
    overflow = Counter()
    outbox = Outbox(sink, limit=10, on_overflow=overflow)
    for text in ("a", "b", "c"):
        outbox.put(text)
    await outbox.drain(1)
    await settle()
    assert sink.sent == ["a"]
    assert outbox.closed is True
    assert len(outbox) == 0
    assert outbox.put("d") is False
    assert overflow.count == 0


async def test_failing_send_leaves_no_unretrieved_task_exception() -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        outbox = Outbox(Sink(fail_on=1), limit=10, on_overflow=Counter())
        outbox.put("a")
        await settle()
        assert outbox.closed
    finally:
        loop.set_exception_handler(previous)
    assert errors == []


async def test_drain_with_nothing_pending_returns() -> None:
    outbox = Outbox(Sink(), limit=1, on_overflow=Counter())
    async with asyncio.timeout(1):
        await outbox.drain(1)


async def test_drain_times_out_on_a_stuck_writer() -> None:
    outbox = Outbox(Sink(delay=10), limit=5, on_overflow=Counter())
    outbox.put("a")
    async with asyncio.timeout(1):
        await outbox.drain(0.01)
    outbox.close()


def test_put_needs_a_running_loop() -> None:
    outbox = Outbox(Sink(), limit=5, on_overflow=Counter())
    with pytest.raises(RuntimeError):
        outbox.put("a")


# ------------------------------------------------------------------ Connection/registry


def make_conn(client_id: str, kind: str = "device", sink: Sink | None = None) -> Connection:
    return Connection(
        client_id=client_id, client_type=ClientType(kind), platform="linux", target_id=None,
        device_info={},
        outbox=Outbox(sink or Sink(), limit=10, on_overflow=Counter()),
        close=lambda code, reason: None,
    )


async def test_connection_send_encodes_frames() -> None:
    sink = Sink()
    conn = make_conn("dev1", sink=sink)
    assert conn.send({"type": "heartbeat", "status": "ok"}) is True
    assert conn.send_text("raw") is True
    await conn.outbox.drain(1)
    assert [sink.sent[0], sink.sent[1]] == [orjson.dumps({"type": "heartbeat",
                                                          "status": "ok"}).decode(), "raw"]
    assert conn.is_device
    assert conn.describe() == {"client_id": "dev1", "client_type": "device",
                               "platform": "linux", "target_id": None, "active_sessions": 0}


def test_connection_serials_are_unique() -> None:
    first, second = make_conn("a"), make_conn("b")
    assert first.serial != second.serial
    assert not make_conn("c", kind="constellation").is_device


def test_registry_add_replace_remove() -> None:
    registry = ClientRegistry()
    old = make_conn("dev1")
    con = make_conn("c1", kind="constellation")
    assert registry.add(old) is None
    assert registry.add(con) is None
    assert len(registry) == 2
    assert registry.device("dev1") is old
    assert registry.device("c1") is None
    assert registry.get("c1") is con
    assert registry.is_device_connected("dev1")
    assert not registry.is_device_connected("c1")
    assert not registry.is_device_connected("ghost")
    new = make_conn("dev1")
    assert registry.add(new) is old
    assert registry.remove(old) is False  # taken over: the newer one stays
    assert registry.get("dev1") is new
    assert set(registry) == {new, con}
    assert registry.remove(new) is True
    assert registry.remove(new) is False
    assert registry.get("dev1") is None


async def test_held_outbox_is_written_by_release_in_order() -> None:
    sink = Sink()
    outbox = Outbox(sink, limit=10)
    outbox.hold()
    assert outbox.put("a") and outbox.put("b")
    await asyncio.sleep(0.01)
    assert sink.sent == []  # nothing starts a writer while held
    await outbox.release()
    assert sink.sent == ["a", "b"] and len(outbox) == 0
    # Once released, a put starts a writer task again.
    assert outbox.put("c")
    await asyncio.sleep(0.01)
    assert sink.sent == ["a", "b", "c"]


async def test_release_leaves_a_running_writer_alone() -> None:
    sink = Sink(delay=0.02)
    outbox = Outbox(sink, limit=10)
    outbox.put("first")  # a writer task starts
    outbox.hold()
    outbox.put("second")  # joins the running writer's queue
    await outbox.release()  # must not write concurrently with it
    assert sink.sent == []
    await asyncio.sleep(0.1)
    assert sink.sent == ["first", "second"]


async def test_a_failing_write_during_release_closes_quietly() -> None:
    sink = Sink(fail_on=1)
    outbox = Outbox(sink, limit=10)
    outbox.hold()
    outbox.put("x")
    await outbox.release()
    assert outbox.closed and not outbox.put("y")


# ------------------------------------------------------------------ the bytes limit


async def test_overflow_by_bytes_before_the_frame_count() -> None:
    sink = Sink(delay=10)  # a client that never reads: nothing finishes writing
    overflow = Counter()
    outbox = Outbox(sink, limit=1000, max_bytes=250, on_overflow=overflow)
    assert outbox.put("a" * 100) and outbox.put("b" * 100)
    assert outbox.pending_bytes == 200
    assert outbox.put("c" * 51) is False  # 251 characters would be pending
    assert outbox.closed and overflow.count == 1
    assert outbox.overflow == "250 bytes"
    assert outbox.pending_bytes == 0 and len(outbox) == 0
    outbox.close()
    await settle()


async def test_the_frame_being_written_is_not_counted() -> None:
    sink = Sink(delay=10)
    overflow = Counter()
    outbox = Outbox(sink, limit=1000, max_bytes=250, on_overflow=overflow)
    assert outbox.put("a" * 200)
    await settle()  # the writer took it: it is in the socket's hands now
    assert outbox.pending_bytes == 0
    assert outbox.put("b" * 200) and outbox.pending_bytes == 200
    assert overflow.count == 0
    outbox.close()
    await settle()


async def test_a_frame_larger_than_the_limit_fits_an_empty_outbox() -> None:
    sink = Sink()
    outbox = Outbox(sink, limit=10, max_bytes=100, on_overflow=Counter())
    big = "x" * 1_000
    assert outbox.put(big)
    await outbox.drain(1)
    assert sink.sent == [big] and outbox.pending_bytes == 0
    assert outbox.put(big)  # empty again: fits again
    await outbox.drain(1)
    assert sink.sent == [big, big]


async def test_written_frames_free_their_bytes() -> None:
    sink = Sink()
    outbox = Outbox(sink, limit=1000, max_bytes=1_000, on_overflow=Counter())
    for n in range(100):  # 30,000 characters in all, never more than 1,000 at once
        for _ in range(3):
            assert outbox.put("y" * 100), n
        await outbox.drain(1)
    assert len(sink.sent) == 300 and outbox.pending_bytes == 0 and not outbox.closed


async def test_the_frame_count_overflow_says_so() -> None:
    outbox = Outbox(Sink(delay=10), limit=2, max_bytes=10_000, on_overflow=Counter())
    assert outbox.put("a") and outbox.put("b")
    assert outbox.put("c") is False and outbox.overflow == "2 frames"
    outbox.close()
    await settle()


async def test_a_closed_outbox_lets_go_of_its_owner() -> None:
    """Its callables refer to the connection that owns it: close drops them, so that a
    closed connection is not kept alive by a reference cycle."""
    owner = Counter()
    outbox = Outbox(Sink(), limit=5, on_overflow=owner)
    outbox.close()
    assert outbox.on_overflow is not owner
    assert outbox.put("late") is False


# ------------------------------------------------------------------ writing at once


class Direct:
    """A server's ``write_now``: takes frames at once while ``open``, refuses otherwise."""

    def __init__(self, *, open: bool = True) -> None:
        self.open = open
        self.written: list[str] = []
        self.asked = 0

    def __call__(self, text: str) -> bool:
        self.asked += 1
        if not self.open:
            return False
        self.written.append(text)
        return True


async def test_an_idle_outbox_writes_at_once_without_a_task() -> None:
    sink, direct = Sink(), Direct()
    outbox = Outbox(sink, limit=10)
    outbox.write_now = direct
    tasks = len(asyncio.all_tasks())
    assert outbox.put("a") and outbox.put("b")
    assert direct.written == ["a", "b"]  # before any await
    assert len(asyncio.all_tasks()) == tasks and outbox.idle and len(outbox) == 0
    await settle()
    assert sink.sent == []


async def test_a_refused_write_queues_and_later_frames_stay_behind_it() -> None:
    sink, direct = Sink(delay=0.02), Direct(open=False)
    outbox = Outbox(sink, limit=10)
    outbox.write_now = direct
    assert outbox.put("first")  # refused (the socket's buffer is full): the writer's
    direct.open = True
    assert outbox.put("second")  # queued behind it, not written past it
    assert direct.written == [] and direct.asked == 1
    await outbox.drain(1)
    assert sink.sent == ["first", "second"]
    assert outbox.put("third")  # idle again: at once
    assert direct.written == ["third"]


async def test_a_held_outbox_does_not_write_at_once() -> None:
    sink, direct = Sink(), Direct()
    outbox = Outbox(sink, limit=10)
    outbox.write_now = direct
    outbox.hold()
    assert outbox.put("answer")
    assert direct.asked == 0
    await outbox.release()
    assert sink.sent == ["answer"]


async def test_close_forgets_the_direct_writer() -> None:
    outbox = Outbox(Sink(), limit=5)
    outbox.write_now = Direct()
    outbox.close()
    assert outbox.write_now is None and outbox.put("late") is False
