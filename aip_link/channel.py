"""gRPC options of the link (and of the public API, which shares the replica's port).

Two sizes, set deliberately:

* :data:`LINK_BATCH_BYTES` bounds what one stream message of the link carries. Each end
  drains its queue into batches of at most that many bytes (by
  :func:`aip_link.sizes.size_hint`), and a single message larger than that travels as
  fragments of at most that many bytes (:mod:`aip_link.fragments`). A stream message of
  the link is therefore never much larger than this, whatever it carries.
* :data:`MAX_MESSAGE_BYTES` is the gRPC channel's limit, both ways, on both ends, and the
  largest link message a receiver reassembles from fragments. It is far above the link's
  batches, so only a broken peer reaches it on the link; it stays large because the public
  API (``SessionApi``) answers with whole records (a session's command log holds every
  screenshot it returned) and device lists (every device's info) in one message. It also
  leaves room for the largest frame a gateway accepts from a WebSocket (up to 100 MiB)
  plus the link's envelope, so that any frame a device may send crosses the link.

Keepalives find a dead peer within seconds even when the stream is idle; the server
accepts the client's pings as often as the client sends them.
"""

from __future__ import annotations

from typing import Any

#: Most bytes in one batch of the link, and in one fragment of a larger message.
LINK_BATCH_BYTES = 4 * 1024 * 1024

#: Most bytes in one gRPC message either way, and in one reassembled link message.
MAX_MESSAGE_BYTES = 128 * 1024 * 1024

_COMMON: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]

#: For channels to a replica (the gateway's link and API calls, and backends' stubs).
CHANNEL_OPTIONS: list[tuple[str, Any]] = [*_COMMON, ("grpc.enable_retries", 0)]

#: For the replica's server.
SERVER_OPTIONS: list[tuple[str, Any]] = [
    *_COMMON, ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    # gRPC sets SO_REUSEPORT by default: a second replica on a busy port would start and
    # the kernel would spread connections over both. Without it the second one fails.
    ("grpc.so_reuseport", 0),
]
