"""aip_link: batches bounded in bytes, fragments of larger messages, a paged presence."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from aip_grpc import link_pb2
from aip_link import codec
from aip_link import messages as m
from aip_link.batching import BatchQueue
from aip_link.fragments import FragmentError, Reassembly, split
from aip_link.sizes import OVERHEAD, presence_pages, size_hint
from aip_wire.vocab import ClientType, RequesterKind
from session_service.link_servicer import GatewayLinkServicer, GatewayPeer, LinkHub
from session_service.presence import ClientRecord, Presence


def presence(client_id: str, info_bytes: int = 0) -> m.ClientPresence:
    return m.ClientPresence(client_id, ClientType.DEVICE, "linux", {"blob": "x" * info_bytes},
                            "gw1")


def results(size: int) -> m.CommandResults:
    return m.CommandResults("s-1", "dev1", "r-1", b"x" * size)


# ---------------------------------------------------------------- size_hint


def test_size_hint_counts_payloads_and_a_constant() -> None:
    assert size_hint(results(1000)) == 1000 + OVERHEAD
    assert size_hint(m.DeviceFrame("d", "s", b"y" * 50)) == 50 + OVERHEAD
    assert size_hint(m.TaskSubmit(1, "s", "t", "z" * 70, "r", RequesterKind.HTTP, "d", "g")
                     ) == 70 + OVERHEAD
    assert size_hint(m.Ping(1)) == OVERHEAD
    assert size_hint(m.Pong(1, 0)) == OVERHEAD


@pytest.mark.parametrize("message", [
    results(3000),
    m.TaskEnded("s", "c", RequesterKind.CONSTELLATION, "d", True, True, b"e" * 3000, 0),
    m.ClientOnline(presence("dev1", 3000)),
    m.Hello("gw1", (presence("a", 1000), presence("b", 2000))),
    m.DeviceInfoUpdate("dev1", {"blob": "i" * 3000}),
], ids=lambda x: type(x).__name__)
def test_size_hint_is_close_to_the_encoded_size(message: Any) -> None:
    if isinstance(message, m.TaskEnded):
        encoded = codec.encode_session_batch([message]).ByteSize()
    else:
        encoded = codec.encode_gateway_batch([message]).ByteSize()
    # Never far below what the channel sees, never more than the constants above it.
    assert encoded <= size_hint(message) <= encoded + 4 * OVERHEAD


def test_device_info_is_encoded_once_for_measuring_and_sending() -> None:
    client = presence("dev1", 100)
    first = client.device_info_json()
    assert client.device_info_json() is first
    size_hint(m.ClientOnline(client))
    batch = codec.encode_gateway_batch([m.ClientOnline(client)])
    assert batch.messages[0].client_online.client.device_info_json == first
    assert client == presence("dev1", 100)  # the cache is no part of the value


# ---------------------------------------------------------------- bounded batches


def bounded(first: list[int], limit: int = 10) -> BatchQueue[int]:
    return BatchQueue(first, measure=lambda size: size, limit=limit)


async def drain(queue: BatchQueue[int]) -> list[list[int]]:
    batches = []
    while len(queue):
        batch = await queue.next_batch()
        assert batch is not None
        batches.append(batch)
    return batches


async def test_batches_hold_at_most_the_bound() -> None:
    assert await drain(bounded([3, 3, 3, 3, 3])) == [[3, 3, 3], [3, 3]]


async def test_a_batch_may_fill_the_bound_exactly() -> None:
    assert await drain(bounded([4, 6, 10, 1])) == [[4, 6], [10], [1]]


async def test_a_message_larger_than_the_bound_goes_alone() -> None:
    assert await drain(bounded([1, 11, 2, 30])) == [[1], [11], [2], [30]]


async def test_messages_keep_their_order_across_batches() -> None:
    sizes = [1, 9, 2, 8, 5, 5, 5, 12, 0, 0]
    batches = await drain(bounded(sizes))
    assert [size for batch in batches for size in batch] == sizes
    assert all(len(batch) == 1 or sum(batch) <= 10 for batch in batches)


async def test_the_rest_of_a_cut_queue_needs_no_wakeup() -> None:
    queue = bounded([8, 8])
    assert await queue.next_batch() == [8]
    queue.put(1)
    assert await queue.next_batch() == [8, 1]


# ---------------------------------------------------------------- split and reassembly


@pytest.mark.parametrize("size", [0, 1, 9, 10, 11, 20, 21, 95])
def test_split_pieces_are_at_most_the_bound_and_join_back(size: int) -> None:
    data = bytes(range(256))[:size] if size <= 256 else b"q" * size
    pieces = split(data, 10)
    assert b"".join(pieces) == data
    assert all(len(piece) <= 10 for piece in pieces)
    assert len(pieces) == max(1, -(-size // 10))


def test_reassembly_gives_the_message_with_its_last_piece() -> None:
    joiner = Reassembly(limit=100)
    assert joiner.add(b"abc", last=False) is None
    assert joiner.incomplete and joiner.pending == 3
    assert joiner.add(b"def", last=False) is None
    assert joiner.add(b"g", last=True) == b"abcdefg"
    assert not joiner.incomplete and joiner.pending == 0
    assert joiner.add(b"", last=True) == b""  # an empty message is one empty last piece
    assert joiner.add(b"x" * 100, last=True) == b"x" * 100  # exactly at the limit


def test_reassembly_refuses_more_than_its_limit() -> None:
    joiner = Reassembly(limit=10)
    joiner.add(b"x" * 6, last=False)
    with pytest.raises(FragmentError, match="exceeds 10 bytes"):
        joiner.add(b"x" * 5, last=True)
    assert not joiner.incomplete


def test_reassembly_refuses_a_message_in_the_middle_of_another() -> None:
    joiner = Reassembly(limit=10)
    joiner.expect_whole("ping")  # nothing pending: fine
    joiner.add(b"x", last=False)
    with pytest.raises(FragmentError, match="ping arrived in the middle"):
        joiner.expect_whole("ping")


# ---------------------------------------------------------------- fragments through the codec


def decode_all(stream: list[link_pb2.GatewayBatch], joiner: Reassembly) -> list[Any]:
    wire = [link_pb2.GatewayBatch.FromString(item.SerializeToString()) for item in stream]
    return [message for item in wire for message in codec.decode_gateway_batch(item, joiner)]


def test_a_large_message_travels_in_fragments_between_small_ones() -> None:
    big = results(10_000)
    stream = [
        *codec.encode_gateway_stream([m.Ping(1), m.Ping(2)], limit=1000),
        *codec.encode_gateway_stream([big], limit=1000),
        *codec.encode_gateway_stream([m.Ping(3)], limit=1000),
    ]
    fragments = stream[1:-1]
    assert len(fragments) == 11
    for item in fragments:
        (message,) = item.messages
        assert message.WhichOneof("body") == "fragment"
        assert len(message.fragment.piece) <= 1000
    assert [item.messages[0].fragment.last for item in fragments] == [False] * 10 + [True]
    joiner = Reassembly(limit=1 << 20)
    assert decode_all(stream, joiner) == [m.Ping(1), m.Ping(2), big, m.Ping(3)]
    assert not joiner.incomplete


def test_a_message_exactly_at_the_bound_is_one_last_fragment() -> None:
    message = m.DeviceFrame("dev1", "s-1", b"f" * 500)
    exact = len(codec.encode_session_batch([message]).messages[0].SerializeToString())
    stream = codec.encode_session_stream([message], limit=exact)
    assert len(stream) == 1
    (item,) = stream[0].messages
    assert item.fragment.last and len(item.fragment.piece) == exact
    assert codec.decode_session_batch(stream[0], Reassembly(limit=exact)) == [message]


def test_a_small_batch_is_one_stream_message_as_before() -> None:
    batch: list[m.GatewayMessage] = [m.Ping(1), results(10), m.CancelSession("s-1")]
    assert codec.encode_gateway_stream(batch) == [codec.encode_gateway_batch(batch)]


def test_a_truncated_fragment_stream_is_a_protocol_error() -> None:
    pieces = codec.encode_gateway_stream([results(5000)], limit=1000)
    joiner = Reassembly(limit=1 << 20)
    with pytest.raises(FragmentError, match="ping arrived in the middle"):
        decode_all([*pieces[:2], *codec.encode_gateway_stream([m.Ping(1)])], joiner)


def test_an_oversized_fragment_stream_is_a_protocol_error() -> None:
    pieces = codec.encode_gateway_stream([results(5000)], limit=1000)
    with pytest.raises(FragmentError, match="exceeds 4096 bytes"):
        decode_all(pieces, Reassembly(limit=4096))


def test_fragments_that_make_no_message_are_a_protocol_error() -> None:
    garbage = link_pb2.GatewayBatch(messages=[link_pb2.GatewayMessage(
        fragment=link_pb2.Fragment(piece=b"\xff\xff\xff", last=True))])
    with pytest.raises(FragmentError, match="unreadable"):
        codec.decode_gateway_batch(garbage, Reassembly(limit=100))
    with pytest.raises(FragmentError, match="takes none"):
        codec.decode_gateway_batch(garbage)


def test_a_message_no_receiver_would_take_is_dropped_by_the_sender(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(codec, "MAX_MESSAGE_BYTES", 4000)
    with caplog.at_level(logging.ERROR):
        assert codec.encode_gateway_stream([results(5000)], limit=1000) == []
    assert "command_results of 50" in caplog.text and "dropped" in caplog.text


# ---------------------------------------------------------------- paged presence


def test_a_small_snapshot_is_one_hello() -> None:
    hello = m.Hello("gw1", (presence("a"), presence("b")))
    assert presence_pages(hello, 4096) == [m.Hello("gw1", hello.clients, more=False)]
    assert presence_pages(m.Hello("gw1"), 4096) == [m.Hello("gw1", (), more=False)]


def test_a_large_snapshot_is_paged_within_the_bound() -> None:
    clients = tuple(presence(f"dev{n}", 900) for n in range(10))
    clients += (presence("huge", 10_000), *(presence(f"late{n}", 10) for n in range(3)))
    pages = presence_pages(m.Hello("gw1", clients), 3000)
    first, *rest = pages
    assert isinstance(first, m.Hello) and first.more
    assert all(isinstance(page, m.PresencePage) for page in rest)
    assert [page.last for page in rest] == [False] * (len(rest) - 1) + [True]
    carried = [client for page in pages for client in page.clients]  # type: ignore[union-attr]
    assert carried == list(clients)
    for page in pages:
        assert size_hint(page) <= 3000 or len(page.clients) == 1  # type: ignore[union-attr]


class Manager:
    """What the servicer's presence handling needs of a session manager."""

    active = 0

    def __init__(self) -> None:
        self.offline: list[str] = []

    def client_offline(self, client_id: str, client_type: ClientType) -> None:
        self.offline.append(client_id)


async def test_a_paged_snapshot_replaces_the_presence_only_once_whole() -> None:
    known = Presence()
    for name in ("dev1", "dev2", "dev3"):
        known.online(ClientRecord.of(presence(name)))
    manager = Manager()
    servicer = GatewayLinkServicer("r1", LinkHub(), known, manager,  # type: ignore[arg-type]
                                   gateway_grace=1.0)
    peer = GatewayPeer()
    inbound = servicer._inbound(peer)
    # dev1 and dev3 are still there, in later pages; dev2 is gone.
    pages = presence_pages(m.Hello("gw1", (presence("dev4", 500), presence("dev1", 500),
                                           presence("dev3", 500))), 700)
    assert len(pages) == 3
    inbound.dispatch(pages[:1])
    inbound.dispatch(pages[1:2])
    assert manager.offline == [] and len(peer.queue) == 0
    assert {r.client_id for r in known.devices()} == {"dev1", "dev2", "dev3"}
    inbound.dispatch(pages[2:])
    assert manager.offline == ["dev2"]
    assert {r.client_id for r in known.devices()} == {"dev1", "dev3", "dev4"}
    assert await peer.queue.next_batch() == [m.Welcome("r1", 0)]
