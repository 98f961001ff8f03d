"""aip_link: the codec, the batch queue and the dispatch table both ends share."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from aip_grpc import link_pb2
from aip_link import codec
from aip_link import messages as m
from aip_link.batching import BatchQueue, pump
from aip_link.dispatch import Inbound
from aip_wire.vocab import ClientType, RejectionCode, RequesterKind

PRESENCE = m.ClientPresence("dev1", ClientType.DEVICE, "linux", {"os": "Linux", "n": 2}, "gw1")

GATEWAY_MESSAGES: list[m.GatewayMessage] = [
    m.Hello("gw1", (PRESENCE, m.ClientPresence("c1", ClientType.CONSTELLATION, "windows",
                                                 {}, "gw1"))),
    m.Hello("gw1"),
    m.Hello("gw1", (PRESENCE,), more=True),
    m.PresencePage((PRESENCE,), last=False),
    m.PresencePage((), last=True),
    m.ClientOnline(PRESENCE),
    m.ClientOffline("c1", ClientType.CONSTELLATION, "gw1"),
    m.TaskSubmit(7, "s-1", "t", '{"steps": []}', "c1", RequesterKind.CONSTELLATION, "dev1",
                 "gw1"),
    m.CommandResults("s-1", "dev1", "r-1", b'{"type":"command_results","action_results":[]}'),
    m.CancelSession("s-1", "submit_timeout", "c1"),
    m.DeviceInfoUpdate("dev1", {"cpu": 4}),
    m.Ping(3),
]
SESSION_MESSAGES: list[m.SessionMessage] = [
    m.Welcome("replica-a", 2),
    m.TaskAccepted(7, "s-1", 3),
    *(m.TaskRejected(7, "s-1", "no", code) for code in
      (RejectionCode.EXISTS, RejectionCode.NOT_FOUND, RejectionCode.INVALID,
       RejectionCode.LIMIT, RejectionCode.DRAINING)),
    *(m.SessionOpened("s-1", "t", "dev1", "r", kind) for kind in RequesterKind),
    m.DeviceFrame("dev1", "s-1", b'{"type":"command"}'),
    m.TaskEnded("s-1", "c1", RequesterKind.CONSTELLATION, "dev1", True, False,
                b'{"type":"task_end"}', 0),
    m.Pong(3, 1),
]


@pytest.mark.parametrize("message", GATEWAY_MESSAGES, ids=lambda x: type(x).__name__)
def test_gateway_messages_survive_the_codec(message: m.GatewayMessage) -> None:
    batch = codec.encode_gateway_batch([message])
    wire = link_pb2.GatewayBatch.FromString(batch.SerializeToString())
    assert codec.decode_gateway_batch(wire) == [message]


@pytest.mark.parametrize("message", SESSION_MESSAGES, ids=lambda x: type(x).__name__)
def test_session_messages_survive_the_codec(message: m.SessionMessage) -> None:
    batch = codec.encode_session_batch([message])
    wire = link_pb2.SessionBatch.FromString(batch.SerializeToString())
    assert codec.decode_session_batch(wire) == [message]


def test_a_batch_keeps_its_order() -> None:
    decoded = codec.decode_gateway_batch(codec.encode_gateway_batch(GATEWAY_MESSAGES))
    assert decoded == GATEWAY_MESSAGES


def test_every_message_kind_has_an_encoder_and_a_decoder() -> None:
    gateway_kinds = {f.name for f in link_pb2.GatewayMessage.DESCRIPTOR.oneofs_by_name[
        "body"].fields}
    session_kinds = {f.name for f in link_pb2.SessionMessage.DESCRIPTOR.oneofs_by_name[
        "body"].fields}
    encoded_gateway = {codec.encode_gateway_batch([x]).messages[0].WhichOneof("body")
                       for x in GATEWAY_MESSAGES}
    encoded_session = {codec.encode_session_batch([x]).messages[0].WhichOneof("body")
                       for x in SESSION_MESSAGES}
    # Fragments carry the others, a message too large for one batch (tests/unit/
    # test_link_bounds.py).
    for stream in (codec.encode_gateway_stream(GATEWAY_MESSAGES[:1], limit=16),
                   codec.encode_session_stream(SESSION_MESSAGES[:1], limit=16)):
        assert stream[0].messages[0].WhichOneof("body") == "fragment"
    encoded_gateway.add("fragment")
    encoded_session.add("fragment")
    assert encoded_gateway == gateway_kinds
    assert encoded_session == session_kinds


def test_a_message_for_the_wrong_direction_is_refused() -> None:
    with pytest.raises(TypeError):
        codec.encode_gateway_batch([m.Pong(1, 0)])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        codec.encode_session_batch([m.Ping(1)])  # type: ignore[list-item]


def test_unreadable_device_info_decodes_to_an_empty_object() -> None:
    for raw in (b"", b"not json", b"[1,2]", b'"text"'):
        batch = link_pb2.GatewayBatch(messages=[link_pb2.GatewayMessage(
            device_info_update=link_pb2.DeviceInfoUpdate(device_id="d", device_info_json=raw)
        )])
        assert codec.decode_gateway_batch(batch) == [m.DeviceInfoUpdate("d", {})]


def test_unset_enums_decode_to_safe_defaults() -> None:
    batch = link_pb2.SessionBatch(messages=[
        link_pb2.SessionMessage(task_rejected=link_pb2.TaskRejected(submit_id=1, error="x")),
        link_pb2.SessionMessage(session_opened=link_pb2.SessionOpened(session_id="s")),
    ])
    rejected, opened = codec.decode_session_batch(batch)
    # Not "draining": an unknown reason must not send the task to another replica.
    assert isinstance(rejected, m.TaskRejected) and rejected.code == RejectionCode.INVALID
    assert isinstance(opened, m.SessionOpened)
    assert opened.requester_kind == RequesterKind.BACKEND


def test_an_empty_message_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    batch = link_pb2.GatewayBatch(messages=[link_pb2.GatewayMessage(),
                                            link_pb2.GatewayMessage(ping=link_pb2.Ping(nonce=1))])
    with caplog.at_level(logging.WARNING):
        assert codec.decode_gateway_batch(batch) == [m.Ping(1)]
    assert "unknown kind" in caplog.text


# ---------------------------------------------------------------- batch queue


async def test_queue_gives_everything_queued_in_one_loop_turn_as_one_batch() -> None:
    queue: BatchQueue[int] = BatchQueue()

    async def producer() -> None:
        for value in range(5):
            queue.put(value)

    waiter = asyncio.ensure_future(queue.next_batch())
    await asyncio.sleep(0)
    await producer()
    assert await waiter == [0, 1, 2, 3, 4]
    queue.put(9)
    assert await queue.next_batch() == [9]


async def test_queue_starts_with_its_first_messages() -> None:
    queue: BatchQueue[str] = BatchQueue(["hello"])
    queue.put("more")
    assert await queue.next_batch() == ["hello", "more"]


async def test_closed_queue_refuses_and_wakes_its_writer() -> None:
    queue: BatchQueue[int] = BatchQueue()
    waiter = asyncio.ensure_future(queue.next_batch())
    await asyncio.sleep(0)
    queue.put(1)
    queue.close()
    async with asyncio.timeout(1):
        assert await waiter is None
    assert not queue.put(2)
    assert await queue.next_batch() is None


async def test_pump_writes_encoded_batches_until_closed() -> None:
    queue: BatchQueue[int] = BatchQueue([1, 2])
    written: list[Any] = []

    async def write(item: Any) -> None:
        written.append(item)
        if len(written) == 1:
            queue.put(3)
        else:
            queue.close()

    async with asyncio.timeout(1):
        await pump(queue, lambda batch: [sum(batch)], write)
    assert written == [3, 3]


async def test_pump_writes_every_stream_message_a_batch_encodes_to() -> None:
    queue: BatchQueue[int] = BatchQueue([5])
    written: list[Any] = []

    async def write(item: Any) -> None:
        written.append(item)
        if len(written) == 5:
            queue.close()

    async with asyncio.timeout(1):
        await pump(queue, lambda batch: range(batch[0]), write)
    assert written == [0, 1, 2, 3, 4]


async def test_pump_raises_when_a_write_fails() -> None:
    queue: BatchQueue[int] = BatchQueue([1])

    async def write(item: Any) -> None:
        raise OSError("stream broken")

    with pytest.raises(OSError):
        await pump(queue, list, write)


# ---------------------------------------------------------------- dispatch


def test_inbound_calls_each_handler_in_order_and_survives_a_failing_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[Any] = []

    def boom(message: m.Ping) -> None:
        raise RuntimeError("handler bug")

    inbound = Inbound({m.Pong: seen.append, m.Ping: boom}, name="test")
    with caplog.at_level(logging.WARNING):
        inbound.dispatch([m.Pong(1, 0), m.Ping(2), m.Welcome("r", 0), m.Pong(3, 0)])
    assert seen == [m.Pong(1, 0), m.Pong(3, 0)]
    assert "handling Ping failed" in caplog.text
    assert "no handler for Welcome" in caplog.text
