"""How big link messages are, cheaply, and keeping each stream message within the bound.

:func:`size_hint` is what a :class:`~aip_link.batching.BatchQueue` measures every message
with, so it runs once per message on the hot path and must cost well under a microsecond:
it adds the lengths of the message's payload fields (the frames, the request, the device
info) to a constant that covers its identifiers and protobuf framing, and never encodes
anything but device info (a dict, which the message then keeps encoded for the codec).
It is an estimate: identifiers longer than usual are a few hundred bytes off, and a
``str`` counts characters, so text outside ASCII is up to four times larger as UTF-8.
That is harmless, as batches are bounded far below the channel's limit
(:mod:`aip_link.channel`).

:func:`presence_pages` cuts a gateway's presence snapshot into a :class:`Hello` and
:class:`PresencePage` messages of at most the bound each, so that a gateway with
thousands of devices carrying large device info still links in messages of ordinary size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aip_link import messages as m

#: What a message costs beyond its payload fields: identifiers, enums, protobuf tags.
OVERHEAD = 128


def _presence_size(client: m.ClientPresence) -> int:
    return len(client.device_info_json()) + OVERHEAD


def _clients_size(clients: tuple[m.ClientPresence, ...]) -> int:
    return sum(_presence_size(client) for client in clients) + OVERHEAD


_SIZES: dict[type, Callable[[Any], int]] = {
    m.DeviceFrame: lambda x: len(x.frame_json) + OVERHEAD,
    m.CommandResults: lambda x: len(x.frame_json) + OVERHEAD,
    m.TaskEnded: lambda x: len(x.frame_json) + OVERHEAD,
    m.TaskSubmit: lambda x: len(x.request) + OVERHEAD,
    m.ClientOnline: lambda x: _presence_size(x.client),
    m.DeviceInfoUpdate: lambda x: len(x.device_info_json()) + OVERHEAD,
    m.Hello: lambda x: _clients_size(x.clients),
    m.PresencePage: lambda x: _clients_size(x.clients),
    m.TaskRejected: lambda x: len(x.error) + OVERHEAD,
    m.CancelSession: lambda x: len(x.reason) + OVERHEAD,
}


def size_hint(message: m.GatewayMessage | m.SessionMessage) -> int:
    """About how many bytes ``message`` takes encoded; see the module's notes."""
    size = _SIZES.get(type(message))
    return OVERHEAD if size is None else size(message)


def presence_pages(hello: m.Hello, limit: int) -> list[m.GatewayMessage]:
    """``hello`` as a :class:`Hello` with the first clients, followed (if they do not all
    fit in ``limit`` bytes) by :class:`PresencePage` messages, the last one marked.

    Each message holds at most ``limit`` bytes of clients, or a single client larger than
    that (which then travels in fragments). Clients keep their order.
    """
    pages: list[list[m.ClientPresence]] = [[]]
    size = OVERHEAD
    for client in hello.clients:
        client_size = _presence_size(client)
        if pages[-1] and size + client_size > limit:
            pages.append([])
            size = OVERHEAD
        pages[-1].append(client)
        size += client_size
    first: list[m.GatewayMessage] = [
        m.Hello(hello.gateway_id, tuple(pages[0]), more=len(pages) > 1)
    ]
    return first + [
        m.PresencePage(tuple(page), last=number == len(pages) - 1)
        for number, page in enumerate(pages[1:], start=1)
    ]
